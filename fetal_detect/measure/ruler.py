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
The tick-level steps (filters, periodicity, tick positions, spacing fit, tick pattern) are in
:mod:`fetal_detect.measure.ruler_ticks`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from fetal_detect.measure.ruler_ticks import (alternates, bottom_response, column_scores, first_period,
                                             merge_peaks, peaks, regular_ticks, tick_geometry, tick_pattern,
                                             tick_response)

DEFAULT_INTERVAL_MM = 5.0
MIN_TICKS = 5
SPARSE_MIN_TICKS = 3  # a second pass for widely spaced dot columns (1 cm dots on a zoomed view: 3-4 in view)
SPARSE_SPAN = 0.4  # ... whose dots must span this share of the image height
PLAUSIBLE_MM = (0.02, 1.0)  # mm per px of a B-mode screenshot; anything else is refused
EDGE_FRACTION = 0.25  # rulers are searched in this share of the width on each side
BOTTOM_FRACTION = 0.06  # and a horizontal ruler in this share of the height at the bottom
MIN_CONTRAST = 40.0  # grey levels a tick stands above its surroundings (speckle in tissue: ~20-50)
MIN_PERIOD_PX = 15.0
BORDER_PX = 2  # marks this close to the right edge are the grey-bar scale (Siemens layout), not depth ticks
MAX_SIDE_PX = 2048  # ticks closer than this are not a readable depth ruler
MIN_SHORT_SIDE_PX = 320  # scanner screenshots are >= ~400 px; smaller images are resized exports (e.g. 256 px
# Roboflow crops of FETAL_PLANES_DB frames) whose minor ticks vanish or whose axes were stretched unequally:
# read there, "5 mm" ticks gave 72-156 mm heads on trans-ventricular frames, so such images are refused


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
    interval_candidates_mm: list[float] | None = None  # a clean ruler whose tick interval is ambiguous

    @property
    def ambiguous(self) -> bool:
        """A clean tick column read to sub-pixel precision whose interval (5 mm or 1 cm) the ticks do not
        tell: ``pixel_size_candidates_mm`` lists the pixel size under each interval, for another cue
        (the fetal anatomy, :mod:`fetal_detect.measure.anatomy_scale`) or the user to pick."""
        return bool(self.interval_candidates_mm) and self.pixel_size_mm is None and bool(self.spacing_px)

    @property
    def column_read(self) -> bool:
        """A ruler column was read: calibrated, or clean with an ambiguous interval."""
        return self.pixel_size_mm is not None or self.ambiguous

    @property
    def pixel_size_candidates_mm(self) -> list[float]:
        return [i / self.spacing_px for i in self.interval_candidates_mm or []] if self.spacing_px else []

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("pixel_size_mm", "spacing_px", "rms_px", "confidence", "x_spread_px", "contrast"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 6 if k == "pixel_size_mm" else 3)
        d["ticks"] = [[round(x, 1), round(y, 2)] for x, y in self.ticks]
        if self.ambiguous:
            d["pixel_size_candidates_mm"] = [round(v, 6) for v in self.pixel_size_candidates_mm]
        return d


def _refuse(reason: str, interval_mm: float | None, **kw) -> Ruler:
    return Ruler(None, reason, None, interval_mm, **kw)


def auto_interval_mm(pattern: str | None, side: str = "left") -> float | None:
    """Tick interval implied by the tick pattern, or None when the pattern is ambiguous.

    The horizontal ruler along the bottom edge (``side="bottom"``) alternates short and long ticks
    (or shows minor ticks half-way) when they are 5 mm apart and has plain ticks (a longer centre tick at
    most) when they are 1 cm apart.
    On a vertical depth ruler at the left edge (GE Voluson layout; checked against tv_plane's reference
    pixel sizes and, on Shenzhen, against the size of the fetal anatomy):

    Alternating tick lengths (1 cm marks over 5 mm ticks) and long ticks every 10 ticks (5 cm) mean
    5 mm ticks; plain ticks are taken as 5 mm. Long ticks every 5 with nothing in between occur with
    1 cm ticks (5 cm majors) and with 5 mm ticks (2.5 cm majors) on the same scanner: ambiguous, None.
    The dot column at the right edge (Siemens layout) marks 5 mm on some views and 1 cm on others with
    the same dot/dash pattern (the Shenzhen anatomy shows both at the same tick spacing): ambiguous, None.
    Ambiguous rulers are refused unless the user gives the interval or the anatomy picks it.
    """
    pattern = pattern or "uniform"
    if side == "bottom":
        return DEFAULT_INTERVAL_MM if pattern.startswith("alternating") else 10.0
    if side == "right" or pattern.startswith("major every 5"):
        return None
    return DEFAULT_INTERVAL_MM


AMBIGUOUS_INTERVALS_MM = [5.0, 10.0]


def _plausible(px: float) -> bool:
    return PLAUSIBLE_MM[0] <= px <= PLAUSIBLE_MM[1]


def _candidate_intervals(spacing_px: float) -> list[float]:
    """The ambiguous intervals (5 mm, 1 cm) that give a plausible pixel size at ``spacing_px``."""
    return [c for c in AMBIGUOUS_INTERVALS_MM if _plausible(c / spacing_px)]


def _candidate(resp: np.ndarray, x: int, period_guess: float, interval_mm: float, min_ticks: int,
               side: str, offset: int) -> Ruler:
    """Ticks, fit and checks in column ``x`` of ``resp`` (a strip; ``offset`` maps x to the image)."""
    h, w = resp.shape
    xa = max(x - 2, 0)
    band = resp[:, xa:min(x + 3, w)]
    prof = band.max(axis=1)
    lo, hi = MIN_PERIOD_PX, h / (min_ticks - 1)
    period = first_period(prof, max(lo, 0.55 * period_guess), hi) or period_guess
    weak = merge_peaks(peaks(prof, 20.0), prof)
    if weak.size < min_ticks:
        return _refuse(f"too few tick-like marks ({weak.size}) in the best column", interval_mm, side=side)
    thr = max(20.0, 0.35 * float(np.median(np.sort(prof[weak])[::-1][:min_ticks])))
    pk = weak[prof[weak] >= thr]
    if pk.size < 3:
        return _refuse(f"too few ticks ({pk.size} < {min_ticks})", interval_mm, side=side)
    geo_of = {int(p): tick_geometry(resp, int(p), int(band[p].argmax()) + xa, 20.0) for p in weak}
    ys = np.array([geo_of[int(p)][1] for p in pk])
    k, inl, a, t = regular_ticks(ys, period)
    pattern = None
    if inl.sum() >= 3:  # minor ticks half-way between the ticks found (1 cm majors over 5 mm minors)?
        yw = np.array([geo_of[int(p)][1] for p in weak])
        mids = a + t * (np.arange(k[inl].min(), k[inl].max()) + 0.5)
        hit = np.array([np.abs(yw - m).min() < max(1.5, 0.06 * t) for m in mids])
        if hit.size >= 2 and hit.mean() >= 0.7 and t / 2 >= MIN_PERIOD_PX:
            pk, ys = weak, yw
            k, inl, a, t = regular_ticks(ys, t / 2)
            pattern = "minor ticks half-way"
    n = int(inl.sum())
    if n < min_ticks:
        return _refuse(f"too few regularly spaced ticks ({n} < {min_ticks})", interval_mm, side=side)
    geo = [geo_of[int(p)] for p in pk]
    sparse = min_ticks < MIN_TICKS
    for _ in range(2):  # a tick pulled by an echo under it: drop the worst one (at most two), keep >= 7
        r_all = np.where(inl, ys - (a + t * k), 0.0)  # (a sparse dot column: drop one stray mark, keep >= 3)
        worst = int(np.argmax(np.abs(r_all)))
        if inl.sum() < (4 if sparse else 7) or abs(r_all[worst]) <= (0.75 if sparse else max(1.5, 0.05 * t)):
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
    if n < MIN_TICKS and (extra or span > n or aligned > 1.0 or np.abs(resid).max() > max(0.75, 0.008 * t)
                          or contrast < 2 * MIN_CONTRAST or (n - 1) * t < SPARSE_SPAN * h):
        # 3-4 dots: crisp, exactly in line, none missing, over much of the height (not lines of text)
        return _refuse(f"only {n} marks and they are not a crisp, evenly spaced dot column", interval_mm, **kw)
    right_margin = BORDER_PX if side == "right" else 0
    if side != "bottom" and ((x1s <= offset).any() or (x2s >= offset + w - 1 - right_margin).any()):
        return _refuse("marks touch the image border: not ruler ticks", interval_mm, **kw)
    if np.median(lengths) > 40:
        return _refuse(f"marks {np.median(lengths):.0f} px long are not ruler ticks", interval_mm, **kw)
    if side == "bottom":  # only a clear short/long alternation says 5 mm here; read it from the tick heights
        alternating = alternates(lengths, kin)
        if pattern and not alternating:
            return _refuse("marks half-way between the ticks are not minor ticks", interval_mm, **kw)
        pattern = "alternating" if alternating else "plain"
    else:
        pattern = tick_pattern(lengths, kin) + (f" ({pattern})" if pattern else "")
    conf = min(1.0, n / 10) * math.exp(-rms / max(0.5, 0.05 * t)) * (1 - extra / (n + extra)) * (n / span)
    if interval_mm is not None:
        interval, how = interval_mm, "user"
    else:
        interval, how = auto_interval_mm(pattern, side), "default"
        if interval is None or n < MIN_TICKS:
            why = ("a long tick every 5" if pattern.startswith("major every 5") else
                   f"only {n} marks" if n < MIN_TICKS else "a tick column at the right edge (Siemens layout)")
            cands = _candidate_intervals(t)
            return Ruler(None, f"{n} ticks {t:.2f} px apart, but {why} fits both 5 mm and 1 cm ticks: give the "
                         "interval (or let the anatomy pick it)", None, None, None, t, ticks, round(conf, 3), side,
                         rms, pattern, float(aligned), contrast, cands)
    px = interval / t
    if not _plausible(px):
        return _refuse(f"implausible pixel size {px:.4f} mm ({t:.1f} px per {interval:g} mm)", interval, **kw)
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
    if min(h, w) < MIN_SHORT_SIDE_PX:
        return _refuse(f"image {w}x{h} px is smaller than a scanner screenshot (a resized export?): its ruler "
                       f"ticks may be thinned out or stretched, so the ruler is not read", interval_mm)
    cands = _scan(grey, interval_mm, min_ticks)
    if not any(r.column_read for _, r in cands) and min_ticks > SPARSE_MIN_TICKS:
        cands += _scan(grey, interval_mm, SPARSE_MIN_TICKS)  # widely spaced dots (3-4 in view), strict checks
    if not any(r.column_read for _, r in cands):
        dots = _dot_column(grey, interval_mm)  # crisp dots drawn over tissue
        if dots is not None:
            return dots
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
    unsure = sorted(((s * r.confidence, r) for s, r in cands if r.ambiguous), key=lambda c: -c[0])
    if unsure:  # a clean column whose interval another cue (or the user) must give
        return unsure[0][1]
    cands.sort(key=lambda c: (-len(c[1].ticks), -c[0]))  # the refusal that came closest to a ruler
    return cands[0][1]


def _dot_column(grey: np.ndarray, interval_mm: float | None) -> Ruler | None:
    """The dot column (:func:`fetal_detect.measure.ruler_dots.dot_column`: crisp dots drawn over tissue,
    right edge first, then left) as a read: with the user's interval, else ambiguous (5 mm or 1 cm)."""
    from fetal_detect.measure.ruler_dots import dot_column

    w = grey.shape[1]
    edge = max(8, int(round(EDGE_FRACTION * w)))
    for side, x0 in (("right", w - edge), ("left", 0)):
        found = dot_column(grey[:, x0:x0 + edge], x0)
        if found is not None:
            break
    else:
        return None
    t, ticks, rms = found
    n = len(ticks)
    kw = dict(spacing_px=t, ticks=ticks, confidence=round(min(1.0, n / 10), 3), side=side, rms_px=rms,
              pattern="dots", x_spread_px=float(np.std([x for x, _ in ticks])))
    if interval_mm is not None:
        px = interval_mm / t
        if _plausible(px):
            return Ruler(px, f"{n} dots {t:.2f} px apart ({interval_mm:g} mm each, user)", "ruler", interval_mm,
                         "user", **kw)
        return None
    return Ruler(None, f"{n} dots {t:.2f} px apart fit both 5 mm and 1 cm: give the interval "
                 "(or let the anatomy pick it)", None, None, None, interval_candidates_mm=_candidate_intervals(t), **kw)


def _scan(grey: np.ndarray, interval_mm: float | None, min_ticks: int) -> list[tuple[float, Ruler]]:
    """(column score, read) for the best columns of the left, right and bottom strips."""
    h, w = grey.shape
    edge = max(8, int(round(EDGE_FRACTION * w)))
    lo, hi = MIN_PERIOD_PX, h / (min_ticks - 1)
    cands = []
    hb = max(24, int(round(BOTTOM_FRACTION * h)))
    strips = [("left", lambda: tick_response(grey[:, :edge]), 0, lo, hi),
              ("right", lambda: tick_response(grey[:, w - edge:]), w - edge, lo, hi),
              ("bottom", lambda: bottom_response(grey[h - hb:, :]), h - hb, lo, w / (min_ticks - 1))]
    for side, response, x0, lo, hi in strips:
        resp = response()
        score, lag = column_scores(resp, lo, hi)
        order = np.argsort(score)[::-1]
        tried = []
        for x in order[:40]:
            if score[x] < 0.25 or len(tried) >= 6:
                break
            if any(abs(x - t) < 2 for t in tried):
                continue
            tried.append(int(x))
            r = _candidate(resp, int(x), float(lag[x]), interval_mm, min_ticks, side, x0)
            cands.append((float(score[x]), r))
            if r.column_read:  # this side's ruler is read: the next columns are its edges
                break
    return cands


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
        cands = r.get("pixel_size_candidates_mm")
        text = (f"{r['pixel_size_mm']:.4f} mm/px ({r['spacing_px']:.2f} px / {r['interval_mm']:g} mm)"
                if r.get("pixel_size_mm") else
                f"{r['spacing_px']:.2f} px: 5 mm or 1 cm? ({' or '.join(f'{c:.4f}' for c in cands)} mm/px)"
                if cands else "ruler refused")
        tx = int(x) + 8 if x < out.shape[1] / 2 else max(0, int(x) - 8 - 7 * len(text))
        cv2.putText(out, text, (tx, max(12, int(y) - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, col, 1, cv2.LINE_AA)
    return out
