"""Head biometry from a skull mask: ellipse -> HC, BPD, OFD (mm), gestational age and centiles.

Conventions (documented in the README):
- The mask is the filled *outer* skull ellipse, as in HC18; HC is the Ramanujan perimeter of the
  fitted ellipse, OFD its major axis and BPD its minor axis (outer-to-outer).
- ``pixel_size_mm`` is the side of one image pixel in mm; without it results are in px.
- A linear calibration ``hc_ref = intercept_mm + slope * hc_fit``, fitted on *training* images only
  (``fit_calibration``), removes the systematic bias between model masks and reference HC. BPD and
  OFD are scaled by the same factor so the ellipse stays consistent.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.geometry import border_zone, ellipse_perimeter, fit_ellipse_detail, mean_ellipse
from fetal_detect.measure.rim import rim_support

# Hadlock FP, Deter RL, Harrist RB, Park SK. Estimating fetal age: computer-assisted analysis of
# multiple fetal growth parameters. Radiology 1984;152:497-501. GA(weeks) = 8.96 + 0.540 HC + 0.0003 HC^3,
# HC in cm; derived for about 14-42 weeks (HC ~ 100-360 mm).
HADLOCK_HC_RANGE_MM = (80.0, 370.0)

# Papageorghiou AT et al. International standards for fetal growth based on serial ultrasound
# measurements: the Fetal Growth Longitudinal Study of the INTERGROWTH-21st Project.
# Lancet 2014;384:869-79 (Table/appendix: HC mean and SD as functions of GA in exact weeks, 14-40 wk).
INTERGROWTH_GA_RANGE_WEEKS = (14.0, 40.0)


def hadlock_ga_weeks(hc_mm: float) -> float | None:
    """Gestational age (weeks) from HC by Hadlock 1984; ``None`` outside the formula's HC range."""
    if not (HADLOCK_HC_RANGE_MM[0] <= hc_mm <= HADLOCK_HC_RANGE_MM[1]):
        return None
    hc_cm = hc_mm / 10.0
    return 8.96 + 0.540 * hc_cm + 0.0003 * hc_cm ** 3


def intergrowth_hc_mm(ga_weeks: float) -> tuple[float, float]:
    """INTERGROWTH-21st fetal HC standard: (mean_mm, sd_mm) at ``ga_weeks`` (14-40 weeks)."""
    g, lg = ga_weeks, math.log(ga_weeks)
    mean = -28.2849 + 1.69267 * g ** 2 - 0.397485 * g ** 2 * lg
    sd = 1.98735 + 0.0136772 * g ** 3 - 0.00726264 * g ** 3 * lg + 0.000976253 * g ** 3 * lg ** 2
    return mean, sd


def intergrowth_hc_centile(hc_mm: float, ga_weeks: float) -> dict:
    """z-score and centile of ``hc_mm`` for a known GA against INTERGROWTH-21st (normal model)."""
    if not (INTERGROWTH_GA_RANGE_WEEKS[0] <= ga_weeks <= INTERGROWTH_GA_RANGE_WEEKS[1]):
        raise FetalDetectError(f"GA {ga_weeks} weeks is outside the INTERGROWTH-21st range 14-40 weeks")
    mean, sd = intergrowth_hc_mm(ga_weeks)
    z = (hc_mm - mean) / sd
    centile = 50.0 * (1.0 + math.erf(z / math.sqrt(2.0)))
    return {"ga_weeks": ga_weeks, "hc_z": round(z, 3), "hc_centile": round(centile, 1),
            "reference": "INTERGROWTH-21st (Papageorghiou et al., Lancet 2014)"}


@dataclass(frozen=True)
class HCCalibration:
    """Linear correction of fitted HC: ``hc_ref = intercept_mm + slope * hc_fit`` (mm)."""

    slope: float = 1.0
    intercept_mm: float = 0.0
    n_images: int = 0
    source: str = "identity"

    def apply(self, hc_mm: float) -> float:
        return self.intercept_mm + self.slope * hc_mm

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | None) -> "HCCalibration":
        if path is None or not Path(path).exists():
            return cls()
        return cls(**json.loads(Path(path).read_text()))


def fit_calibration(hc_fit_mm: np.ndarray, hc_ref_mm: np.ndarray, source: str) -> HCCalibration:
    """Least-squares line from fitted to reference HC (training images only; never validation)."""
    x, y = np.asarray(hc_fit_mm, float), np.asarray(hc_ref_mm, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 10:
        return HCCalibration(source="identity (fewer than 10 training measurements)")
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return HCCalibration(float(slope), float(intercept), int(ok.sum()), source)


def measure_hc(mask: np.ndarray, pixel_size_mm: float | None, calibration: HCCalibration | None = None,
               model_confidence: float | None = None, image_gray: np.ndarray | None = None,
               more_masks: Sequence[np.ndarray] = ()) -> dict:
    """HC, BPD and OFD from a filled skull mask (H x W, non-zero = skull and inside).

    The ellipse is fitted to the mask border without the points where the mask was cut by the image frame
    or, given the image ``image_gray``, by the border of the scan sector: a skull that leaves the image
    gives a straight edge that would pull the fit (``border_points_dropped`` says how many were left out).
    With ``image_gray`` the result also has ``rim_support`` (share of the ellipse on a bright rim).
    ``more_masks``: other views of the same skull in this image's px (test-time augmentation, e.g. the
    mask predicted on the mirrored image, mirrored back; same box); the ellipse is the mean of the fits.

    Returns a JSON-ready dict: ``hc_mm, bpd_mm, ofd_mm`` (or ``*_px`` with ``units: "px"`` when
    ``pixel_size_mm`` is None), ``ellipse`` in px, ``confidence`` in 0..1, ``ga_weeks`` (Hadlock).
    Raises :class:`FetalDetectError` when the mask holds no skull or the pixel size is not positive.
    """
    if pixel_size_mm is not None and not (pixel_size_mm > 0 and math.isfinite(pixel_size_mm)):
        raise FetalDetectError(f"pixel size must be a positive number of mm, got {pixel_size_mm}")
    gray = None if image_gray is None or image_gray.ndim == 2 else cv2.cvtColor(
        image_gray, cv2.COLOR_BGRA2GRAY if image_gray.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    gray = image_gray if gray is None else gray
    zone = border_zone(mask.shape[:2], gray)
    fits = [f for f in (fit_ellipse_detail(m, exclude=zone) for m in (mask, *more_masks)) if f is not None]
    if not fits:
        raise FetalDetectError("no skull found: the mask is empty or too small to fit an ellipse", status=422)
    ell, inliers = mean_ellipse([f.ellipse for f in fits]), float(np.mean([f.inliers for f in fits]))
    hc_px = ellipse_perimeter(ell.a, ell.b)
    fill = float(np.count_nonzero(mask)) / max(math.pi * ell.a * ell.b, 1.0)  # how elliptical the blob is
    quality = inliers * max(0.0, 1.0 - abs(1.0 - fill))
    confidence = quality if model_confidence is None else quality * float(model_confidence)
    out: dict = {"ellipse": ell.as_dict(), "confidence": round(float(confidence), 4),
                 "border_points_dropped": int(sum(f.points_dropped for f in fits))}
    if gray is not None:
        out["rim_support"] = round(rim_support(gray, ell), 3)
    if pixel_size_mm is None:
        out.update(units="px", hc_px=round(hc_px, 2), bpd_px=round(2 * ell.b, 2), ofd_px=round(2 * ell.a, 2),
                   note="no pixel size given: lengths are in pixels; pass --pixel-size MM for mm")
        return out
    cal = calibration or HCCalibration()
    hc_raw = hc_px * pixel_size_mm
    hc_mm = cal.apply(hc_raw)
    k = hc_mm / hc_raw if hc_raw > 0 else 1.0
    ga = hadlock_ga_weeks(hc_mm)
    out.update(units="mm", pixel_size_mm=pixel_size_mm, hc_mm=round(hc_mm, 2),
               bpd_mm=round(2 * ell.b * pixel_size_mm * k, 2), ofd_mm=round(2 * ell.a * pixel_size_mm * k, 2),
               hc_uncalibrated_mm=round(hc_raw, 2),
               ga_weeks=None if ga is None else round(ga, 1),
               ga_method="Hadlock 1984 (HC)" if ga is not None else "HC outside Hadlock range")
    return out
