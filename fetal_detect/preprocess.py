"""Ultrasound preprocessing: composable, geometry-preserving transforms on grey uint8 frames.

``apply(image, steps)`` runs the named steps in order and is the ONE entry point used when the
registry writes training images (``prepare(..., preprocess=steps)``), by the torch runtime and by
the ONNX runtime (numpy / OpenCV / PyWavelets only, no torch), so a model always sees the same
pixels at training, evaluation and inference time.

Steps (``STEPS``); each is also a plain function with its parameters documented:

- ``sector``    :func:`sector` - find the scan fan (:func:`sector_mask`) and zero everything outside
  it: burnt-in text, calipers, grey-scale bars and other UI outside the fan.
- ``crop``      :func:`crop_to_sector` - ``sector`` plus a crop to the fan's bounding box. Changes the
  geometry, so it is only allowed where labels are image-level (``plane-cls``).
- ``clahe``     :func:`clahe` - contrast-limited adaptive histogram equalisation.
- ``wavelet``   :func:`wavelet_denoise` - PyWavelets soft thresholding (BayesShrink or VisuShrink).
- ``speckle``   :func:`speckle_filter` - Lee (default), median or bilateral speckle reduction.
- ``normalize`` :func:`normalize` - percentile intensity stretch to 0..255 inside the fan.

A step is a name or a name with parameters: ``"wavelet"``, ``"wavelet:method=visu:level=2"`` (CLI
and task table) or ``{"wavelet": {"method": "visu"}}`` (YAML). Every step takes and returns a grey
uint8 H x W array; a 3-channel input is processed as grey and returned as 3-channel BGR.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Callable, Iterable

import cv2
import numpy as np

from fetal_detect.errors import FetalDetectError

Step = str | dict


# ---------------------------------------------------------------------------------------------
# sector (fan) detection


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    raise FetalDetectError(f"preprocess: expected a grey or BGR image, got shape {image.shape}")


def sector_mask(image: np.ndarray, threshold: int = 6, open_frac: float = 0.02,
                min_area_frac: float = 0.15) -> np.ndarray:
    """Boolean H x W mask of the ultrasound fan (sector, linear or curvilinear field of view).

    The fan is the largest connected region of non-black pixels once thin structures (text, caliper
    crosses, grey-scale bars, tick marks) are removed by a morphological opening, with its holes
    (anechoic fluid) closed by taking its convex hull.

    - ``threshold``: grey level (0..255) above which a median-filtered (5 px) pixel is "signal".
    - ``open_frac``: opening kernel diameter as a fraction of the short image side (0.02 = 11 px
      on a 540 px frame); strokes thinner than this are detached from the fan.
    - ``min_area_frac``: if the largest region covers less than this fraction of the frame the image
      has no recognisable fan (e.g. an already cropped frame) and the whole frame is returned.
    """
    g = _gray(image)
    if g.dtype != np.uint8:
        raise FetalDetectError(f"preprocess: expected uint8 pixels, got {g.dtype}")
    h, w = g.shape
    full = np.ones((h, w), bool)
    if min(h, w) < 8:
        return full
    # work at <= 256 px on the short side (the fan is a large, smooth shape); draw the hull at full size
    s = min(1.0, 256.0 / min(h, w))
    small = cv2.resize(g, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else g
    signal = cv2.medianBlur(small, 5) > threshold
    k = max(3, int(round(open_frac * min(small.shape))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.morphologyEx(signal.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return full
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < min_area_frac * fg.size:
        return full
    hull = cv2.convexHull(cv2.findNonZero((labels == best).astype(np.uint8)))
    # the opening shaved ~k/2 px off the true border: grow back by as much, where there is signal
    m_small = np.zeros(small.shape, np.uint8)
    cv2.fillConvexPoly(m_small, hull, 1)
    rim = cv2.dilate(m_small, kernel) & signal & ~m_small.astype(bool)
    mask = np.zeros((h, w), np.uint8)
    scaled = np.round((hull.reshape(-1, 2) + 0.5) / s - 0.5).astype(np.int32)
    cv2.fillConvexPoly(mask, scaled, 1)
    if rim.any():
        rim_full = cv2.resize(rim.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        mask |= rim_full
    return mask.astype(bool)


def sector(image: np.ndarray, threshold: int = 6, open_frac: float = 0.02) -> np.ndarray:
    """Zero every pixel outside :func:`sector_mask` (removes text, calipers and UI outside the fan)."""
    out = image.copy()
    out[~sector_mask(image, threshold=threshold, open_frac=open_frac)] = 0
    return out


def sector_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)`` in px (x2/y2 exclusive) of a sector mask's bounding box."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def crop_to_sector(image: np.ndarray, threshold: int = 6, open_frac: float = 0.02) -> np.ndarray:
    """:func:`sector`, then crop to the fan's bounding box (changes the image size and geometry)."""
    m = sector_mask(image, threshold=threshold, open_frac=open_frac)
    x1, y1, x2, y2 = sector_box(m)
    out = image.copy()
    out[~m] = 0
    return np.ascontiguousarray(out[y1:y2, x1:x2])


# ---------------------------------------------------------------------------------------------
# contrast, denoising, normalisation


def clahe(image: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """CLAHE (OpenCV): ``clip_limit`` = contrast limit per tile (x mean histogram bin),
    ``tiles`` = tiles per image side. Black outside the fan stays black."""
    g = _gray(image)
    out = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles))).apply(g)
    out[g == 0] = 0
    return out


def noise_sigma(detail_hh: np.ndarray) -> float:
    """Robust noise SD (grey levels) from the finest diagonal wavelet band: median(|d|) / 0.6745."""
    return float(np.median(np.abs(detail_hh)) / 0.6745)


def wavelet_denoise(image: np.ndarray, wavelet: str = "db4", level: int = 3, method: str = "bayes",
                    scale: float = 1.0, log: bool = False, per_level_sigma: bool = True) -> np.ndarray:
    """Wavelet shrinkage denoising (PyWavelets ``wavedec2`` / ``waverec2``, soft thresholding).

    - ``wavelet``: mother wavelet (default ``db4``: Daubechies 4, compact and smooth enough for
      speckle texture; any ``pywt.wavelist()`` name works).
    - ``level``: decomposition levels (default 3: on 320-800 px frames the speckle grain is 1-8 px,
      i.e. the three finest scales; capped at ``pywt.dwt_max_level``).
    - ``method``: ``bayes`` (BayesShrink, Chang et al. 2000: per detail band T = sigma^2 / sigma_x,
      adaptive, keeps edges) or ``visu`` (VisuShrink, Donoho & Johnstone 1994: one universal
      T = sigma * sqrt(2 ln N), smoother, removes more texture).
    - ``scale``: multiplies every threshold (< 1 is gentler).
    - ``log``: denoise log(1 + I) (homomorphic, for multiplicative speckle) and map back.
    - ``per_level_sigma``: estimate the noise sigma per level from its diagonal band (default, right
      for correlated speckle); False uses the finest band only (the textbook white-noise estimate).
    Noise sigma is estimated by the median absolute deviation (:func:`noise_sigma`).
    """
    import pywt

    g = _gray(image)
    x = g.astype(np.float32)
    if log:
        x = np.log1p(x)
    w = pywt.Wavelet(wavelet)
    if min(x.shape) < 2 * w.dec_len:  # too small to decompose
        return g.copy()
    level = max(1, min(int(level), pywt.dwt_max_level(min(x.shape), w.dec_len)))
    coeffs = pywt.wavedec2(x, w, level=level, mode="symmetric")
    if method not in ("bayes", "visu"):
        raise FetalDetectError(f"preprocess wavelet: method must be 'bayes' or 'visu', got '{method}'")
    # statistics only from coefficients well inside the fan: the fan border and UI text are strong
    # edges that would inflate the signal variance and switch BayesShrink off
    reach = w.dec_len * 2 ** level + 1
    interior = cv2.erode((g > 0).astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0
    if interior.sum() < 64:
        interior = np.ones_like(interior)
    out = [coeffs[0]]
    finest = None
    for bands in reversed(coeffs[1:]):  # finest level first
        sel = cv2.resize(interior.astype(np.uint8), bands[0].shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        if not sel.any():
            sel = np.ones(bands[0].shape, bool)
        # speckle is spatially correlated (a grain of a few px), so its level varies with scale:
        # estimate sigma per level from that level's diagonal band (Johnstone & Silverman 1997)
        sigma = noise_sigma(bands[2][sel])
        finest = sigma if finest is None else finest
        sigma = sigma if per_level_sigma else finest
        new = []
        for d in bands:
            if method == "visu":
                t = sigma * math.sqrt(2.0 * math.log(x.size))
            else:
                sx = math.sqrt(max(float(np.mean(d[sel].astype(np.float64) ** 2)) - sigma ** 2, 0.0))
                t = float(np.max(np.abs(d))) if sx == 0 else sigma ** 2 / sx
            new.append(pywt.threshold(d, scale * t, mode="soft"))
        out.insert(1, tuple(new))
    y = pywt.waverec2(out, w, mode="symmetric")[: x.shape[0], : x.shape[1]]
    if log:
        y = np.expm1(y)
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    y[g == 0] = 0
    return y


def speckle_filter(image: np.ndarray, method: str = "lee", window: int = 5) -> np.ndarray:
    """Speckle reduction in a ``window`` x ``window`` px neighbourhood (odd, >= 3).

    ``lee``: Lee's adaptive filter (1980): out = m + k (I - m), k = var_signal / var_local, with the
    noise variance taken as the median local variance (flat regions are smoothed, edges kept).
    ``median``: median filter. ``bilateral``: OpenCV bilateral (sigma_color 25 grey levels).
    """
    g = _gray(image)
    window = max(3, int(window) | 1)
    if method == "median":
        out = cv2.medianBlur(g, window)
    elif method == "bilateral":
        out = cv2.bilateralFilter(g, window, 25, window)
    elif method == "lee":
        x = g.astype(np.float32)
        m = cv2.blur(x, (window, window))
        var = np.maximum(cv2.blur(x * x, (window, window)) - m * m, 0)
        inside = g > 0
        noise = float(np.median(var[inside])) if inside.any() else 0.0
        k = np.clip((var - noise) / np.maximum(var, 1e-6), 0, 1)
        out = np.clip(np.rint(m + k * (x - m)), 0, 255).astype(np.uint8)
    else:
        raise FetalDetectError(f"preprocess speckle: method must be lee, median or bilateral, got '{method}'")
    out[g == 0] = 0
    return out


def normalize(image: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Stretch grey levels so the ``low_pct``..``high_pct`` percentiles of the non-black (fan) pixels
    map to 0..255 (removes gain/TGC differences between machines). Black stays black."""
    g = _gray(image)
    inside = g > 0
    if inside.sum() < 16:
        return g.copy()
    lo, hi = np.percentile(g[inside], [low_pct, high_pct])
    if hi - lo < 1:
        return g.copy()
    out = np.clip((g.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
    out = np.rint(out).astype(np.uint8)
    out[~inside] = 0
    return out


# ---------------------------------------------------------------------------------------------
# the step table and the one entry point

STEPS: dict[str, Callable[..., np.ndarray]] = {
    "sector": sector, "crop": crop_to_sector, "clahe": clahe, "wavelet": wavelet_denoise,
    "speckle": speckle_filter, "normalize": normalize,
}
GEOMETRY_CHANGING = frozenset({"crop"})


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_step(step: Step) -> tuple[str, dict]:
    """``"wavelet:method=visu:level=2"`` or ``{"wavelet": {...}}`` -> ``("wavelet", {...})``, validated."""
    if isinstance(step, dict):
        if len(step) != 1:
            raise FetalDetectError(f"preprocess step {step!r}: use one key, e.g. {{wavelet: {{method: visu}}}}")
        (name, params), = step.items()
        params = dict(params or {})
    else:
        name, *parts = str(step).strip().split(":")
        params = {}
        for part in parts:
            if "=" not in part:
                raise FetalDetectError(f"preprocess step '{step}': parameters are key=value, e.g. wavelet:level=2")
            k, v = part.split("=", 1)
            params[k.strip()] = _value(v.strip())
    name = name.strip().lower().replace("normalise", "normalize")
    if name not in STEPS:
        raise FetalDetectError(f"unknown preprocess step '{name}'; choose from: {', '.join(STEPS)}")
    import inspect

    allowed = set(inspect.signature(STEPS[name]).parameters) - {"image"}
    bad = set(params) - allowed
    if bad:
        raise FetalDetectError(f"preprocess step '{name}': unknown parameter(s) {', '.join(sorted(bad))} "
                               f"(allowed: {', '.join(sorted(allowed))})")
    return name, params


def parse_steps(steps: Iterable[Step] | str | None) -> list[tuple[str, dict]]:
    """A comma-separated string, a list of steps, or None -> validated ``[(name, params), ...]``."""
    if not steps:
        return []
    if isinstance(steps, str):
        steps = [s for s in steps.split(",") if s.strip()]
    return [parse_step(s) for s in steps]


def canonical(steps: Iterable[Step] | str | None) -> list[Step]:
    """Steps in a JSON-able normal form (names, or ``{name: params}`` where parameters are given)."""
    return [name if not params else {name: params} for name, params in parse_steps(steps)]


def steps_key(steps: Iterable[Step] | str | None) -> str:
    """Short stable hash of the steps, for cache folder names (``""`` when there are none)."""
    c = canonical(steps)
    return hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:8] if c else ""


def changes_geometry(steps: Iterable[Step] | str | None) -> bool:
    return any(name in GEOMETRY_CHANGING for name, _ in parse_steps(steps))


def apply(image: np.ndarray, steps: Iterable[Step] | str | None) -> np.ndarray:
    """Run ``steps`` in order on a grey (H x W) or BGR uint8 image; returns the same layout.

    No steps returns the input unchanged (same object), so callers can apply unconditionally.
    """
    parsed = parse_steps(steps)
    if not parsed:
        return image
    if image.dtype != np.uint8:
        raise FetalDetectError(f"preprocess: expected uint8 pixels, got {image.dtype}")
    colour = image.ndim == 3 and image.shape[2] != 1
    out = _gray(image).copy()
    for name, params in parsed:
        out = STEPS[name](out, **params)
    return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR) if colour else out


def steps_for(task, meta: dict | None = None) -> list[Step]:
    """The steps a model expects: its sidecar's ``preprocess`` (what it was trained on) when present,
    else the task table's. ``task`` is a :class:`fetal_detect.tasks.Task` (or None)."""
    if meta and "preprocess" in meta:
        return canonical(meta["preprocess"])
    return canonical(getattr(task, "preprocess", None))
