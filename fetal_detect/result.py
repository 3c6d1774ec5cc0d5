"""THE result schema: what one image's analysis is, the same object in the CLI, JSON, page, CSV and batch table.

A :class:`Result` holds, for one image: ``status`` and ``reason`` (refuse rather than guess), the
``plane`` with its evidence, the calibration (``pixel_size_mm`` + ``pixel_size_source``), one
:class:`Measurement` per measurer that ran (values with units, its own status/reason, quality,
overlay primitives, the models it used), and the models and software version. ``to_dict()`` is the
JSON every entry point prints or returns; ``row()`` is the batch table's row; both derive from the
same fields, and the batch columns come from the measurer table (``fetal_detect.measurers``).

Statuses: ``ok`` (at least one measurement), ``no_finding`` (the models found nothing to measure),
``refused`` (a measurer or the plane gate declined: ``reason`` says why), ``no_standard_plane`` (auto
mode, a plane no measurer serves), ``error`` (the input could not be analysed; batch rows only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

STATUSES = ("ok", "no_finding", "refused", "no_standard_plane", "error")
HEAD = ("path", "sha256", "plane", "plane_confidence", "measurers")  # batch columns before the measurements
TAIL = ("quality", "status", "reason", "pixel_size_mm", "pixel_size_source", "pixel_size_detail", "models", "version",
        "processing_ms")


@dataclass
class Caliper:
    """A distance drawn as two points (image px), named after the measurement it shows (``bpd``, ``nt``, ``vp``)."""

    name: str
    p1: tuple[float, float]
    p2: tuple[float, float]
    length_px: float | None = None
    length_mm: float | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "points": [[round(float(v), 2) for v in self.p1], [round(float(v), 2) for v in self.p2]],
                "length_px": _round(self.length_px), "length_mm": _round(self.length_mm)}


@dataclass
class Overlay:
    """What a viewer draws, in image px: the head ``ellipse`` (cx, cy, a, b, angle_deg), ``calipers``, ``boxes``,
    ``outlines`` (closed traces such as the NT band) and the ``ruler_ticks`` a pixel size was read from."""

    ellipse: dict | None = None
    calipers: list[Caliper] = field(default_factory=list)
    boxes: list[dict] = field(default_factory=list)  # {name, confidence, box_xyxy}
    ruler_ticks: list = field(default_factory=list)  # [x, y] of the depth-ruler ticks the pixel size came from
    outlines: list[dict] = field(default_factory=list)  # {name, points: [[x, y], ...]} closed traces (the NT band)

    def merged(self, other: "Overlay") -> "Overlay":
        return Overlay(self.ellipse or other.ellipse, self.calipers + other.calipers, self.boxes + other.boxes,
                       self.ruler_ticks + other.ruler_ticks, self.outlines + other.outlines)

    def to_dict(self) -> dict:
        return {"ellipse": self.ellipse, "calipers": [c.to_dict() for c in self.calipers], "boxes": self.boxes,
                "outlines": self.outlines, "ruler_ticks": self.ruler_ticks}


@dataclass
class Measurement:
    """One measurer's answer on one image."""

    measurer: str
    status: str = "ok"
    reason: str | None = None
    values: dict = field(default_factory=dict)  # field -> number (or None: refused), the table's fields only
    units: dict = field(default_factory=dict)  # field -> unit
    quality: float | None = None  # the measurer's confidence in 0..1
    overlay: Overlay = field(default_factory=Overlay)
    models: dict = field(default_factory=dict)  # model task -> {weights, backend}
    details: dict = field(default_factory=dict)  # everything else the measurer reports (JSON-ready)

    def to_dict(self) -> dict:
        return {"measurer": self.measurer, "status": self.status, "reason": self.reason, "values": self.values,
                "units": self.units, "quality": self.quality, "overlay": self.overlay.to_dict(),
                "models": self.models, "details": self.details}


@dataclass
class Result:
    """One image's analysis (see the module doc)."""

    status: str
    requested: str  # what was asked: "auto" or a measurement
    measurers: list[str] = field(default_factory=list)  # what ran, in table order
    reason: str | None = None
    plane: str | None = None
    plane_confidence: float | None = None
    plane_evidence: dict = field(default_factory=dict)  # classifier probabilities, the gate's verdict
    pixel_size_mm: float | None = None
    pixel_size_source: str | None = None  # user | dicom | ruler (None: lengths in px); measure.calibration
    pixel_size_detail: str | None = None  # which flag, tag or ruler fit it was
    ruler: dict | None = None  # the ruler read, when it was tried
    results: dict[str, Measurement] = field(default_factory=dict)
    models: dict = field(default_factory=dict)  # every model used, plane-cls included
    version: str = ""
    processing_ms: float | None = None
    extra: dict = field(default_factory=dict)  # entry-point facts: image, image_quality, frames, overlay file

    @property
    def measurements(self) -> dict:
        """Every measurer's values in one flat dict (field names are unique across the table)."""
        return {k: v for m in self.results.values() for k, v in m.values.items()}

    @property
    def units(self) -> dict:
        return {k: u for m in self.results.values() for k, u in m.units.items() if k in m.values}

    @property
    def quality(self) -> float | None:
        """The quality of the first measurement that succeeded (the primary one), else None."""
        return next((m.quality for m in self.results.values() if m.status == "ok"), None)

    @property
    def overlay(self) -> Overlay:
        ticks = (self.ruler or {}).get("ticks", []) if self.pixel_size_source == "ruler" else []
        out = Overlay(ruler_ticks=list(ticks))
        for m in self.results.values():
            out = out.merged(m.overlay)
        return out

    def calibrate(self, cal) -> "Result":
        """Take the pixel size and its provenance from a :class:`fetal_detect.measure.calibration.Calibration`."""
        self.pixel_size_mm, self.pixel_size_source, self.pixel_size_detail = cal.pixel_size_mm, cal.source, cal.detail
        self.ruler = cal.ruler
        return self

    def to_dict(self) -> dict:
        """The JSON every entry point serialises (numpy and NaN made JSON-safe)."""
        return json_safe({
            "status": self.status, "reason": self.reason, "requested": self.requested, "measurers": self.measurers,
            "plane": self.plane, "plane_confidence": self.plane_confidence, "plane_evidence": self.plane_evidence,
            "measurements": self.measurements, "units": self.units, "quality": self.quality,
            "pixel_size_mm": self.pixel_size_mm, "pixel_size_source": self.pixel_size_source,
            "pixel_size_detail": self.pixel_size_detail, **({"ruler": self.ruler} if self.ruler is not None else {}),
            "overlay": self.overlay.to_dict(), "results": {k: m.to_dict() for k, m in self.results.items()},
            "models": self.models, "version": self.version, "processing_ms": self.processing_ms, **self.extra})

    def row(self, columns: list[str] | None = None) -> dict:
        """The batch row: HEAD, the measurement ``columns`` (default: the table's), TAIL."""
        from fetal_detect import measurers

        details = {k: v for m in self.results.values() for k, v in m.details.items()}
        values = self.measurements
        row = {"path": self.extra.get("path"), "sha256": self.extra.get("sha256"), "plane": self.plane,
               "plane_confidence": self.plane_confidence, "measurers": "+".join(self.measurers) or None}
        for c in columns if columns is not None else measurers.field_columns():
            row[c] = _cell(values[c] if c in values else details.get(c))
        row.update(quality=self.quality, status=self.status, reason=self.reason, pixel_size_mm=self.pixel_size_mm,
                   pixel_size_source=self.pixel_size_source if self.pixel_size_mm is not None else None,
                   pixel_size_detail=self.pixel_size_detail,
                   models=models_string(self.models), version=self.version, processing_ms=self.processing_ms)
        if self.extra.get("overlay_file"):
            row["overlay"] = self.extra["overlay_file"]
        return json_safe(row)


def models_string(models: dict | None) -> str:
    """``{"hc-seg": {weights, backend, sha256}}`` -> ``"hc-seg=hc-seg.pt@1a2b3c4d5e6f/torch"`` (sorted, ``;``)."""
    from pathlib import Path

    parts = [f"{task}={Path(str(i.get('weights', ''))).name}@{str(i.get('sha256') or '')[:12]}/{i.get('backend')}"
             for task, i in (models or {}).items()]
    return ";".join(sorted(parts))


def _cell(v):
    """A batch cell: lists/dicts (e.g. missing structures) as ``;``-joined text, numbers and text as they are."""
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, dict):
        return ";".join(f"{k}={x}" for k, x in v.items())
    return v


def _round(v, nd: int = 2):
    return None if v is None else round(float(v), nd)


def json_safe(obj):
    """numpy scalars -> Python, NaN/inf -> None, arrays dropped, Paths -> str (browsers reject NaN in JSON)."""
    from pathlib import Path

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (Caliper, Overlay, Measurement)):
        return json_safe(obj.to_dict())
    return obj
