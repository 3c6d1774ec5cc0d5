"""Nuchal translucency (NT): band tracing and sub-pixel thickness (plane check: ``nt_plane``, risk: ``nt_risk``).

How the thickness is measured (FMF definition: the maximum thickness of the anechoic space between
the two echogenic lines, inner border to inner border, perpendicular to the long axis):

1. The band axis is the principal axis of the band mask (PCA) when a mask is given, else the
   dominant line orientation in the ROI (structure tensor); it is refined once by a straight-line
   fit through the traced band centre.
2. Profiles perpendicular to the axis are sampled every 1 px along it and every 0.25 px across it
   (bilinear, ``scipy.ndimage.map_coordinates``) from a lightly smoothed image, then averaged over
   a few neighbouring profiles to tame speckle.
3. On each profile the gap is the deepest valley bounded by brighter samples, weighted by a
   Gaussian prior on its distance from the box's centre line (:data:`GAP_PRIOR`); each inner border is the first
   half-maximum crossing (halfway between the gap level and that side's bright-line peak) going
   outward, located by linear interpolation: sub-pixel by construction.
4. NT is the maximum of the (median-filtered) thickness curve; the calipers are the two border
   points of that profile. All steps are vectorised over profiles (no per-pixel Python loops).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from fetal_detect.errors import FetalDetectError

STEP_N_PX = 0.25  # sampling step across the band
STEP_S_PX = 1.0  # spacing of profiles along the band
# Gap centre prior: valley depth x Gaussian(distance from the box's centre line, sigma = GAP_PRIOR half box
# heights). A box centred on the NT (detector or annotator) then no longer locks onto another dark layer
# near its edge: on nt_shenzhen val the annotated-box NT changes by <= 25 % under a 30 % taller or 15 %
# shifted box on 94 % of images (86 % without), phantom MAE unchanged (0.016 mm).
GAP_PRIOR = 0.5


@dataclass
class BandTrace:
    """Traced NT band in the rotated frame: centre ``(cx, cy)`` px, axis angle, borders per profile.

    ``s`` (px along the axis), ``lo``/``hi`` (px along the normal ``(-sin, cos)``) are the inner
    borders on each profile; ``valid`` marks profiles with a gap bounded by two bright lines.
    """

    cx: float
    cy: float
    angle_deg: float
    s: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    valid: np.ndarray
    contrast: np.ndarray
    gap_level: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def thickness_px(self) -> np.ndarray:
        return np.where(self.valid, self.hi - self.lo, np.nan)

    def to_xy(self, s: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Rotated-frame (s, n) -> image (x, y) in px, as an (N x 2) array."""
        t = math.radians(self.angle_deg)
        c, sn = math.cos(t), math.sin(t)
        s, n = np.asarray(s, float), np.asarray(n, float)
        return np.stack([self.cx + s * c - n * sn, self.cy + s * sn + n * c], -1)

    def polygon_xy(self) -> np.ndarray:
        """The band outline (upper border then lower border reversed) over valid profiles, px."""
        v = self.valid
        return np.concatenate([self.to_xy(self.s[v], self.lo[v]), self.to_xy(self.s[v], self.hi[v])[::-1]])

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Filled band (uint8 0/255) at image size ``shape``, from the valid runs of profiles."""
        out = np.zeros(shape, np.uint8)
        idx = np.flatnonzero(self.valid)
        if len(idx) < 2:
            return out
        runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
        for r in runs:
            if len(r) < 2:
                continue
            poly = np.concatenate([self.to_xy(self.s[r], self.lo[r]), self.to_xy(self.s[r], self.hi[r])[::-1]])
            cv2.fillPoly(out, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
        return out


# ----------------------------------------------------------------------------------------------
# axis


def mask_axis(mask: np.ndarray) -> tuple[float, float, float] | None:
    """(cx, cy, angle_deg) of a mask's principal axis (PCA), or None when it is nearly empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 5:
        return None
    pts = np.stack([xs, ys], 1).astype(np.float64)
    c = pts.mean(0)
    w, v = np.linalg.eigh(np.cov((pts - c).T))
    d = v[:, np.argmax(w)]
    ang = math.degrees(math.atan2(d[1], d[0]))
    return float(c[0]), float(c[1]), _fold_angle(ang)


def structure_axis(grey: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Dominant line direction (deg) inside ``box`` from the structure tensor (normal = mean gradient)."""
    x1, y1, x2, y2 = _int_box(box, grey.shape)
    roi = cv2.GaussianBlur(grey[y1:y2, x1:x2].astype(np.float32), (0, 0), 1.5)
    gx = cv2.Sobel(roi, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(roi, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    normal = 0.5 * math.degrees(math.atan2(2 * jxy, jxx - jyy))
    return _fold_angle(normal + 90.0)


def _fold_angle(a: float) -> float:
    """An axis direction folded into (-90, 90] degrees."""
    a = (a + 90.0) % 180.0 - 90.0
    return 90.0 if a == -90.0 else a


def _int_box(box, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x1, y1, x2, y2 = box
    return (max(0, int(math.floor(x1))), max(0, int(math.floor(y1))),
            min(w, int(math.ceil(x2))), min(h, int(math.ceil(y2))))


def check_box(box, shape, name: str = "image") -> tuple[float, float, float, float]:
    """Validate an ``(x1, y1, x2, y2)`` px box against an image of ``shape``; clip a slight overhang."""
    h, w = shape[:2]
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise FetalDetectError(f"{name}: box must be four numbers x1,y1,x2,y2 in px, got {box!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise FetalDetectError(f"{name}: box {x1:g},{y1:g},{x2:g},{y2:g} is empty (need x2 > x1 and y2 > y1)")
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        raise FetalDetectError(f"{name}: box {x1:g},{y1:g},{x2:g},{y2:g} lies outside the {w}x{h} px image")
    cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
    if (cx2 - cx1) < 4 or (cy2 - cy1) < 4:
        raise FetalDetectError(f"{name}: box {x1:g},{y1:g},{x2:g},{y2:g} has under 4 px inside the {w}x{h} px image")
    return cx1, cy1, cx2, cy2


# ----------------------------------------------------------------------------------------------
# tracing


def _profiles(img: np.ndarray, cx, cy, angle_deg, s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Bilinear samples ``P[i, j]`` at along-axis ``s[i]`` and across-axis ``n[j]`` (px)."""
    t = math.radians(angle_deg)
    c, sn = math.cos(t), math.sin(t)
    S, N = np.meshgrid(s, n, indexing="ij")
    x = cx + S * c - N * sn
    y = cy + S * sn + N * c
    return ndimage.map_coordinates(img, [y, x], order=1, mode="nearest")


def _first_crossing(P: np.ndarray, start: np.ndarray, stop: np.ndarray, thr: np.ndarray, n: np.ndarray,
                    direction: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first index from ``start`` towards ``stop`` (``direction`` +1/-1) where P >= thr,
    refined by linear interpolation with the previous sample. Returns (n position px, found)."""
    idx = np.arange(P.shape[1])[None, :]
    if direction > 0:
        cond = (idx > start[:, None]) & (idx <= stop[:, None]) & (P >= thr[:, None])
        j = np.argmax(cond, 1)
        prev = np.maximum(j - 1, 0)
    else:
        cond = (idx < start[:, None]) & (idx >= stop[:, None]) & (P >= thr[:, None])
        j = P.shape[1] - 1 - np.argmax(cond[:, ::-1], 1)
        prev = np.minimum(j + 1, P.shape[1] - 1)
    found = cond.any(1)
    rows = np.arange(P.shape[0])
    pj, pp = P[rows, j], P[rows, prev]
    frac = np.clip((thr - pp) / np.where(np.abs(pj - pp) > 1e-9, pj - pp, 1e-9), 0, 1)
    pos = n[prev] + frac * (n[j] - n[prev])
    return pos, found


def trace_band(grey: np.ndarray, box: tuple[float, float, float, float], mask: np.ndarray | None = None,
               angle_deg: float | None = None, smooth_px: float = 1.0, average_px: int = 5,
               refine: bool = True, gap_prior: float | None = GAP_PRIOR) -> BandTrace:
    """Trace the NT band inside ``box`` (x1, y1, x2, y2 px) of a grey image; see the module docstring.

    ``mask`` (the band from a segmentation model, image size) gives the axis and the band centre;
    ``angle_deg`` forces the axis. ``smooth_px`` is the Gaussian sigma applied first and
    ``average_px`` the number of neighbouring profiles averaged.
    """
    box = check_box(box, grey.shape)
    x1, y1, x2, y2 = box
    img = grey.astype(np.float32)
    if smooth_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), smooth_px)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ang = angle_deg
    if mask is not None and mask.any():
        m_in = np.zeros(mask.shape, bool)
        xi1, yi1, xi2, yi2 = _int_box(box, mask.shape)
        m_in[yi1:yi2, xi1:xi2] = mask[yi1:yi2, xi1:xi2] > 0
        ax = mask_axis(m_in if m_in.sum() >= 5 else mask > 0)
        if ax is not None:
            cx, cy = ax[0], ax[1]
            ang = ax[2] if ang is None else ang
    if ang is None:
        ang = structure_axis(grey, box)
    trace = _consistent(_trace(img, box, cx, cy, ang, average_px, gap_prior))
    for _ in range(2 if refine else 0):
        v = trace.valid
        if v.sum() < 8:
            break
        # refine the axis: a straight line through the traced band centre
        mid = (trace.lo[v] + trace.hi[v]) / 2
        slope, icpt = np.polyfit(trace.s[v], mid, 1)
        new_ang = _fold_angle(trace.angle_deg + math.degrees(math.atan(slope)))
        s0 = float(np.median(trace.s[v]))
        ccx, ccy = trace.to_xy([s0], [icpt + slope * s0])[0]
        if abs(new_ang - trace.angle_deg) > 30:
            break
        new = _consistent(_trace(img, box, float(ccx), float(ccy), new_ang, average_px, gap_prior))
        if new.valid.sum() < trace.valid.sum():  # keep the refinement only when it explains more profiles
            break
        trace = new
    return trace


def _consistent(trace: BandTrace, window: int = 9) -> BandTrace:
    """Drop profiles whose centre leaves a robust straight band line or whose borders jump away from
    their running median (speckle, or another dark structure entering the ROI at its ends)."""
    v = trace.valid.copy()
    if v.sum() < 5:
        return trace
    mid, th = (trace.lo + trace.hi) / 2, trace.hi - trace.lo
    for _ in range(3):  # iteratively re-weighted line fit through the centres
        coef = np.polyfit(trace.s[v], mid[v], 1)
        res = mid - np.polyval(coef, trace.s)
        mad = float(np.median(np.abs(res[v]))) * 1.4826
        tol = max(2.0, 3.0 * mad, 0.35 * float(np.median(th[v])))
        v = trace.valid & (np.abs(res) <= tol)
        if v.sum() < 5:
            return trace
    idx = np.flatnonzero(v)
    window = max(window, (len(idx) // 4) | 1)  # wide enough that a short run of wrong profiles is outvoted
    for border in (trace.lo, trace.hi):
        med = ndimage.median_filter(border[idx], size=min(window, len(idx)), mode="nearest")
        tol = max(1.5, 0.25 * float(np.median(th[idx])))
        v[idx[np.abs(border[idx] - med) > tol]] = False
    trace.valid = v
    return trace


def _trace(img: np.ndarray, box, cx: float, cy: float, ang: float, average_px: int,
           gap_prior: float | None = GAP_PRIOR) -> BandTrace:
    x1, y1, x2, y2 = box
    t = math.radians(ang)
    c, sn = math.cos(t), math.sin(t)
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]]) - [cx, cy]
    s_c = corners @ np.array([c, sn])
    n_c = corners @ np.array([-sn, c])
    half_n = (n_c.max() - n_c.min()) / 2
    margin = max(4.0, 0.35 * half_n)  # the bright lines may sit on or just outside the box edge
    # profiles whose centre stays inside the box: the axis line through (cx, cy) clipped to the box
    s_lo, s_hi = s_c.min(), s_c.max()
    for d, lo_edge, hi_edge, cc in ((c, x1, x2, cx), (sn, y1, y2, cy)):
        if abs(d) > 1e-6:
            a, b = sorted(((lo_edge - cc) / d, (hi_edge - cc) / d))
            s_lo, s_hi = max(s_lo, a), min(s_hi, b)
    s = np.arange(math.ceil(s_lo), math.floor(s_hi) + 1, STEP_S_PX, dtype=np.float64)
    n_mid = (n_c.max() + n_c.min()) / 2
    n = np.arange(n_mid - half_n - margin, n_mid + half_n + margin + 1e-9, STEP_N_PX)
    if len(s) < 3 or len(n) < 8:
        raise FetalDetectError("the NT region is too small to measure (under 3 px along or 2 px across)", status=422)
    P = _profiles(img, cx, cy, ang, s, n)
    if average_px > 1:
        P = ndimage.uniform_filter1d(P, average_px, axis=0, mode="nearest")
    # gap centre: the deepest valley bounded by brighter samples on *both* sides. A grey closing
    # over the whole profile width fills every such valley; closing - profile is its depth.
    Pw = ndimage.gaussian_filter1d(P, 1.0 / STEP_N_PX, axis=1, mode="nearest")
    depth = ndimage.grey_closing(Pw, size=(1, len(n))) - Pw
    inner = np.abs(n - n_mid) <= 0.8 * half_n
    if gap_prior:  # prefer the valley near the box's centre line: another dark layer at the box edge loses
        depth = depth * np.exp(-0.5 * ((n - n_mid) / (gap_prior * half_n)) ** 2)[None, :]
    imin = np.argmax(np.where(inner[None, :], depth, -np.inf), 1)
    rows = np.arange(len(s))
    win = 3  # gap level: mean of the original profile around the minimum (+-0.75 px)
    gi = np.clip(imin[:, None] + np.arange(-win, win + 1)[None, :], 0, len(n) - 1)
    gap = P[rows[:, None], gi].mean(1)
    idx = np.arange(len(n))[None, :]
    right = np.where(idx > imin[:, None], P, -np.inf)
    left = np.where(idx < imin[:, None], P, -np.inf)
    ipk_r, ipk_l = np.argmax(right, 1), np.argmax(left, 1)
    pk_r, pk_l = P[rows, ipk_r], P[rows, ipk_l]
    thr_r, thr_l = (gap + pk_r) / 2, (gap + pk_l) / 2
    hi, f_r = _first_crossing(P, imin, ipk_r, thr_r, n, +1)
    lo, f_l = _first_crossing(P, imin, ipk_l, thr_l, n, -1)
    contrast = np.minimum(pk_r, pk_l) - gap
    roi = img[int(max(0, y1)):int(y2), int(max(0, x1)):int(x2)]
    spread = float(np.percentile(roi, 99) - np.percentile(roi, 1)) if roi.size else 0.0
    valid = f_r & f_l & (contrast > max(8.0, 0.2 * spread)) & (hi > lo)
    return BandTrace(cx, cy, ang, s, lo, hi, valid, contrast, gap)


# ----------------------------------------------------------------------------------------------
# thickness


def main_run(valid: np.ndarray, max_gap: int = 3, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
             jump_px: float | None = None) -> np.ndarray:
    """Indices of the longest run of valid profiles (gaps of up to ``max_gap`` profiles bridged).

    With the borders ``lo``/``hi`` a run also ends where either border jumps by more than ``jump_px``
    (default: max(2 px, 20 % of the median thickness)) between neighbouring valid profiles: a
    membrane is continuous, a jump means the trace left the band.
    """
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        return idx
    cut = np.diff(idx) > max_gap + 1
    if lo is not None and hi is not None and len(idx) > 1:
        tol = jump_px if jump_px is not None else max(2.0, 0.2 * float(np.median(hi[idx] - lo[idx])))
        cut |= (np.abs(np.diff(lo[idx])) > tol) | (np.abs(np.diff(hi[idx])) > tol)
    runs = np.split(idx, np.flatnonzero(cut) + 1)
    return max(runs, key=len)


def max_thickness(trace: BandTrace, filter_px: int = 9) -> tuple[float, int] | None:
    """(maximum thickness px, profile index) over the longest run of valid profiles: the maximum of
    the thickness curve after a running median over ``filter_px`` profiles (one noisy profile, or
    the tapering band end, cannot set the maximum)."""
    idx = main_run(trace.valid, lo=trace.lo, hi=trace.hi)
    if len(idx) < 3:
        return None
    t = trace.hi[idx] - trace.lo[idx]
    k = min(filter_px, len(t) if len(t) % 2 else len(t) - 1)
    tm = ndimage.median_filter(t, size=max(1, k), mode="nearest")
    j = int(np.argmax(tm))
    return float(tm[j]), int(idx[j])


def measure_nt(grey: np.ndarray, box: tuple[float, float, float, float], pixel_size_mm: float | None = None,
               mask: np.ndarray | None = None, model_confidence: float | None = None,
               gap_prior: float | None = GAP_PRIOR) -> dict:
    """NT thickness inside ``box`` (x1, y1, x2, y2 px): ``nt_mm`` (or ``nt_px`` without a pixel size),
    the two caliper points (x, y px), band axis, coverage and a 0..1 ``confidence``.

    Raises :class:`FetalDetectError` (422) when no band bounded by two bright lines is found.
    """
    if pixel_size_mm is not None and not (pixel_size_mm > 0 and math.isfinite(pixel_size_mm)):
        raise FetalDetectError(f"pixel size must be a positive number of mm, got {pixel_size_mm}")
    if grey.ndim == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_BGR2GRAY)
    trace = trace_band(grey, box, mask=mask, gap_prior=gap_prior)
    best = max_thickness(trace)
    if best is None:
        raise FetalDetectError("no NT found: no dark band between two bright lines inside the region", status=422)
    nt_px, j = best
    run = main_run(trace.valid, lo=trace.lo, hi=trace.hi)
    mid = (trace.lo[j] + trace.hi[j]) / 2
    p1, p2 = trace.to_xy([trace.s[j]] * 2, [mid - nt_px / 2, mid + nt_px / 2])
    coverage = float(len(run) / len(trace.s))  # share of the box length traced as one band
    spread = float(np.nanpercentile(trace.contrast[trace.valid], 50)) if trace.valid.any() else 0.0
    quality = coverage * min(1.0, spread / 60.0)
    conf = quality if model_confidence is None else quality * float(model_confidence)
    out = {"calipers": [[round(float(v), 2) for v in p1], [round(float(v), 2) for v in p2]],
           "axis_angle_deg": round(trace.angle_deg, 2), "box_xyxy": [round(float(v), 1) for v in box],
           "profiles": int(len(trace.s)), "profiles_valid": int(trace.valid.sum()),
           "coverage": round(coverage, 3), "confidence": round(float(conf), 4), "nt_px": round(nt_px, 3),
           # band borders as (N x 2) px arrays (dropped from JSON by pipeline.public, drawn on overlays)
           "band_upper_xy": trace.to_xy(trace.s[run], trace.lo[run]),
           "band_lower_xy": trace.to_xy(trace.s[run], trace.hi[run])}
    if pixel_size_mm is None:
        out.update(units="px", note="no pixel size given: NT is in pixels; pass --pixel-size MM for mm")
    else:
        out.update(units="mm", pixel_size_mm=pixel_size_mm, nt_mm=round(nt_px * pixel_size_mm, 3))
    return out
