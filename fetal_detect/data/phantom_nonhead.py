"""Synthetic *non-head* frames: what ``auto`` must refuse (the fixture of the abstain gate).

No real non-head ultrasound exists in ../shared/data, so the gate is tested on frames built to look
like the obstetric views a user may drop on the page by mistake, each seeded and deterministic:

- ``limb``: a femur-like bright bar with an acoustic shadow below it, in a fan of soft tissue;
- ``abdomen``: a round disc of soft tissue with a thin skin line, a dark stomach bubble and a bright
  spine spot, but no thick bright rim (the skull is what makes a head);
- ``doppler``: a fan with red/blue colour-flow blobs over grey (BGR);
- ``texture``: a natural-image-like frame: 1/f noise in colour, no fan, no speckle.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from fetal_detect.data.phantom import Phantom, _background, _compose, _ellipse_field, _grid, _paint_ellipse

NONHEAD_KINDS = ("limb", "abdomen", "doppler", "texture")


def make_limb(seed: int, size: tuple[int, int] = (800, 540)) -> Phantom:
    rng = np.random.default_rng(seed)
    w, h = size
    xx, yy = _grid(h, w)
    echo = _background(h, w, rng)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    length, thick = w * rng.uniform(0.25, 0.45), h * rng.uniform(0.02, 0.04)
    ang = math.radians(rng.uniform(-25, 25))
    u = (xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)
    v = -(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)
    bar = (np.abs(u) <= length / 2) & (np.abs(v) <= thick / 2)
    shadow = (np.abs(u) <= length / 2) & (v > thick / 2)
    echo = np.where(shadow, echo * 0.25, echo)
    _paint_ellipse(echo, xx, yy, cx, cy, length * 0.7, h * 0.12, math.degrees(ang), 0.3, soft=6)  # thigh tissue
    echo[bar] = 0.95
    truth = {"ellipse": {"cx": cx, "cy": cy, "a": length / 2, "b": thick / 2, "angle_deg": math.degrees(ang)}}  # the bar
    return Phantom(_compose(echo.astype(np.float32), rng, 1.0, "FL"), "limb", 0.2, truth=truth,
                   patient_id=f"phantom-limb-{seed}")


def make_abdomen(seed: int, size: tuple[int, int] = (800, 540)) -> Phantom:
    rng = np.random.default_rng(seed)
    w, h = size
    xx, yy = _grid(h, w)
    echo = _background(h, w, rng)
    a = min(w, h) * rng.uniform(0.25, 0.38)
    b = a * rng.uniform(0.85, 1.0)
    cx, cy, angle = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.5, 0.6), rng.uniform(-20, 20)
    r = _ellipse_field(xx, yy, cx, cy, a, b, angle)
    echo = np.where(r <= 1.0, 0.32 + 0.04 * rng.standard_normal(), echo).astype(np.float32)
    echo[(r > 0.985) & (r <= 1.0)] = 0.4  # thin skin line, not a skull
    t = rng.uniform(0, 2 * np.pi)
    _paint_ellipse(echo, xx, yy, cx + 0.35 * a * math.cos(t), cy + 0.35 * b * math.sin(t), 0.2 * a, 0.15 * b, angle, 0.03, soft=2)
    _paint_ellipse(echo, xx, yy, cx - 0.6 * a * math.cos(t), cy - 0.6 * b * math.sin(t), 0.08 * a, 0.08 * a, 0, 0.9, soft=1)
    truth = {"ellipse": {"cx": cx, "cy": cy, "a": a, "b": b, "angle_deg": angle}}  # the disc a skull model may take
    return Phantom(_compose(echo, rng, 1.0, "AC"), "abdomen", 0.2, truth=truth, patient_id=f"phantom-abdomen-{seed}")


def make_doppler(seed: int, size: tuple[int, int] = (800, 540)) -> Phantom:
    rng = np.random.default_rng(seed)
    w, h = size
    grey = _compose(_background(h, w, rng), rng, 1.0, "CFM")
    out = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    xx, yy = _grid(h, w)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.8)
        r = _ellipse_field(xx, yy, cx, cy, w * rng.uniform(0.03, 0.1), h * rng.uniform(0.02, 0.06), rng.uniform(0, 180))
        blob = (r <= 1.0) & (grey > 0)
        colour = (40, 40, 230) if rng.random() < 0.5 else (230, 90, 30)  # BGR red / blue flow
        out[blob] = colour
    return Phantom(out, "doppler", 0.2, patient_id=f"phantom-doppler-{seed}")


def make_texture(seed: int, size: tuple[int, int] = (800, 540)) -> Phantom:
    rng = np.random.default_rng(seed)
    w, h = size
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(w, h))
    chans = []
    for _ in range(3):
        z = np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((h, w)))).real
        chans.append((z - z.min()) / (np.ptp(z) + 1e-9) * 255)
    return Phantom(np.dstack(chans).astype(np.uint8), "texture", 0.2, patient_id=f"phantom-texture-{seed}")


MAKERS = {"limb": make_limb, "abdomen": make_abdomen, "doppler": make_doppler, "texture": make_texture}


def make_nonhead(kind: str, seed: int, **kwargs) -> Phantom:
    if kind not in MAKERS:
        raise ValueError(f"unknown non-head phantom {kind!r}; choose from {', '.join(MAKERS)}")
    return MAKERS[kind](seed, **kwargs)
