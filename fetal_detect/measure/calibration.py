"""The one pixel-size precedence: a size given by the user wins, then the DICOM calibration, then the
scanner's on-screen depth ruler (:mod:`fetal_detect.measure.ruler`), else none (lengths in px).

Every entry point (``measure``, ``analyze``, ``batch``, the API and the page) calls
:func:`resolve_pixel_size` (or :func:`calibrate_image`, for a loaded file) and reports ``pixel_size_source``
as one of ``user``, ``dicom``, ``ruler`` or null, with ``pixel_size_detail`` saying which flag, tag or
ruler fit it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOURCES = ("user", "dicom", "ruler")
RULER_NOTE = "calibrated from the on-screen ruler"


@dataclass
class Calibration:
    """Pixel size in mm (None: uncalibrated, lengths in px), its source and a one-line detail."""

    pixel_size_mm: float | None
    source: str | None  # one of SOURCES, or None
    detail: str
    ruler: dict | None = None  # the ruler read (ticks, spacing, confidence) when it was tried

    def as_dict(self) -> dict:
        """``pixel_size_mm``, ``pixel_size_source``, ``pixel_size_detail`` and, when read, ``ruler``."""
        out = {"pixel_size_mm": self.pixel_size_mm, "pixel_size_source": self.source,
               "pixel_size_detail": self.detail}
        if self.ruler is not None:
            out["ruler"] = self.ruler
        return out


def _checked(value: float, what: str) -> float:
    from fetal_detect.io import check_pixel_size_mm  # the one range check (0.01-2 mm/px)

    return check_pixel_size_mm(float(value), what)


def resolve_pixel_size(user_mm: float | None = None, dicom_mm: float | None = None,
                       image: np.ndarray | None = None, *, user_detail: str = "given by the user",
                       dicom_detail: str = "DICOM calibration", use_ruler: bool = True,
                       interval_mm: float | None = None) -> Calibration:
    """User > DICOM > ruler (read from ``image`` when given and ``use_ruler``) > None."""
    if user_mm is not None:
        return Calibration(_checked(user_mm, "pixel size"), "user", user_detail)
    if dicom_mm is not None:
        return Calibration(_checked(dicom_mm, "DICOM pixel size"), "dicom", dicom_detail)
    if image is None or not use_ruler:
        return Calibration(None, None, "no pixel size given and no DICOM calibration: lengths in px")
    from fetal_detect.measure.ruler import read_ruler

    return ruler_calibration(read_ruler(image, interval_mm=interval_mm))


def ruler_calibration(r) -> Calibration:
    """The calibration a :class:`fetal_detect.measure.ruler.Ruler` read gives (for a read already made)."""
    if r.pixel_size_mm is None:
        return Calibration(None, None, f"no usable on-screen ruler ({r.reason}): lengths in px", r.as_dict())
    return Calibration(r.pixel_size_mm, "ruler", f"{RULER_NOTE}: {r.reason}", r.as_dict())


def calibrate_image(loaded, user_mm: float | None = None, *, user_detail: str = "given by the user",
              use_ruler: bool = True, interval_mm: float | None = None, frame: np.ndarray | None = None) -> Calibration:
    """:func:`resolve_pixel_size` for a :class:`fetal_detect.io.LoadedImage` (its DICOM calibration and
    its first frame, or ``frame``)."""
    return resolve_pixel_size(user_mm, loaded.pixel_size_mm, loaded.image if frame is None else frame,
                              user_detail=user_detail, dicom_detail=f"DICOM {loaded.pixel_size_source}",
                              use_ruler=use_ruler, interval_mm=interval_mm)


def review_with_anatomy(cal: Calibration, detections: list[dict] | None) -> tuple[Calibration, bool]:
    """(calibration, changed): a ruler read checked against the scale the fetal anatomy implies
    (:mod:`fetal_detect.measure.anatomy_scale`). An ambiguous ruler (5 mm or 1 cm) gets the interval the
    anatomy supports; a ruler read 1.6x or more away from the anatomy is dropped (lengths in px). A pixel
    size from the user or DICOM is never touched; the anatomy never gives a pixel size of its own."""
    from fetal_detect.measure import anatomy_scale as anat

    r = cal.ruler
    if r is None or cal.source not in (None, "ruler"):
        return cal, False
    anatomy_mm, sizes = anat.implied_pixel_size_mm(detections)
    if anatomy_mm is None:
        return cal, False
    evidence = {"pixel_size_mm": round(anatomy_mm, 6), "box_px": sizes}
    ruler = {**r, "anatomy": evidence}
    if cal.source == "ruler":
        if anat.disagrees(cal.pixel_size_mm, anatomy_mm):
            return Calibration(None, None, f"the on-screen ruler ({cal.pixel_size_mm:.4f} mm/px) disagrees with "
                               f"the fetal anatomy ({anatomy_mm:.4f} mm/px, {cal.pixel_size_mm / anatomy_mm:.2f}x): "
                               "not used, lengths in px", {**ruler, "used": False}), True
        return Calibration(cal.pixel_size_mm, cal.source, cal.detail, ruler), False
    chosen = anat.pick(r.get("pixel_size_candidates_mm") or [], anatomy_mm)
    if chosen is None:
        return Calibration(None, None, cal.detail, ruler), False
    interval = round(chosen * r["spacing_px"], 3)
    ruler.update(pixel_size_mm=round(chosen, 6), interval_mm=round(interval, 3), interval_from="anatomy",
                 source="ruler")
    return Calibration(_checked(chosen, "ruler pixel size"), "ruler",
                       f"{RULER_NOTE}: {len(r.get('ticks') or [])} ticks {r['spacing_px']:.2f} px apart, "
                       f"{interval:g} mm each (picked by the fetal anatomy: {anatomy_mm:.4f} mm/px)", ruler), True
