"""Seeded synthetic ultrasound phantoms with exact ground truth, in mm and px.

Each phantom is a B-mode-like frame: a fan-shaped sector with multiplicative (Rayleigh) speckle,
depth attenuation and burnt-in UI text outside the sector, plus one of:

- ``hc``: a skull ring whose *outer* border is an ellipse of known semi-axes; the filled ellipse is
  the mask (the HC18 convention), so ``hc_mm`` is the Ramanujan perimeter of that ellipse.
- ``nt``: a mid-sagittal first-trimester profile with an anechoic NT band of known maximum thickness
  ``nt_mm`` between two echogenic lines, and the eight other structures the plane check needs.
- ``cns``: a trans-ventricular head with CSP, LV, choroid plexus and midline falx, with boxes.
- ``blank``: sector and speckle with no anatomy (the ``other`` plane).

All geometry is analytic, so the truth is exact to float precision; rendering is vectorised numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from fetal_detect.measure.geometry import Ellipse, ellipse_perimeter

NT_STRUCTURES = ("NT", "IT", "CM", "thalami", "midbrain", "palate", "nasal bone", "nasal tip", "nasal skin")
CNS_STRUCTURES = ("Brain", "CSP", "LV", "CHOROID_PLEXUS", "MIDLINE_FALX")
KINDS = ("hc", "nt", "cns", "blank")


@dataclass
class Phantom:
    """One synthetic frame and its exact truth. ``boxes`` are ``(name, x1, y1, x2, y2)`` in px."""

    image: np.ndarray  # uint8, H x W, grey
    kind: str
    pixel_size_mm: float
    mask: np.ndarray | None = None  # uint8 0/255: filled skull ellipse (hc) or NT fluid band (nt)
    truth: dict = field(default_factory=dict)
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)
    patient_id: str = ""


# ----------------------------------------------------------------------------------------------
# rendering helpers


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx, yy


def _ellipse_field(xx, yy, cx, cy, a, b, angle_deg) -> np.ndarray:
    """Normalised radius r (r <= 1 inside) of each pixel centre for an ellipse in px."""
    t = math.radians(angle_deg)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _sector_mask(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Fan-shaped scan sector: apex above the top edge, ~70 deg wide. Returns mask and apex (x, y)."""
    xx, yy = _grid(h, w)
    apex_x, apex_y = w / 2 + rng.uniform(-0.03, 0.03) * w, -0.12 * h
    half_angle = math.radians(rng.uniform(33, 40))
    ang = np.arctan2(xx - apex_x, yy - apex_y)
    r = np.hypot(xx - apex_x, yy - apex_y)
    mask = (np.abs(ang) <= half_angle) & (r >= 0.16 * h) & (r <= 1.08 * h)
    return mask, apex_x, apex_y


def _speckle(shape, rng: np.random.Generator, grain_px: float = 1.2) -> np.ndarray:
    """Fully developed speckle: Rayleigh amplitude, low-pass filtered to a grain of a few px."""
    z = rng.rayleigh(1.0, size=shape).astype(np.float32)
    z = cv2.GaussianBlur(z, (0, 0), grain_px)
    return z / z.mean()


def _compose(echo: np.ndarray, rng: np.random.Generator, noise: float, label: str) -> np.ndarray:
    """Echogenicity map (0..1) -> 8-bit frame with sector, speckle, attenuation and UI text."""
    h, w = echo.shape
    sector, ax, ay = _sector_mask(h, w, rng)
    xx, yy = _grid(h, w)
    depth = np.hypot(xx - ax, yy - ay) / h
    atten = np.exp(-rng.uniform(0.25, 0.6) * depth)
    spk = _speckle(echo.shape, rng)
    img = echo * (1.0 + noise * (spk - 1.0)) * atten
    img = np.log1p(6.0 * np.clip(img, 0, None)) / math.log1p(6.0)  # log compression
    img = np.clip(img * 235.0 + rng.normal(0, 2.0 * noise, img.shape), 0, 255)
    img[~sector] = 0
    out = img.astype(np.uint8)
    _burn_ui_text(out, rng, label)
    return out


def _burn_ui_text(img: np.ndarray, rng: np.random.Generator, label: str) -> None:
    """Scanner UI outside the sector: probe, depth, gain and a frame counter (what real exports carry)."""
    h, w = img.shape
    s = max(0.35, h / 1000)
    lines = [f"PHANTOM {label}", f"C5-2  {rng.integers(2, 9)}.{rng.integers(0, 9)}MHz",
             f"G{rng.integers(40, 70)}  D{rng.integers(8, 18)}cm", f"FR {rng.integers(15, 40)}Hz"]
    for i, text in enumerate(lines):
        cv2.putText(img, text, (int(0.012 * w), int((0.05 + 0.045 * i) * h)), cv2.FONT_HERSHEY_SIMPLEX,
                    s, 220, 1, cv2.LINE_AA)
    cv2.putText(img, f"{rng.integers(1, 99):02d}/{rng.integers(1, 12):02d}", (int(0.86 * w), int(0.06 * h)),
                cv2.FONT_HERSHEY_SIMPLEX, s, 200, 1, cv2.LINE_AA)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Uterine tissue with dark amniotic fluid blobs: the echo map the anatomy is painted on."""
    low = cv2.resize(rng.uniform(0.0, 1.0, (6, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(0.10 + 0.30 * low, 0.03, 0.5)


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _paint_ellipse(echo, xx, yy, cx, cy, a, b, angle, value, soft=1.0) -> np.ndarray:
    r = _ellipse_field(xx, yy, cx, cy, a, b, angle)
    inside = r <= 1.0
    if soft:
        edge = np.clip((1.0 - r) * min(a, b) / soft + 0.5, 0, 1)
        echo[:] = echo * (1 - edge) + value * edge
    else:
        echo[inside] = value
    return inside


# ----------------------------------------------------------------------------------------------
# phantoms


def make_hc(seed: int, pixel_size_mm: float | None = None, hc_mm: float | None = None,
            size: tuple[int, int] = (800, 540), noise: float = 1.0) -> Phantom:
    """Trans-thalamic head: a skull ring whose outer border is an exact ellipse.

    ``hc_mm`` (default: uniform 120-330 mm) and ``pixel_size_mm`` (default: chosen so the head fills
    45-75 % of the short side) fix the truth; ``size`` is (width, height) in px.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    hc_mm = float(hc_mm if hc_mm is not None else rng.uniform(120, 330))
    ratio = rng.uniform(0.74, 0.86)  # BPD/OFD, the cephalic index range
    # semi-axes in mm for the requested perimeter: scale a unit ellipse of this ratio
    a_mm = hc_mm / ellipse_perimeter(1.0, ratio)
    b_mm = a_mm * ratio
    if pixel_size_mm is None:  # BPD spans 35-60 % of the frame height, so the head stays inside the fan
        pixel_size_mm = 2 * b_mm / (rng.uniform(0.35, 0.6) * min(w, h))
    a, b = a_mm / pixel_size_mm, b_mm / pixel_size_mm
    if 2 * a > 0.98 * max(w, h) or 2 * b > 0.98 * min(w, h):
        raise ValueError(f"head of HC {hc_mm:.0f} mm does not fit {w}x{h} px at {pixel_size_mm} mm/px")
    angle = float(rng.uniform(-25, 25))
    # centre low in the fan (where it is widest), kept so the whole ellipse is inside the frame
    ext_x = math.sqrt((a * math.cos(math.radians(angle))) ** 2 + (b * math.sin(math.radians(angle))) ** 2)
    ext_y = math.sqrt((a * math.sin(math.radians(angle))) ** 2 + (b * math.cos(math.radians(angle))) ** 2)
    cx = float(np.clip(w * rng.uniform(0.45, 0.55), ext_x + 4, w - ext_x - 4)) if w - 2 * ext_x > 8 else w / 2
    cy = float(np.clip(h * rng.uniform(0.52, 0.62), ext_y + 4, h - ext_y - 4)) if h - 2 * ext_y > 8 else h / 2

    xx, yy = _grid(h, w)
    echo = _background(h, w, rng)
    r = _ellipse_field(xx, yy, cx, cy, a, b, angle)
    thick = max(2.5 / pixel_size_mm, 3.0)  # ~2.5 mm skull
    inner = 1.0 - thick / b
    echo = np.where(r <= 1.0, 0.28 + 0.05 * rng.standard_normal(), echo).astype(np.float32)
    skull = (r <= 1.0) & (r >= inner)
    # skull brightness fades where the beam is tangential: lateral gaps make the contour "broken"
    t = np.arctan2(yy - cy, xx - cx)
    bright = 0.75 + 0.25 * np.cos(2 * (t - math.radians(angle + 90)))
    echo[skull] = (0.9 * bright[skull]).astype(np.float32)
    # midline echo and thalami
    _paint_ellipse(echo, xx, yy, cx, cy, 0.85 * a * inner, max(1.0, 0.5 / pixel_size_mm), angle, 0.7, soft=0)
    for side in (-1, 1):
        dx = side * 0.18 * b * math.sin(math.radians(angle)) * -1
        dy = side * 0.18 * b * math.cos(math.radians(angle))
        _paint_ellipse(echo, xx, yy, cx + dx, cy + dy, 0.18 * a, 0.12 * b, angle, 0.12, soft=2)
    img = _compose(echo, rng, noise, "HC")
    mask = (r <= 1.0).astype(np.uint8) * 255
    ell = Ellipse(cx=cx, cy=cy, a=a, b=b, angle_deg=angle)
    truth = {"hc_mm": ellipse_perimeter(a_mm, b_mm), "bpd_mm": 2 * b_mm, "ofd_mm": 2 * a_mm,
             "ellipse": ell.as_dict(), "hc_px": ellipse_perimeter(a, b)}
    return Phantom(img, "hc", float(pixel_size_mm), mask, truth, [("skull", *_box_of(mask))],
                   patient_id=f"phantom-hc-{seed}")


def nt_band_profile(s: np.ndarray, nt_px: float, half_len_px: float) -> np.ndarray:
    """Gap width (px) along the band axis: flat in the middle, closing at the ends; max = ``nt_px``."""
    q = np.clip(np.abs(s) / half_len_px, 0, 1)
    return nt_px * np.sqrt(np.clip(1 - q ** 4, 0, 1))


def make_nt(seed: int, pixel_size_mm: float = 0.1, nt_mm: float | None = None,
            size: tuple[int, int] = (640, 480), noise: float = 1.0) -> Phantom:
    """Mid-sagittal first-trimester profile with an NT band of exact maximum thickness ``nt_mm``.

    The band lies between two echogenic lines (skin and the soft tissue over the spine), its axis
    at a random angle; thickness is measured perpendicular to that axis. Boxes cover all nine
    structures of the Shenzhen set, named as there.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    nt_mm = float(nt_mm if nt_mm is not None else rng.uniform(0.8, 6.0))
    px = pixel_size_mm
    xx, yy = _grid(h, w)
    echo = _background(h, w, rng) * 0.6

    # fetal head (a circle-ish ellipse) in the upper left, body extending right
    head_r = min(w, h) * rng.uniform(0.22, 0.27)
    hx, hy = w * rng.uniform(0.33, 0.40), h * rng.uniform(0.42, 0.50)
    boxes: list[tuple[str, float, float, float, float]] = []
    _paint_ellipse(echo, xx, yy, hx, hy, head_r, head_r * 0.92, 0, 0.30)
    _paint_ellipse(echo, xx, yy, hx + head_r * 1.35, hy + head_r * 0.55, head_r * 1.25, head_r * 0.7, 15, 0.32)

    def blob(name, cx, cy, a, b, ang, value, soft=1.5):
        inside = _paint_ellipse(echo, xx, yy, cx, cy, a, b, ang, value, soft=soft)
        boxes.append((name, *_box_of(inside)))

    blob("thalami", hx + 0.05 * head_r, hy + 0.05 * head_r, 0.22 * head_r, 0.16 * head_r, 0, 0.14)
    blob("midbrain", hx + 0.30 * head_r, hy + 0.12 * head_r, 0.14 * head_r, 0.10 * head_r, 20, 0.10)
    blob("IT", hx + 0.45 * head_r, hy + 0.42 * head_r, 0.18 * head_r, 0.07 * head_r, 35, 0.04)
    blob("CM", hx + 0.58 * head_r, hy + 0.22 * head_r, 0.12 * head_r, 0.09 * head_r, 30, 0.05)
    blob("palate", hx - 0.55 * head_r, hy + 0.55 * head_r, 0.28 * head_r, 0.06 * head_r, -10, 0.85, soft=0)
    blob("nasal bone", hx - 0.85 * head_r, hy + 0.05 * head_r, 0.16 * head_r, 0.035 * head_r, -60, 0.95, soft=0)
    blob("nasal skin", hx - 1.0 * head_r, hy + 0.02 * head_r, 0.15 * head_r, 0.025 * head_r, -60, 0.7, soft=0)
    blob("nasal tip", hx - 1.08 * head_r, hy + 0.25 * head_r, 0.07 * head_r, 0.06 * head_r, 0, 0.6)

    # NT band behind the neck: axis roughly along the back of the head/neck
    ang = math.radians(rng.uniform(-25, 25))
    nt_px = nt_mm / px
    half_len = max(6.0 / px, 3 * nt_px)  # the band is a long, thin spindle
    bx = hx + head_r * 1.05 + half_len * 0.3
    by = hy + head_r * 0.72
    s = (xx - bx) * math.cos(ang) + (yy - by) * math.sin(ang)
    n = -(xx - bx) * math.sin(ang) + (yy - by) * math.cos(ang)
    gap = nt_band_profile(s, nt_px, half_len)
    line_px = max(0.7 / px, 2.0)
    along = np.abs(s) <= half_len * 1.25
    fluid = (np.abs(n) <= gap / 2) & (np.abs(s) < half_len)
    lines = along & (np.abs(n) > gap / 2) & (np.abs(n) <= gap / 2 + line_px)
    echo[lines] = 0.95
    echo[fluid] = 0.015
    mask = fluid.astype(np.uint8) * 255
    if mask.sum() == 0:
        raise ValueError("NT band left the frame")
    boxes.insert(0, ("NT", *_box_of(fluid | lines)))
    img = _compose(echo, rng, noise, "NT")
    # exact caliper points: inner borders at the widest point (s = 0)
    c, sn = math.cos(ang), math.sin(ang)
    p1 = (bx + sn * nt_px / 2, by - c * nt_px / 2)
    p2 = (bx - sn * nt_px / 2, by + c * nt_px / 2)
    truth = {"nt_mm": nt_mm, "nt_px": nt_px, "axis_angle_deg": math.degrees(ang),
             "calipers": [list(p1), list(p2)], "crl_mm": None}
    return Phantom(img, "nt", px, mask, truth, boxes, patient_id=f"phantom-nt-{seed}")


def make_cns(seed: int, pixel_size_mm: float = 0.2, size: tuple[int, int] = (640, 480),
             noise: float = 1.0) -> Phantom:
    """Trans-ventricular head with CSP, lateral ventricle, choroid plexus and midline falx boxes."""
    rng = np.random.default_rng(seed)
    w, h = size
    xx, yy = _grid(h, w)
    echo = _background(h, w, rng)
    a, b = w * rng.uniform(0.30, 0.36), h * rng.uniform(0.34, 0.40)
    cx, cy = w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.04, 0.04) * h
    boxes: list[tuple[str, float, float, float, float]] = []
    inside = _paint_ellipse(echo, xx, yy, cx, cy, a, b, 0, 0.3)
    r = _ellipse_field(xx, yy, cx, cy, a, b, 0)
    echo[(r <= 1) & (r >= 0.94)] = 0.9
    boxes.append(("Brain", *_box_of(inside)))

    def blob(name, bx, by, ba, bb, ang, value, soft=1.5):
        m = _paint_ellipse(echo, xx, yy, bx, by, ba, bb, ang, value, soft=soft)
        boxes.append((name, *_box_of(m)))

    blob("MIDLINE_FALX", cx, cy, 0.85 * a, 2.0, 0, 0.75, soft=0)
    blob("CSP", cx - 0.32 * a, cy, 0.10 * a, 0.06 * b, 0, 0.05)
    blob("LV", cx + 0.45 * a, cy - 0.28 * b, 0.22 * a, 0.07 * b, 15, 0.04)
    blob("CHOROID_PLEXUS", cx + 0.48 * a, cy - 0.27 * b, 0.09 * a, 0.045 * b, 15, 0.85)
    img = _compose(echo, rng, noise, "TV")
    return Phantom(img, "cns", pixel_size_mm, None, {}, boxes, patient_id=f"phantom-cns-{seed}")


def make_blank(seed: int, size: tuple[int, int] = (640, 480), noise: float = 1.0) -> Phantom:
    """Sector, speckle and UI with no anatomy: the ``other`` plane."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = _compose(_background(h, w, rng), rng, noise, "--")
    return Phantom(img, "blank", 0.2, None, {}, [], patient_id=f"phantom-blank-{seed}")


MAKERS = {"hc": make_hc, "nt": make_nt, "cns": make_cns, "blank": make_blank}


def generate(kind: str, n: int, seed: int = 0, **kwargs) -> Iterator[Phantom]:
    """``n`` phantoms of one kind with seeds ``seed .. seed+n-1`` (same seed, same image)."""
    if kind not in MAKERS:
        raise ValueError(f"unknown phantom kind {kind!r}; choose from {', '.join(MAKERS)}")
    for i in range(n):
        yield MAKERS[kind](seed + i, **kwargs)


def write_hc18_layout(out_dir, n: int, seed: int = 0, first_index: int = 1, **kwargs) -> list[Phantom]:
    """Write ``n`` HC phantoms in the HC18 layout (``images/``, ``masks/``, ``pixel_size_and_HC.csv``),
    named ``NNN_HC.png`` from ``first_index`` (each its own "patient").

    Lets every HC code path (converter, evaluate, demo) run on exact truth with no real data.
    """
    from pathlib import Path

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    phantoms = []
    for i, ph in enumerate(generate("hc", n, seed, **kwargs)):
        name = f"{i + first_index:03d}_HC.png"
        cv2.imwrite(str(out / "images" / name), ph.image)
        cv2.imwrite(str(out / "masks" / name.replace(".png", "_Mask.png")), ph.mask)
        rows.append(f"{name},{ph.pixel_size_mm:.10f},{ph.truth['hc_mm']:.4f}")
        phantoms.append(ph)
    (out / "pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
    return phantoms
