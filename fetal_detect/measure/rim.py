"""Does a fitted head ellipse sit on a bright skull rim? Image evidence for an HC fit (no model involved).

The HC18 convention puts the ellipse on the *outer* skull border, so the bone is a bright band just
inside the curve. :func:`rim_support` samples the ellipse at evenly spaced angles and, along each outward
normal, compares the brightest value in a band around the curve with the median grey level further
inside (brain) and further outside (scalp, fluid). A sample *supports* the fit when the band is brighter
than both by a margin. The score is the share of samples that do; samples whose band leaves the image
count as unsupported (no evidence there). A fit on a skull gives about 0.5-0.95 (the lateral walls,
hit tangentially by the beam, are often dim); an ellipse off the bone, or on a blob with no rim, gives
much less. It is a plausibility check, not a measurement: it never changes the HC.
"""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np

from fetal_detect.measure.geometry import Ellipse

RIM_SAMPLES = 180
RIM_MARGIN = 12.0  # grey levels (0-255) the rim must exceed both references by


def _as_ellipse(ellipse) -> Ellipse:
    return ellipse if isinstance(ellipse, Ellipse) else Ellipse(**{k: float(ellipse[k]) for k in
                                                                  ("cx", "cy", "a", "b", "angle_deg")})


def rim_profiles(image_gray: np.ndarray, ellipse, n_samples: int = RIM_SAMPLES) -> dict[str, np.ndarray]:
    """Per sample angle: ``band`` (rim value), ``inside`` and ``outside`` (reference grey levels), ``valid``
    (the band lies in the image). Grey levels are of the image smoothed with a 1.5 px Gaussian."""
    ell = _as_ellipse(ellipse)
    gray = image_gray if image_gray.ndim == 2 else cv2.cvtColor(image_gray, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape[:2]
    t = np.linspace(0, 2 * math.pi, n_samples, endpoint=False)
    ca, sa = math.cos(math.radians(ell.angle_deg)), math.sin(math.radians(ell.angle_deg))
    u, v = ell.a * np.cos(t), ell.b * np.sin(t)
    px, py = ell.cx + u * ca - v * sa, ell.cy + u * sa + v * ca
    nu, nv = np.cos(t) / ell.a, np.sin(t) / ell.b  # gradient of (u/a)^2 + (v/b)^2: the outward normal
    nx, ny = nu * ca - nv * sa, nu * sa + nv * ca
    norm = np.hypot(nx, ny)
    nx, ny = nx / norm, ny / norm
    scale = max(ell.b, 1.0)
    # smooth only the part of the image the samples can reach (the ellipse's box, widened by the outer
    # references and the Gaussian's reach): the same values as blurring the whole frame, a fraction of the cost
    reach = ell.a + 0.15 * scale + 2.0 + 8.0
    x0, x1 = (int(np.clip(v, 0, w)) for v in (math.floor(ell.cx - reach), math.ceil(ell.cx + reach) + 1))
    y0, y1 = (int(np.clip(v, 0, h)) for v in (math.floor(ell.cy - reach), math.ceil(ell.cy + reach) + 1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        x0, x1, y0, y1 = 0, w, 0, h
    g = cv2.GaussianBlur(gray[y0:y1, x0:x1].astype(np.float32), (0, 0), 1.5)

    def sample(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = px[:, None] + nx[:, None] * offsets[None, :]
        y = py[:, None] + ny[:, None] * offsets[None, :]
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        vals = cv2.remap(g, (x - x0).astype(np.float32), (y - y0).astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
        return vals, inside

    band_px = max(3.0, 0.08 * scale)  # bone is a few mm thick: a band reaching inwards from the curve
    band, band_in = sample(np.linspace(-band_px, 0.02 * scale + 1.0, 9))
    inner, _ = sample(np.linspace(-0.25 * scale, -0.12 * scale, 7))
    outer, _ = sample(np.linspace(0.06 * scale + 2.0, 0.15 * scale + 2.0, 7))
    with warnings.catch_warnings():  # all-NaN rows (off the image) are expected: they give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"band": np.nanmax(np.where(band_in, band, np.nan), 1), "inside": np.nanmedian(inner, 1),
                "outside": np.nanmedian(outer, 1), "valid": band_in.all(1)}


def rim_support(image_gray: np.ndarray, ellipse, n_samples: int = RIM_SAMPLES, margin: float = RIM_MARGIN) -> float:
    """Share (0..1) of ``n_samples`` points on ``ellipse`` (an :class:`Ellipse` or its dict, image px) where
    the image shows a rim brighter than both the inside and the outside by ``margin`` grey levels.

    ``image_gray``: H x W uint8 (a BGR image is converted). Points whose rim band leaves the image count as
    unsupported. Returns 0.0 for a degenerate ellipse.
    """
    ell = _as_ellipse(ellipse)
    if not (ell.a > 0 and ell.b > 0) or not all(map(math.isfinite, (ell.cx, ell.cy, ell.a, ell.b, ell.angle_deg))):
        return 0.0
    p = rim_profiles(image_gray, ell, n_samples)
    ref = np.fmax(p["inside"], p["outside"])  # a reference off the image does not count against the rim
    ok = p["valid"] & np.isfinite(p["band"]) & (p["band"] >= np.nan_to_num(ref, nan=0.0) + margin)
    return float(np.mean(ok))
