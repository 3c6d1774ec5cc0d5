"""Is there a skull where the ellipse is? A plausibility check for head biometry on the image itself.

A segmentation model trained only on heads finds "a skull" in anything roundish: an abdomen, a
thorax, a bladder. What it cannot fake is the bone: in an axial head plane the calvarium is the
brightest, thickest echo of the frame and it runs along most of the ellipse. :func:`skull_rim`
samples the grey levels on rays through the fitted ellipse (outer skull border at normalised radius
1, the HC18 convention) and measures

- ``coverage``: the share of directions along which a bright echo sits on the ellipse (radius
  0.84-1.06): brighter than ``rim_level`` (fan grey levels mapped so its median is 0 and its 99.5th
  percentile 1), and brighter by ``rim_contrast`` than the inside (0.50-0.76) of that ray;
- ``arc``: the longest unbroken run of such directions (a skull is a continuous curve, speckle is not);
- ``brightness``: the median rim level, ``contrast``: the median rim-minus-inside, and
  ``inside``/``outside``: the median levels around it;
- ``axis_ratio`` (b/a), ``size_frac`` (major axis / short image side) and ``inside_fan`` (share of the
  ellipse that lies within the fan / image).

:func:`check_skull` turns them into ``(ok, reason)`` against :data:`LIMITS`; the limits are
calibrated on real heads (HC18, tv_plane) so that >= 97 % of them pass (numbers in docs/auto.md).
Pure numpy/OpenCV; no model.
"""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np

RIM = (0.84, 1.06)
INSIDE = (0.50, 0.76)
OUTSIDE = (1.10, 1.30)

LIMITS = {
    "rim_score_min": 0.45,     # coverage + brightness: a bright rim along the ellipse
    "evidence_min": 1.0,       # coverage + brightness + the HC result's confidence (mask quality x model score)
    "axis_ratio": (0.6, 1.0),  # b / a of an axial head (real heads: 0.68-0.97)
    "size_frac": (0.3, 1.5),   # major axis / short image side (real heads: 0.38-1.24)
    "inside_fan_min": 0.25,    # share of the ellipse within the fan (or image); real heads: >= 0.33
    "arc_min": 0.12,           # the longest unbroken bright arc, as a share of the ellipse
    "contrast_min": 0.15,      # median (rim - inside of the head) over the rays
    "rim_level": 0.35,         # a direction's rim counts when it is at least this bright ...
    "rim_contrast": 0.15,      # ... and this much brighter than the inside of the head on that ray
}


def _fan_levels(gray: np.ndarray, fan: np.ndarray | None) -> tuple[float, float]:
    px = gray[fan] if fan is not None and fan.any() else gray[gray > 0]
    if px.size < 16:
        px = gray.ravel()
    lo, hi = np.percentile(px, [50.0, 99.5])
    return float(lo), float(max(hi - lo, 1.0))


def rim_samples(gray: np.ndarray, ellipse: dict, n_angles: int = 90, n_radii: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels (float, NaN outside the image) on ``n_angles`` rays x ``n_radii`` normalised radii 0.5-1.3."""
    cx, cy, a, b = (float(ellipse[k]) for k in ("cx", "cy", "a", "b"))
    th = math.radians(float(ellipse.get("angle_deg", 0.0)))
    t = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)[:, None]
    r = np.linspace(0.5, 1.3, n_radii)[None, :]
    ex, ey = a * np.cos(t) * r, b * np.sin(t) * r
    x = (cx + ex * math.cos(th) - ey * math.sin(th)).astype(np.float32)
    y = (cy + ex * math.sin(th) + ey * math.cos(th)).astype(np.float32)
    sigma = max(0.8, 0.01 * max(a, b))
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), sigma)
    v = cv2.remap(g, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    return v, r.ravel()


def skull_rim(image: np.ndarray, ellipse: dict, fan: np.ndarray | None = None) -> dict:
    """The rim measurements of the module docstring for one image (grey or BGR uint8) and ellipse (px)."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if fan is None:
        from fetal_detect.preprocess import sector_mask

        fan = sector_mask(gray)
    lo, span = _fan_levels(gray, fan)
    v, r = rim_samples(gray, ellipse)
    v = (v - lo) / span
    band = lambda lim: (r >= lim[0]) & (r <= lim[1])  # noqa: E731
    with np.errstate(all="ignore"), warnings.catch_warnings():  # all-NaN rays (off the image) give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        rim = np.nanmax(v[:, band(RIM)], axis=1)
        inner = np.nanmedian(v[:, band(INSIDE)], axis=1)
        outer = np.nanmedian(v[:, band(OUTSIDE)], axis=1)
    valid = np.isfinite(rim) & np.isfinite(inner)
    hit = valid & (rim >= LIMITS["rim_level"]) & (rim - inner >= LIMITS["rim_contrast"])
    a, b = float(ellipse["a"]), float(ellipse["b"])
    # share of the ellipse (radius 1) inside the fan, counting what lies outside the image as outside
    cx, cy, th = float(ellipse["cx"]), float(ellipse["cy"]), math.radians(float(ellipse.get("angle_deg", 0.0)))
    t = np.linspace(0, 2 * np.pi, len(v), endpoint=False)
    xs = np.rint(cx + a * np.cos(t) * math.cos(th) - b * np.sin(t) * math.sin(th)).astype(int)
    ys = np.rint(cy + a * np.cos(t) * math.sin(th) + b * np.sin(t) * math.cos(th)).astype(int)
    h, w = gray.shape
    inb = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    in_fan = np.zeros(len(t), bool)
    in_fan[inb] = fan[ys[inb], xs[inb]] if fan is not None else True
    arc, best = 0, 0
    for h_ in np.concatenate([hit, hit]):  # the longest run of neighbouring rays with a rim, around the ellipse
        arc = arc + 1 if h_ else 0
        best = max(best, arc)
    fin = lambda x: round(float(x), 4) if np.isfinite(x) else None  # noqa: E731
    return {"coverage": fin(hit.sum() / len(hit)), "arc": fin(min(best, len(hit)) / len(hit)),
            "contrast": fin(np.nanmedian((rim - inner)[valid])) if valid.any() else None,
            "brightness": fin(np.nanmedian(rim)) if valid.any() else None,
            "inside": fin(np.nanmedian(inner)) if valid.any() else None,
            "outside": fin(np.nanmedian(outer)) if np.isfinite(outer).any() else None,
            "axis_ratio": fin(min(a, b) / max(a, b, 1e-6)),
            "size_frac": fin(2 * max(a, b) / max(min(h, w), 1)),
            "inside_fan": fin(in_fan.mean())}


def check_skull(rim: dict, confidence: float | None = None, limits: dict | None = None) -> tuple[bool, str | None]:
    """``(True, None)`` when ``rim`` (from :func:`skull_rim`) looks like a skull, else ``(False, reason)``.
    ``confidence``: the HC result's own confidence (0..1), added to the rim score for ``evidence_min``."""
    lim = {**LIMITS, **(limits or {})}
    get = lambda k: -1.0 if rim.get(k) is None else rim[k]  # noqa: E731
    lo, hi = lim["axis_ratio"]
    if not lo <= get("axis_ratio") <= hi:
        return False, f"the fitted ellipse is not head-shaped (axis ratio {get('axis_ratio'):.2f}, expected {lo:g}-{hi:g})"
    lo, hi = lim["size_frac"]
    if not lo <= get("size_frac") <= hi:
        return False, f"the fitted ellipse has an implausible size ({get('size_frac'):.2f} of the image, expected {lo:g}-{hi:g})"
    if get("inside_fan") < lim["inside_fan_min"]:
        return False, f"the fitted ellipse lies mostly outside the ultrasound sector ({get('inside_fan'):.0%} inside)"
    if get("arc") < lim["arc_min"] or get("contrast") < lim["contrast_min"]:
        return False, (f"no bright skull rim along the fitted ellipse (longest bright arc {max(get('arc'), 0):.0%} of it, "
                       f"rim-to-inside contrast {get('contrast'):.2f}; real heads: >= {lim['arc_min']:.0%} and "
                       f">= {lim['contrast_min']:g})")
    score = max(get("coverage"), 0.0) + max(get("brightness"), 0.0)
    evidence = score + (1.0 if confidence is None else float(confidence))
    if score < lim["rim_score_min"] or evidence < lim["evidence_min"]:
        return False, (f"no bright skull rim along the fitted ellipse (rim on {max(get('coverage'), 0):.0%} of it, "
                       f"brightness {get('brightness'):.2f}, rim score {score:.2f}, with the segmentation's "
                       f"confidence {evidence:.2f}; real heads: >= {lim['rim_score_min']:g} and >= {lim['evidence_min']:g})")
    return True, None
