"""The tick-level steps of :func:`fetal_detect.measure.ruler.read_ruler`: tick filters, periodicity, tick
positions and the regular-spacing fit, and the tick-length pattern.

``tick_response`` / ``bottom_response`` pick out tick-like marks; ``column_scores`` ranks candidate columns
by the autocorrelation of their tick profile and ``first_period`` finds a profile's fundamental period;
``peaks``, ``merge_peaks`` and ``tick_geometry`` locate the ticks (sub-pixel); ``fit_ticks`` /
``regular_ticks`` fit y = a + spacing * k over them; ``tick_pattern`` / ``alternates`` read the tick
lengths (major ticks, short/long alternation) from which the tick interval is inferred.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def tick_response(grey: np.ndarray) -> np.ndarray:
    """Brightness of small marks (< 9 px tall, < 21 px long) above their surroundings: ticks stay, long
    echoes (tissue streaks, the sector edge) and tall blobs go."""
    tall = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (1, 9)))
    wide = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (21, 1)))
    return np.minimum(tall, wide).astype(np.float32)


def bottom_response(strip: np.ndarray) -> np.ndarray:
    """Ticks of a horizontal ruler (short vertical marks, bright on black or dark over the image) in a
    bottom strip, transposed so that the ruler runs down the columns like a depth ruler."""
    t = np.ascontiguousarray(strip.T)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (1, 7))
    return np.maximum(cv2.morphologyEx(t, cv2.MORPH_TOPHAT, kernel),
                      cv2.morphologyEx(t, cv2.MORPH_BLACKHAT, kernel)).astype(np.float32)


def column_scores(resp: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the highest normalised autocorrelation of its tick profile at lags in [lo, hi], and that lag."""
    p = np.clip((resp - 20.0) / 40.0, 0.0, 1.0)
    h, w = p.shape
    score, lag = np.zeros(w), np.zeros(w)
    lags = np.arange(int(lo), int(hi) + 1)
    lags = lags[lags < h]
    cols = np.flatnonzero((p * p).sum(axis=0) >= 3.0)  # fewer than ~3 full ticks of energy: not a ruler column
    if lags.size == 0 or cols.size == 0:
        return score, lag
    n = 1 << int(math.ceil(math.log2(2 * h)))
    f = np.fft.rfft(p[:, cols], n=n, axis=0)
    ac = np.fft.irfft(f.real ** 2 + f.imag ** 2, n=n, axis=0)[:h]
    acn = ac[lags] / np.maximum(ac[0], 1e-6)
    best = acn.argmax(axis=0)
    score[cols], lag[cols] = acn[best, np.arange(cols.size)], lags[best]
    return score, lag


def first_period(prof: np.ndarray, lo: float, hi: float) -> float | None:
    """Fundamental period of a tick profile: the smallest autocorrelation peak >= 0.6 x the best one."""
    p = np.clip((prof - 20.0) / 40.0, 0.0, 1.0)
    h = p.size
    ac = np.correlate(p, p, mode="full")[h - 1:]
    if ac[0] <= 0:
        return None
    ac = ac / ac[0]
    lo_i, hi_i = max(int(lo), 2), min(int(hi), h - 2)
    if hi_i <= lo_i:
        return None
    seg = ac[lo_i:hi_i + 1]
    top = seg.max()
    if top <= 0.2:
        return None
    for i in range(lo_i, hi_i + 1):
        if ac[i] >= 0.6 * top and ac[i] >= ac[i - 1] and ac[i] >= ac[i + 1]:
            y0, y1, y2 = ac[i - 1], ac[i], ac[i + 1]
            den = y0 - 2 * y1 + y2
            return i + (0.5 * (y0 - y2) / den if den < 0 else 0.0)
    return None


def peaks(prof: np.ndarray, thr: float) -> np.ndarray:
    """Indices of local maxima of ``prof`` >= thr (plateaus: their first row)."""
    left = np.r_[-np.inf, prof[:-1]]
    right = np.r_[prof[1:], -np.inf]
    return np.flatnonzero((prof >= thr) & (prof > left) & (prof >= right))


def tick_geometry(resp: np.ndarray, y: int, x: int, thr: float) -> tuple[float, float, int, int]:
    """Sub-pixel centre (x, y) and horizontal extent [x1, x2] of the tick through (x, y)."""
    h, w = resp.shape
    row = resp[y]
    lim = max(thr, 0.4 * row[x])
    x1 = x
    while x1 > 0 and row[x1 - 1] >= lim:
        x1 -= 1
    x2 = x
    while x2 < w - 1 and row[x2 + 1] >= lim:
        x2 += 1
    ys = slice(max(y - 3, 0), min(y + 4, h))
    patch = resp[ys, x1:x2 + 1]
    wts = np.clip(patch - 0.3 * row[x], 0, None).sum(axis=1)
    rows = np.arange(ys.start, ys.stop, dtype=np.float64)
    yc = float((rows * wts).sum() / wts.sum()) if wts.sum() > 0 else float(y)
    return (x1 + x2) / 2.0, yc, x1, x2


def fit_ticks(ys: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Tick indices, inlier mask, offset and spacing of the line y = a + spacing * k (robust, iterated)."""
    best = None
    tol = max(1.5, 0.1 * period)
    for anchor in ys:
        k = np.round((ys - anchor) / period)
        r = np.abs(ys - anchor - k * period)
        score = (np.unique(k[r < tol]).size, -float(np.minimum(r, tol).sum()))
        if best is None or score > best[0]:
            best = (score, anchor)
    a, t = best[1], period
    inl = np.ones(ys.size, bool)
    k = np.zeros(ys.size)
    for _ in range(4):
        k = np.round((ys - a) / t)
        r = ys - a - k * t
        inl = np.abs(r) < max(1.5, 0.1 * t)
        # one tick per index: the nearest
        for kk in np.unique(k[inl]):
            idx = np.flatnonzero(inl & (k == kk))
            if idx.size > 1:
                keep = idx[np.argmin(np.abs(r[idx]))]
                inl[idx] = False
                inl[keep] = True
        if inl.sum() < 2:
            break
        t, a = np.polyfit(k[inl], ys[inl], 1)
    return k, inl, float(a), float(t)


def longest_run(k: np.ndarray, max_gap: int = 2) -> np.ndarray:
    """Mask of the longest run of sorted tick indices with at most ``max_gap`` missing ticks between neighbours."""
    order = np.argsort(k)
    ks = k[order]
    runs, start = [], 0
    for i in range(1, ks.size + 1):
        if i == ks.size or ks[i] - ks[i - 1] > max_gap + 1:
            runs.append((start, i))
            start = i
    s, e = max(runs, key=lambda r: r[1] - r[0])
    mask = np.zeros(k.size, bool)
    mask[order[s:e]] = True
    return mask


def tick_pattern(lengths: np.ndarray, k: np.ndarray) -> str:
    """Tick-length pattern along the ruler: 'major every 5' / 'major every 10' (long ticks every N ticks),
    '+ alternating' when every other tick is longer (1 cm marks over 5 mm ticks), or 'uniform'."""
    k = k.astype(int)
    med = float(np.median(lengths))
    parts = []
    if lengths.size >= 4 and lengths.max() >= 1.8 * max(med, 1.0):
        long_k = np.sort(k[lengths >= 0.5 * (lengths.max() + med)])
        if long_k.size >= 2:
            step = int(np.gcd.reduce(np.diff(long_k)))
            if step in (2, 5, 10):
                parts.append(f"major every {step}")
        elif long_k.size == 1:
            parts.append("one major")
    short = lengths < 0.5 * (lengths.max() + med) if parts else np.ones(lengths.size, bool)
    even, odd = lengths[short & (k % 2 == 0)], lengths[short & (k % 2 == 1)]
    if even.size >= 2 and odd.size >= 2:
        lo, hi = sorted((even, odd), key=np.mean)
        if hi.min() > lo.max():
            parts.append("alternating")
    return " + ".join(parts) or "uniform"


def alternates(lengths: np.ndarray, k: np.ndarray) -> bool:
    """Every other tick clearly longer (ignoring a single longest centre tick)."""
    k = k.astype(int)
    keep = lengths < lengths.max() if (lengths == lengths.max()).sum() == 1 else np.ones(lengths.size, bool)
    even, odd = lengths[keep & (k % 2 == 0)], lengths[keep & (k % 2 == 1)]
    if even.size < 2 or odd.size < 2:
        return False
    short, long_ = sorted((even, odd), key=np.median)
    return np.median(long_) >= 1.4 * np.median(short) and np.mean(long_ > np.median(short) * 1.2) >= 0.75


def merge_peaks(pk: np.ndarray, prof: np.ndarray, gap: int = 3) -> np.ndarray:
    """Peaks closer than ``gap`` px are one tick seen twice: keep the stronger."""
    merged: list[int] = []
    for p in pk:
        if merged and p - merged[-1] < gap:
            if prof[p] > prof[merged[-1]]:
                merged[-1] = int(p)
        else:
            merged.append(int(p))
    return np.array(merged, int)


def regular_ticks(ys: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Fit ticks to y = a + t * k; keep the longest nearly gap-free run of inliers."""
    k, inl, a, t = fit_ticks(ys, period)
    if inl.sum() >= 2:
        run = np.zeros_like(inl)
        run[inl] = longest_run(k[inl])
        inl = run
    if inl.sum() >= 2:
        t, a = np.polyfit(k[inl], ys[inl], 1)
    return k, inl, float(a), float(t)
