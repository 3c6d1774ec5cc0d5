"""A second, independent look at the scale of a first-trimester mid-sagittal image: the fetal anatomy.

At 11-14 weeks the thalami, the midbrain and the palate have a narrow range of sizes: on the Shenzhen
images whose left-edge ruler is read (5 mm ticks), the longer side of their annotated boxes is 7.4, 6.9
and 7.9 mm (medians) and the scale they imply for one image lies within 0.85-1.19x the ruler's for 90 % of
images. That is far too loose to measure an NT with, but a factor of 2 (5 mm ticks taken for 1 cm ones,
or the reverse) stands out. So the anatomy

- **picks the interval** of a ruler whose tick pattern fits both 5 mm and 1 cm (the right-edge dot
  column of the Siemens layout, a long tick every 5): the candidate within ``PICK_TOLERANCE`` of the
  anatomy's scale, the other being at least 2 / ``PICK_TOLERANCE`` off; else it stays refused;
- **vetoes** a ruler read whose scale is more than ``VETO_RATIO`` away from the anatomy's (a periodic
  texture or a grey-bar scale taken for ticks): lengths go back to px, with the reason.

It never supplies a pixel size of its own. ``implied_pixel_size_mm(detections)`` takes nt-det detections
(``{name, confidence, box_xyxy}``) and needs at least ``MIN_STRUCTURES`` of the three structures.
"""
from __future__ import annotations

import math

REFERENCE_MM = {"thalami": 7.40, "midbrain": 6.94, "palate": 7.90}  # longer box side, median, 11-14 weeks
MIN_CONFIDENCE = 0.25
MIN_STRUCTURES = 2
PICK_TOLERANCE = 1.4  # a candidate scale within 1.4x of the anatomy's is taken (5 mm vs 1 cm: 2x apart)
VETO_RATIO = 1.6  # a ruler scale further than this from the anatomy's is not used


def implied_pixel_size_mm(detections: list[dict] | None) -> tuple[float | None, dict]:
    """(pixel size the anatomy implies, {structure: longer box side px}); None with fewer than
    ``MIN_STRUCTURES`` confident structures."""
    best: dict[str, tuple[float, float]] = {}
    for d in detections or []:
        name, conf = d.get("name"), float(d.get("confidence") or 0.0)
        if name in REFERENCE_MM and conf >= MIN_CONFIDENCE and conf > best.get(name, (0.0, 0.0))[0]:
            x1, y1, x2, y2 = d["box_xyxy"]
            best[name] = (conf, max(x2 - x1, y2 - y1))
    sizes = {k: round(v[1], 1) for k, v in best.items() if v[1] > 2}
    if len(sizes) < MIN_STRUCTURES:
        return None, sizes
    logs = [math.log(REFERENCE_MM[k] / s) for k, s in sizes.items()]
    return math.exp(sum(logs) / len(logs)), sizes


def pick(candidates_mm: list[float], anatomy_mm: float | None) -> float | None:
    """The candidate pixel size the anatomy supports (within ``PICK_TOLERANCE``), else None."""
    if anatomy_mm is None or not candidates_mm:
        return None
    best = min(candidates_mm, key=lambda c: abs(math.log(c / anatomy_mm)))
    return best if abs(math.log(best / anatomy_mm)) <= math.log(PICK_TOLERANCE) else None


def disagrees(pixel_size_mm: float, anatomy_mm: float | None) -> bool:
    """True when a ruler's pixel size is more than ``VETO_RATIO`` away from the anatomy's."""
    return anatomy_mm is not None and abs(math.log(pixel_size_mm / anatomy_mm)) > math.log(VETO_RATIO)
