"""Pixel size (mm/px) from the scanner's on-screen depth ruler: a column of small, regularly spaced ticks.

``read_ruler(grey, interval_mm=5.0)`` returns a :class:`Ruler`: ``pixel_size_mm`` (None when refused),
``reason``, the ticks used (x, y in px), the fitted spacing in px, a confidence and the tick pattern.
``draw_ruler(image, ruler)`` draws the ticks used (the overlay people check it by).

How: thin horizontal marks are picked out with a vertical white top-hat; every candidate column near
the left and right image edges is scored by the autocorrelation of its tick profile (one FFT for all
columns); in the best column the ticks are located to sub-pixel precision (intensity centroids) and the
spacing is the slope of a least-squares line through tick position vs tick index, over all ticks.
Refuses (``pixel_size_mm`` None, with a reason) rather than guess: no periodic tick column, fewer than
``min_ticks`` ticks, irregular gaps (fit residuals), ticks not aligned in a column, or a pixel size outside
the plausible range. ``interval_mm`` is the distance between neighbouring ticks (5 mm on the scanners
in ../shared/data; give 10 for rulers with 1 cm ticks only). A wrong scale is worse than none.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

DEFAULT_INTERVAL_MM = 5.0
MIN_TICKS = 5
PLAUSIBLE_MM = (0.02, 1.0)  # mm per px of a B-mode screenshot; anything else is refused
EDGE_FRACTION = 0.25  # rulers are searched in this share of the width on each side
BOTTOM_FRACTION = 0.06  # and a horizontal ruler in this share of the height at the bottom
MIN_CONTRAST = 50.0  # grey levels a tick stands above its surroundings (speckle in tissue: ~20-50)
MIN_PERIOD_PX = 15.0
MAX_SIDE_PX = 2048  # ticks closer than this are not a readable depth ruler


@dataclass
class Ruler:
    """The outcome of :func:`read_ruler`; ``pixel_size_mm`` is None when refused (``reason`` says why)."""

    pixel_size_mm: float | None
    reason: str
    source: str | None = None
    interval_mm: float | None = DEFAULT_INTERVAL_MM
    interval_from: str | None = None  # "user" or "default" (5 mm ticks)
    spacing_px: float | None = None
    ticks: list[list[float]] = field(default_factory=list)  # [x, y] px of each tick used
    confidence: float = 0.0
    side: str | None = None  # "left" / "right" image edge
    rms_px: float | None = None
    pattern: str | None = None  # "uniform", "alternating", "major every N", ...
    x_spread_px: float | None = None  # how well the ticks line up in one column (std of their inner end)
    contrast: float | None = None  # median tick brightness above its surroundings (grey levels)

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("pixel_size_mm", "spacing_px", "rms_px", "confidence", "x_spread_px", "contrast"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 6 if k == "pixel_size_mm" else 3)
        d["ticks"] = [[round(x, 1), round(y, 2)] for x, y in self.ticks]
        return d


def _refuse(reason: str, interval_mm: float | None, **kw) -> Ruler:
    return Ruler(None, reason, None, interval_mm, **kw)


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


def _column_scores(resp: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
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


def _first_period(prof: np.ndarray, lo: float, hi: float) -> float | None:
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


def _peaks(prof: np.ndarray, thr: float) -> np.ndarray:
    """Indices of local maxima of ``prof`` >= thr (plateaus: their first row)."""
    left = np.r_[-np.inf, prof[:-1]]
    right = np.r_[prof[1:], -np.inf]
    return np.flatnonzero((prof >= thr) & (prof > left) & (prof >= right))


def _tick_geometry(resp: np.ndarray, y: int, x: int, thr: float) -> tuple[float, float, int, int]:
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


def _fit(ys: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray, float, float]:
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


def _longest_run(k: np.ndarray, max_gap: int = 2) -> np.ndarray:
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


def _pattern(lengths: np.ndarray, k: np.ndarray) -> str:
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


def _alternates(lengths: np.ndarray, k: np.ndarray) -> bool:
    """Every other tick clearly longer (ignoring a single longest centre tick)."""
    k = k.astype(int)
    keep = lengths < lengths.max() if (lengths == lengths.max()).sum() == 1 else np.ones(lengths.size, bool)
    even, odd = lengths[keep & (k % 2 == 0)], lengths[keep & (k % 2 == 1)]
    if even.size < 2 or odd.size < 2:
        return False
    short, long_ = sorted((even, odd), key=np.median)
    return np.median(long_) >= 1.4 * np.median(short) and np.mean(long_ > np.median(short) * 1.2) >= 0.75


def auto_interval_mm(pattern: str | None, side: str = "left") -> float | None:
    """Tick interval implied by the tick pattern, or None when the pattern is ambiguous.

    The horizontal ruler along the bottom edge (``side="bottom"``) alternates short and long ticks
    (or shows minor ticks half-way) when they are 5 mm apart and has plain ticks (a longer centre tick at
    most) when they are 1 cm apart.
    On a vertical depth ruler:

    Alternating tick lengths (1 cm marks over 5 mm ticks) and long ticks every 10 ticks (5 cm) mean
    5 mm ticks; plain ticks are taken as 5 mm (the scanners in ../shared/data). Long ticks every 5 with
    nothing in between occur with 1 cm ticks (5 cm majors) and with 5 mm ticks (2.5 cm majors) on the
    same scanner: ambiguous, so None (refused unless the user gives the interval).
    """
    pattern = pattern or "uniform"
    if side == "bottom":
        return DEFAULT_INTERVAL_MM if pattern.startswith("alternating") else 10.0
    return None if pattern.startswith("major every 5") else DEFAULT_INTERVAL_MM


def _merge(pk: np.ndarray, prof: np.ndarray, gap: int = 3) -> np.ndarray:
    """Peaks closer than ``gap`` px are one tick seen twice: keep the stronger."""
    merged: list[int] = []
    for p in pk:
        if merged and p - merged[-1] < gap:
            if prof[p] > prof[merged[-1]]:
                merged[-1] = int(p)
        else:
            merged.append(int(p))
    return np.array(merged, int)


def _regular(ys: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Fit ticks to y = a + t * k; keep the longest nearly gap-free run of inliers."""
    k, inl, a, t = _fit(ys, period)
    if inl.sum() >= 2:
        run = np.zeros_like(inl)
        run[inl] = _longest_run(k[inl])
        inl = run
    if inl.sum() >= 2:
        t, a = np.polyfit(k[inl], ys[inl], 1)
    return k, inl, float(a), float(t)


def _candidate(resp: np.ndarray, x: int, period_guess: float, interval_mm: float, min_ticks: int,
               side: str, offset: int) -> Ruler:
    """Ticks, fit and checks in column ``x`` of ``resp`` (a strip; ``offset`` maps x to the image)."""
    h, w = resp.shape
    xa = max(x - 2, 0)
    band = resp[:, xa:min(x + 3, w)]
    prof = band.max(axis=1)
    lo, hi = MIN_PERIOD_PX, h / (min_ticks - 1)
    period = _first_period(prof, max(lo, 0.55 * period_guess), hi) or period_guess
    weak = _merge(_peaks(prof, 20.0), prof)
    if weak.size < min_ticks:
        return _refuse(f"too few tick-like marks ({weak.size}) in the best column", interval_mm, side=side)
    thr = max(20.0, 0.35 * float(np.median(np.sort(prof[weak])[::-1][:min_ticks])))
    pk = weak[prof[weak] >= thr]
    if pk.size < 3:
        return _refuse(f"too few ticks ({pk.size} < {min_ticks})", interval_mm, side=side)
    geo_of = {int(p): _tick_geometry(resp, int(p), int(band[p].argmax()) + xa, 20.0) for p in weak}
    ys = np.array([geo_of[int(p)][1] for p in pk])
    k, inl, a, t = _regular(ys, period)
    pattern = None
    if inl.sum() >= 3:  # minor ticks half-way between the ticks found (1 cm majors over 5 mm minors)?
        yw = np.array([geo_of[int(p)][1] for p in weak])
        mids = a + t * (np.arange(k[inl].min(), k[inl].max()) + 0.5)
        hit = np.array([np.abs(yw - m).min() < max(1.5, 0.06 * t) for m in mids])
        if hit.size >= 2 and hit.mean() >= 0.7 and t / 2 >= MIN_PERIOD_PX:
            pk, ys = weak, yw
            k, inl, a, t = _regular(ys, t / 2)
            pattern = "minor ticks half-way"
    n = int(inl.sum())
    if n < min_ticks:
        return _refuse(f"too few regularly spaced ticks ({n} < {min_ticks})", interval_mm, side=side)
    geo = [geo_of[int(p)] for p in pk]
    for _ in range(2):  # a tick pulled by an echo under it: drop the worst one (at most two), keep >= 7
        r_all = np.where(inl, ys - (a + t * k), 0.0)
        worst = int(np.argmax(np.abs(r_all)))
        if inl.sum() < 7 or abs(r_all[worst]) <= max(1.5, 0.05 * t):
            break
        inl[worst] = False
        t, a = np.polyfit(k[inl], ys[inl], 1)
    n = int(inl.sum())
    resid = ys[inl] - (a + t * k[inl])
    rms = float(np.sqrt(np.mean(resid ** 2)))
    kin = k[inl]
    span = int(kin.max() - kin.min()) + 1
    x1s = np.array([g[2] for g in geo])[inl] + offset
    x2s = np.array([g[3] for g in geo])[inl] + offset
    ticks = [[g[0] + offset, g[1]] if side != "bottom" else [g[1], g[0] + offset] for g, ok in zip(geo, inl) if ok]
    strength = prof[pk]
    y_lo, y_hi = ys[inl].min() - 0.5 * t, ys[inl].max() + 0.5 * t
    others = (ys > y_lo) & (ys < y_hi) & ~inl & (strength >= 0.8 * np.median(strength[inl]))
    if pattern is None:  # marks half-way are minor ticks, not noise
        others &= np.abs(((ys - a) / t) % 1 - 0.5) > 0.1
    extra = int(others.sum())
    lengths = x2s - x1s + 1
    aligned = min(np.std(x1s), np.std(x2s))
    contrast = float(np.median(strength[inl]))
    kw = dict(side=side, spacing_px=float(abs(t)), ticks=ticks, rms_px=rms, x_spread_px=float(aligned),
              contrast=contrast)
    t = abs(t)
    if t < MIN_PERIOD_PX:
        return _refuse(f"tick spacing {t:.1f} px is too small to be a depth ruler", interval_mm, **kw)
    if rms > max(0.6, 0.025 * t) or np.abs(resid).max() > max(1.5, 0.05 * t):
        return _refuse(f"irregular tick gaps (rms {rms:.2f} px of {t:.1f} px spacing)", interval_mm, **kw)
    if n < 0.7 * span:
        return _refuse(f"ticks missing: {n} of {span} expected positions", interval_mm, **kw)
    if extra > max(2, 0.35 * n):
        return _refuse(f"{extra} marks between the ticks: not a clean ruler column", interval_mm, **kw)
    if aligned > 2.0:
        return _refuse(f"ticks not aligned in a column (x spread {aligned:.1f} px)", interval_mm, **kw)
    if contrast < MIN_CONTRAST:
        return _refuse(f"marks too faint for ruler ticks (contrast {contrast:.0f} < {MIN_CONTRAST})", interval_mm, **kw)
    if n < 6 and (aligned > 1.5 or span > n + 1 or rms > 0.01 * t):  # the fewest ticks: only a clean column
        return _refuse(f"only {n} ticks and they are not a clean column", interval_mm, **kw)
    if side != "bottom" and ((x1s <= offset).any() or (x2s >= offset + w - 1).any()):
        return _refuse("marks touch the image border: not ruler ticks", interval_mm, **kw)
    if np.median(lengths) > 40:
        return _refuse(f"marks {np.median(lengths):.0f} px long are not ruler ticks", interval_mm, **kw)
    if side == "bottom":  # only a clear short/long alternation says 5 mm here; read it from the tick heights
        alternating = _alternates(lengths, kin)
        if pattern and not alternating:
            return _refuse("marks half-way between the ticks are not minor ticks", interval_mm, **kw)
        pattern = "alternating" if alternating else "plain"
    else:
        pattern = _pattern(lengths, kin) + (f" ({pattern})" if pattern else "")
    if interval_mm is not None:
        interval, how = interval_mm, "user"
    else:
        interval, how = auto_interval_mm(pattern, side), "default"
        if interval is None:
            return _refuse("tick pattern fits both 5 mm and 1 cm ticks (long tick every 5): give the interval",
                           None, pattern=pattern, **kw)
    px = interval / t
    if not PLAUSIBLE_MM[0] <= px <= PLAUSIBLE_MM[1]:
        return _refuse(f"implausible pixel size {px:.4f} mm ({t:.1f} px per {interval:g} mm)", interval, **kw)
    conf = min(1.0, n / 10) * math.exp(-rms / max(0.5, 0.05 * t)) * (1 - extra / (n + extra)) * (n / span)
    return Ruler(px, f"{n} ticks {t:.2f} px apart ({interval:g} mm each, {how})", "ruler", interval, how, t,
                 ticks, round(conf, 3), side, rms, pattern, float(aligned), contrast)


def read_ruler(grey: np.ndarray, interval_mm: float | None = None, min_ticks: int = MIN_TICKS) -> Ruler:
    """Find the depth ruler on the left or right edge of ``grey`` and return its pixel size (or a refusal).

    ``interval_mm``: mm between neighbouring ticks; None (default) reads it from the tick pattern
    (:func:`auto_interval_mm`: 10 mm when long ticks come every 5 ticks, else 5 mm).
    """
    if interval_mm is not None and not (interval_mm > 0 and math.isfinite(interval_mm)):
        raise ValueError(f"interval_mm must be > 0, got {interval_mm}")
    if grey.ndim == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_BGR2GRAY)
    if grey.dtype != np.uint8:
        grey = cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    h, w = grey.shape
    if h < 6 * MIN_PERIOD_PX or w < 16:
        return _refuse(f"image {w}x{h} px is too small to carry a ruler", interval_mm)
    if max(h, w) > MAX_SIDE_PX:  # bounded time for any upload; screenshots are far smaller
        return _refuse(f"image {w}x{h} px is larger than {MAX_SIDE_PX} px: ruler not read", interval_mm)
    edge = max(8, int(round(EDGE_FRACTION * w)))
    lo, hi = MIN_PERIOD_PX, h / (min_ticks - 1)
    cands = []
    hb = max(24, int(round(BOTTOM_FRACTION * h)))
    strips = [("left", lambda: tick_response(grey[:, :edge]), 0, lo, hi),
              ("right", lambda: tick_response(grey[:, w - edge:]), w - edge, lo, hi),
              ("bottom", lambda: bottom_response(grey[h - hb:, :]), h - hb, lo, w / (min_ticks - 1))]
    for side, response, x0, lo, hi in strips:
        resp = response()
        score, lag = _column_scores(resp, lo, hi)
        order = np.argsort(score)[::-1]
        tried = []
        for x in order[:40]:
            if score[x] < 0.25 or len(tried) >= 6:
                break
            if any(abs(x - t) < 2 for t in tried):
                continue
            tried.append(int(x))
            cands.append((float(score[x]), _candidate(resp, int(x), float(lag[x]), interval_mm, min_ticks, side, x0)))
            if cands[-1][1].pixel_size_mm is not None:  # this side's ruler is read: the next columns are its edges
                break
    if not cands:
        return _refuse("no periodic tick column near the left or right edge", interval_mm)
    ok = [(s * r.confidence, r) for s, r in cands if r.pixel_size_mm is not None]
    if ok:
        ok.sort(key=lambda c: -c[0])
        best = ok[0][1]
        other = next(((sc, r) for sc, r in ok[1:] if r.side != best.side), None)
        if other and abs(other[1].pixel_size_mm / best.pixel_size_mm - 1) > 0.05 and other[0] > 0.5 * ok[0][0]:
            return _refuse(f"the {best.side} and {other[1].side} rulers disagree on the scale", interval_mm)
        return best
    cands.sort(key=lambda c: (-len(c[1].ticks), -c[0]))  # the refusal that came closest to a ruler
    return cands[0][1]


def draw_ruler(image: np.ndarray, ruler: Ruler | dict, color=(0, 220, 255)) -> np.ndarray:
    """BGR copy of ``image`` with the ruler ticks used marked and the pixel size written next to them."""
    r = ruler if isinstance(ruler, dict) else ruler.as_dict()
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    col = color if r.get("pixel_size_mm") else (60, 60, 255)
    for x, y in r.get("ticks") or []:
        cv2.circle(out, (int(round(x)), int(round(y))), 4, col, 1, cv2.LINE_AA)
    ticks = r.get("ticks") or []
    if ticks:
        x, y = ticks[0]
        text = (f"{r['pixel_size_mm']:.4f} mm/px ({r['spacing_px']:.2f} px / {r['interval_mm']:g} mm)"
                if r.get("pixel_size_mm") else "ruler refused")
        tx = int(x) + 8 if x < out.shape[1] / 2 else max(0, int(x) - 8 - 7 * len(text))
        cv2.putText(out, text, (tx, max(12, int(y) - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, col, 1, cv2.LINE_AA)
    return out
