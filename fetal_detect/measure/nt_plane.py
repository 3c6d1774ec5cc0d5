"""Mid-sagittal NT plane check from detected landmarks: calibrated scores, anatomy, a graded answer.

FMF image criteria (Nicolaides 2004, "The 11-13+6 weeks scan"): a mid-sagittal section shows the
nasal bone and palate anteriorly, the thalami and midbrain centrally, the intracranial translucency
(IT) and the cisterna magna (CM) posteriorly. A landmark counts as *present* when the detector finds
it at a place where that structure can be, with a score at or above its own threshold:

- **thresholds** per landmark, chosen on validation data for a stated sensitivity (half the score
  that 95 % of the annotated landmarks reach, ``evaluate/nt_plane.py``): a weak detector class (the
  nasal bone) gets a low threshold instead of failing good planes;
- **anatomy**: every landmark is placed in the head's own frame (origin: thalami centre, unit length
  and u axis: thalami -> palate, v: across, its sign fixed by the side that explains most landmarks,
  so a mirrored image is the same anatomy) and must fall inside the range seen on the annotated
  training images (nasal bone at the front above the palate, midbrain behind the thalami, IT, CM and
  NT on the posterior side). A box in the wrong place is not evidence, whatever its score;
- **plane_score** in [0, 1]: the mean over the six landmarks of min(1, score / typical score), the
  typical score being the median score of annotated landmarks on validation data; 1 means every
  landmark is at least as clear as in a typical annotated plane.

Without a calibration (a model that was not calibrated, e.g. a test stand-in) every threshold is
:data:`DEFAULT_THRESHOLD`, the typical score 2x that, and the anatomy is not checked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PLANE_REQUIRED = ("nasal bone", "palate", "thalami", "midbrain", "IT", "CM")
CRITERIA = "FMF mid-sagittal: nasal bone, palate, thalami, midbrain, IT and CM visible"
DEFAULT_THRESHOLD = 0.25
ANCHORS = ("thalami", "palate")  # they define the head frame
GEOMETRY_MARGIN = 0.15  # widening of each learnt range, in units of the thalami-palate distance


@dataclass
class PlaneCalibration:
    """Per-landmark ``thresholds`` and ``typical`` scores, and ``geometry``: for each structure its
    ``[u_lo, u_hi, v_lo, v_hi]`` in the head frame, plus ``span`` (thalami-palate distance over the
    thalami box diagonal) as ``[lo, hi]``. Empty geometry = anatomy not checked."""

    thresholds: dict[str, float] = field(default_factory=dict)
    typical: dict[str, float] = field(default_factory=dict)
    geometry: dict[str, list[float]] = field(default_factory=dict)
    sensitivity: float | None = None
    source: str = "uncalibrated"

    @classmethod
    def from_meta(cls, meta: dict | None) -> "PlaneCalibration":
        """From a weights sidecar's ``plane_calibration`` block; uncalibrated when it has none."""
        c = (meta or {}).get("plane_calibration") or {}
        if not c:
            return cls()
        return cls(thresholds={k: float(v) for k, v in c.get("thresholds", {}).items()},
                   typical={k: float(v) for k, v in c.get("typical", {}).items()},
                   geometry={k: [float(x) for x in v] for k, v in c.get("geometry", {}).items()},
                   sensitivity=c.get("sensitivity"), source=str(c.get("source", "calibrated")))

    def threshold(self, name: str) -> float:
        return self.thresholds.get(name, DEFAULT_THRESHOLD)

    def typical_score(self, name: str) -> float:
        return max(self.typical.get(name, 2 * self.threshold(name)), self.threshold(name), 1e-6)


def _centre(box) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0])


def head_frame(thalami_box, palate_box):
    """(origin, u unit vector, v unit vector, unit length px, span) of the head frame."""
    t, p = _centre(thalami_box), _centre(palate_box)
    d = float(np.linalg.norm(p - t))
    if d < 1e-6:
        return None
    eu = (p - t) / d
    ev = np.array([-eu[1], eu[0]])
    diag = math.hypot(thalami_box[2] - thalami_box[0], thalami_box[3] - thalami_box[1])
    return t, eu, ev, d, d / max(diag, 1e-6)


def frame_coords(box, frame, sign: int = 1) -> tuple[float, float]:
    """(u, v) of a box centre in the head frame; ``sign`` mirrors v."""
    t, eu, ev, d, _ = frame
    r = _centre(box) - t
    return float(r @ eu / d), float(sign * (r @ ev) / d)


def _inside(uv, rng, margin: float = GEOMETRY_MARGIN) -> bool:
    u_lo, u_hi, v_lo, v_hi = rng
    return u_lo - margin <= uv[0] <= u_hi + margin and v_lo - margin <= uv[1] <= v_hi + margin


def plane_evidence(detections, cal: PlaneCalibration | None = None, extra: tuple[str, ...] = ("NT",)) -> dict:
    """Plane check from ``detections`` (``(name, score, box_xyxy)`` tuples, any order).

    Returns ``plane_ok``, ``plane_score``, ``missing`` (landmark names), ``plane_reasons`` (one line per
    missing landmark), ``landmarks`` (per landmark: score, threshold, box, where) and ``chosen``
    (name -> the box taken as that structure, also for the ``extra`` structures such as the NT, so a
    caller can use the anatomically consistent NT box).
    """
    cal = cal or PlaneCalibration()
    by_name: dict[str, list] = {}
    for name, score, box in sorted(detections, key=lambda d: -float(d[1])):
        by_name.setdefault(name, []).append((float(score), tuple(float(v) for v in box)))
    names = [*PLANE_REQUIRED, *[e for e in extra if e not in PLANE_REQUIRED]]
    chosen = {n: (by_name[n][0] if by_name.get(n) else None) for n in names}  # best score, anywhere
    where = {n: "unchecked" for n in names}
    geo = cal.geometry
    frame = _anchor_frame(by_name, geo) if geo else None
    if frame is not None:
        chosen["thalami"], chosen["palate"], frame = frame
        best_sign, best = 1, None
        for sign in (1, -1):  # which side is posterior: the one that explains the landmarks best
            pick = {n: next((c for c in by_name.get(n, []) if n in geo and _inside(frame_coords(c[1], frame, sign), geo[n])),
                            None) for n in names if n not in ANCHORS}
            value = sum(min(1.0, c[0] / cal.threshold(n)) for n, c in pick.items() if c is not None)
            if best is None or value > best[0]:
                best_sign, best = sign, (value, pick)
        for n, c in best[1].items():
            if n not in geo:
                continue
            where[n] = "consistent" if c is not None else ("implausible place" if by_name.get(n) else "unchecked")
            chosen[n] = c
        where["thalami"] = where["palate"] = "anchor"
    elif geo:
        for n in ANCHORS:
            if by_name.get(n):
                where[n] = "no anchor pair"
    landmarks, missing, reasons, score_sum = {}, [], [], 0.0
    for n in PLANE_REQUIRED:
        c, thr = chosen[n], cal.threshold(n)
        s = c[0] if c is not None else 0.0
        landmarks[n] = {"score": round(s, 4), "threshold": round(thr, 4), "where": where[n],
                        "box_xyxy": None if c is None else [round(v, 1) for v in c[1]]}
        score_sum += min(1.0, s / cal.typical_score(n))
        if s < thr:
            missing.append(n)
            if c is None and where[n] == "implausible place":
                reasons.append(f"{n}: detected only at an anatomically implausible place")
            elif c is None:
                reasons.append(f"{n}: not detected")
            else:
                reasons.append(f"{n}: score {s:.2f} below its threshold {thr:.2f}")
    return {"plane_ok": not missing, "plane_score": round(score_sum / len(PLANE_REQUIRED), 3),
            "missing": missing, "plane_reasons": reasons, "landmarks": landmarks,
            "plane_criteria": CRITERIA, "plane_calibration": cal.source,
            "anatomy_checked": frame is not None,
            "chosen": {n: c for n, c in chosen.items() if c is not None}}


def _anchor_frame(by_name: dict, geo: dict):
    """(thalami, palate, frame) from the best thalami and the best palate at a plausible distance."""
    thal = by_name.get("thalami") or []
    pal = by_name.get("palate") or []
    lo, hi = geo.get("span", [0.0, math.inf])[:2]
    for t in thal[:1]:
        for p in pal:
            frame = head_frame(t[1], p[1])
            if frame is not None and lo * (1 - GEOMETRY_MARGIN) <= frame[4] <= hi * (1 + GEOMETRY_MARGIN):
                return t, p, frame
    return None
