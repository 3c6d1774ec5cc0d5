"""Derived NT masks for real images that only have an NT *box* (no public NT masks exist).

Method (chosen over edge maps and active contours): inside the NT box the band is traced with the
same perpendicular intensity profiles that measure it (:func:`fetal_detect.measure.nt.trace_band`):
each inner border is the half-maximum crossing between the anechoic gap and that side's echogenic
line. So the mask border *is* the caliper border definition, it is sub-pixel, vectorised and needs no
tuning per image; Canny edges fragment in speckle and snakes need an initial contour and weights.

Only masks that pass the quality checks (:data:`QC`) are used for training; the others are still
written (with the reasons in ``qc.csv``) so they can be inspected.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fetal_detect.errors import FetalDetectError

QC = {
    "min_run_fraction": 0.6,  # the traced band covers at least this share of the box length
    "min_contrast": 18.0,  # median grey-level step from the gap to the weaker bright line
    "max_border_jitter_px": 1.5,  # median |second difference| of the borders (smooth membranes)
    "min_thickness_px": 2.0,
    "max_thickness_fraction": 1.2,  # maximum gap over the box short side (lines may sit just outside it)
}


@dataclass
class DerivedMask:
    """A derived band mask (uint8 0/255, image size, or None), whether it passed QC, and the QC facts."""

    mask: np.ndarray | None
    passed: bool
    qc: dict = field(default_factory=dict)


def derive_nt_mask(grey: np.ndarray, box: tuple[float, float, float, float]) -> DerivedMask:
    """Trace the fluid band inside the NT ``box`` (x1, y1, x2, y2 px) and check its quality."""
    from fetal_detect.measure.nt import main_run, trace_band

    try:
        trace = trace_band(grey, box)
    except FetalDetectError as e:
        return DerivedMask(None, False, {"reason": str(e)})
    run = main_run(trace.valid, lo=trace.lo, hi=trace.hi)
    qc: dict = {"profiles": int(len(trace.s)), "run": int(len(run))}
    if len(run) < 5:
        return DerivedMask(None, False, {**qc, "reason": "no band traced"})
    keep = np.zeros_like(trace.valid)
    keep[run] = trace.valid[run]
    trace.valid = keep
    th = trace.hi[keep] - trace.lo[keep]
    jitter = max(float(np.median(np.abs(np.diff(trace.lo[keep], 2)))) if keep.sum() > 3 else 0.0,
                 float(np.median(np.abs(np.diff(trace.hi[keep], 2)))) if keep.sum() > 3 else 0.0)
    x1, y1, x2, y2 = box
    qc.update(run_fraction=round(len(run) / len(trace.s), 3),
              contrast=round(float(np.median(trace.contrast[keep])), 1),
              border_jitter_px=round(jitter, 2), max_thickness_px=round(float(th.max()), 2),
              thickness_fraction=round(float(th.max()) / max(1.0, min(x2 - x1, y2 - y1)), 3),
              axis_angle_deg=round(trace.angle_deg, 1))
    fails = []
    if qc["run_fraction"] < QC["min_run_fraction"]:
        fails.append("band too short")
    if qc["contrast"] < QC["min_contrast"]:
        fails.append("low contrast")
    if jitter > QC["max_border_jitter_px"]:
        fails.append("ragged borders")
    if qc["max_thickness_px"] < QC["min_thickness_px"]:
        fails.append("too thin")
    if qc["thickness_fraction"] > QC["max_thickness_fraction"]:
        fails.append("gap fills the box")
    mask = trace.mask(grey.shape[:2])
    if not mask.any():
        fails.append("empty mask")
    qc["reason"] = "; ".join(fails)
    return DerivedMask(mask, not fails, qc)
