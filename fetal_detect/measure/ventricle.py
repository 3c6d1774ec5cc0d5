"""Lateral-ventricle atrial width (Vp) from a ventricle (LV) mask, in px and mm.

Convention (ISUOG 2007 / 2020 CNS guidelines): in the trans-ventricular plane the atrium is measured at
the glomus of the choroid plexus, perpendicular to the long axis of the ventricle, placing the calipers
on the inner edges of the ventricular walls (inner-to-inner); normal is < 10 mm throughout gestation.

From a mask of the ventricular lumen (fluid; the walls are outside it), here:
1. the largest connected component is the ventricle (the far-field one in a standard image);
2. its long axis is the principal axis of its pixels (PCA);
3. chords perpendicular to that axis are sampled every ``step_px`` along it; on each, the lumen edges are
   the sub-pixel 0.5 crossings of the bilinearly interpolated mask (a pixel-centre mask's edge lies
   half-way between an inside and an outside centre), so the chord length is inner-to-inner;
4. Vp is the widest chord: the atrium, where the glomus sits, is the widest part of the ventricle in
   this plane. Its two ends are the calipers.

An approximation stated as such: the widest perpendicular chord stands in for "at the glomus"; a
strongly curved ventricle has one PCA axis, not a local one. On exact phantoms the error is < 0.1 px
(tests/test_measure_vp.py).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

VP_NORMAL_MAX_MM = 10.0  # atrial width >= 10 mm: ventriculomegaly (mild 10-12, moderate 12-15, severe > 15)
MIN_AREA_PX = 12  # a smaller component is noise, not a ventricle
SMOOTH = 2  # chords on each side of the widest one (at step_px = 0.5: +-1 px along the axis) in its median


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected component of a binary mask (uint8 0/1), or None when it is empty/too small."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((np.asarray(mask) > 0).astype(np.uint8), connectivity=8)
    if n < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[k, cv2.CC_STAT_AREA] < MIN_AREA_PX:
        return None
    return (labels == k).astype(np.uint8)


def principal_axis(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre xy, unit long axis u, unit perpendicular v) of a mask's pixel centres."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    c = pts.mean(0)
    w, vecs = np.linalg.eigh(np.cov((pts - c).T))
    u = vecs[:, int(np.argmax(w))]
    return c, u, np.array([-u[1], u[0]])


def _runs(inside: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    d = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def _crossing(s0: float, v0: float, s1: float, v1: float) -> float:
    """Where the interpolated profile crosses 0.5 between samples (s0, v0) and (s1, v1)."""
    return s0 + (0.5 - v0) / (v1 - v0) * (s1 - s0) if v1 != v0 else (s0 + s1) / 2


def atrial_width(mask: np.ndarray, pixel_size_mm: float | None = None, step_px: float = 0.5,
                 ds_px: float = 0.25) -> dict | None:
    """Vp of a ventricle mask: ``vp_px`` (and ``vp_mm``), the ``calipers`` (two [x, y] points), the axis
    angle and where along the axis it was found (0 = one end, 1 = the other); None when there is no
    ventricle. ``step_px``: spacing of the chords along the axis; ``ds_px``: sampling along a chord."""
    comp = largest_component(mask)
    if comp is None:
        return None
    c, u, v = principal_axis(comp)
    ys, xs = np.nonzero(comp)
    rel = np.stack([xs, ys], 1) - c
    pu, pv = rel @ u, rel @ v
    ts = np.arange(pu.min() - 1, pu.max() + 1 + 1e-9, step_px)
    reach = float(np.abs(pv).max()) + 2.0
    ss = np.arange(-reach, reach + 1e-9, ds_px)
    gx = (c[0] + ts[:, None] * u[0] + ss[None, :] * v[0]).astype(np.float32)
    gy = (c[1] + ts[:, None] * u[1] + ss[None, :] * v[1]).astype(np.float32)
    prof = cv2.remap(comp.astype(np.float32), gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    chords = []  # (width, t, s1, s2) of the widest closed chord at each axis position
    for i, row in enumerate(prof):
        found = None
        for a, b in _runs(row >= 0.5):
            if a == 0 or b == len(ss) - 1:
                continue  # touches the sampling window: cannot be a closed chord
            s1 = _crossing(ss[a - 1], row[a - 1], ss[a], row[a])
            s2 = _crossing(ss[b], row[b], ss[b + 1], row[b + 1])
            if found is None or s2 - s1 > found[0]:
                found = (s2 - s1, ts[i], s1, s2)
        chords.append(found)
    widths = np.array([ch[0] if ch else 0.0 for ch in chords])
    if not widths.any():
        return None
    k = int(np.argmax(widths))
    near = widths[max(0, k - SMOOTH): k + SMOOTH + 1]  # the widest chord and its neighbours (+-1 px):
    best = (float(np.median(near[near > 0])), *chords[k][1:])  # a median, not a max of stair-step noise
    width, t, s1, s2 = best
    mid, half = (s1 + s2) / 2, width / 2  # calipers as long as the reported width, centred on the widest chord
    p1, p2 = c + t * u + (mid - half) * v, c + t * u + (mid + half) * v
    angle = math.degrees(math.atan2(u[1], u[0])) % 180.0
    out = {"vp_px": round(float(width), 2), "calipers": [[round(float(x), 2) for x in p1], [round(float(x), 2) for x in p2]],
           "axis_angle_deg": round(angle, 1), "axis_position": round(float((t - pu.min()) / max(np.ptp(pu), 1e-9)), 3),
           "ventricle_area_px": int(comp.sum())}
    if pixel_size_mm:
        vp_mm = width * pixel_size_mm
        out.update(vp_mm=round(float(vp_mm), 2), vp_normal=bool(vp_mm < VP_NORMAL_MAX_MM),
                   vp_note=f"{'within' if vp_mm < VP_NORMAL_MAX_MM else 'at or above'} the {VP_NORMAL_MAX_MM:g} mm "
                           "upper limit of normal (ISUOG)")
    return out
