"""The sparse dot column at the right edge of a zoomed view (Siemens layout): 3-4 crisp dots, often drawn
over tissue, 1 cm (or 5 mm, with dashes half-way) apart.

:func:`dot_column` finds such a column where the tick reader (:mod:`fetal_detect.measure.ruler_ticks`) sees
too few marks: small bright dots are picked out by a top-hat with a 5 x 5 disc (speckle and echoes are
wider and stay in the opening), grouped into columns, and one column is accepted only when at least three
dots sit exactly on a regular grid (residual <= 0.75 px, at most one hidden, spanning >= 40 % of the height)
with no stray dot between them except half-way (dashes). Its interval is ambiguous by nature, so the
result carries the spacing only; the caller asks for the interval.
"""
from __future__ import annotations

import cv2
import numpy as np

DOT_CONTRAST = 60.0  # grey levels a dot stands above its surroundings after the top-hat
MIN_DOTS = 3
MAX_RESID_PX = 0.75
MIN_SPAN = 0.4  # share of the image height the dots must span
MIN_SPACING_PX = 40.0
MAX_MISSING = 1  # one dot hidden (under the focus marker, say) between the ends


def _dots(strip: np.ndarray) -> np.ndarray:
    """(x, y) sub-pixel centres of small bright dots in ``strip``."""
    th = cv2.morphologyEx(strip, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    th = th.astype(np.float32)
    mx = cv2.dilate(th, np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero((th >= DOT_CONTRAST) & (th >= mx))
    out: list[tuple[float, float]] = []
    for x, y in zip(xs, ys):
        if out and any(abs(x - ox) <= 2 and abs(y - oy) <= 2 for ox, oy in out[-4:]):
            continue  # a flat-topped dot: one maximum per dot
        y0, y1, x0, x1 = max(y - 2, 0), y + 3, max(x - 2, 0), x + 3
        p = th[y0:y1, x0:x1]
        wsum = p.sum()
        gy, gx = np.mgrid[y0:y0 + p.shape[0], x0:x0 + p.shape[1]]
        out.append(((gx * p).sum() / wsum, (gy * p).sum() / wsum))
    return np.array(out, np.float64).reshape(-1, 2)


def dot_column(grey: np.ndarray, x0: int) -> tuple[float, list[list[float]], float] | None:
    """(spacing px, dots [[x, y]] in image coordinates, rms px) of the best regular dot column in
    ``grey`` (a strip starting at image column ``x0``), or None."""
    h = grey.shape[0]
    pts = _dots(grey)
    if len(pts) < MIN_DOTS:
        return None
    best = None
    for cx in np.unique(np.round(pts[:, 0])):
        col = pts[np.abs(pts[:, 0] - cx) <= 1.5]
        col = col[np.argsort(col[:, 1])]
        if len(col) < MIN_DOTS:
            continue
        ys = col[:, 1]
        for i in range(len(ys)):
            for j in range(i + 1, len(ys)):
                t = ys[j] - ys[i]
                if t < MIN_SPACING_PX:
                    continue
                k = np.round((ys - ys[i]) / t)
                on = np.abs(ys - ys[i] - k * t) <= 2.0
                ks = np.unique(k[on])
                if ks.size < MIN_DOTS or ks.max() - ks.min() + 1 - ks.size > MAX_MISSING:
                    continue
                sel = on & (k >= ks.min()) & (k <= ks.max())
                if np.unique(k[sel]).size != sel.sum():
                    continue
                tt, a = np.polyfit(k[sel], ys[sel], 1)
                resid = ys[sel] - (a + tt * k[sel])
                inside = (ys > ys[sel].min() + 2) & (ys < ys[sel].max() - 2) & ~sel
                phase = ((ys[inside] - a) / tt) % 1  # half-way: dashes; on the grid: what hides a dot
                half = (np.abs(phase - 0.5) <= 0.05) | (np.minimum(phase, 1 - phase) <= 0.1)
                if (np.abs(resid).max() > MAX_RESID_PX or (ks.size - 1) * tt < MIN_SPAN * h
                        or not half.all() or np.std(col[sel, 0]) > 0.75):
                    continue
                cand = (int(sel.sum()), -float(np.sqrt(np.mean(resid ** 2))), float(tt),
                        [[float(x) + x0, float(y)] for x, y in col[sel]])
                if best is None or cand[:2] > best[:2]:
                    best = cand
    if best is None:
        return None
    return best[2], best[3], -best[1]
