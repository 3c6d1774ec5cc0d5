"""Source-cue randomisation: training copies in which what differs between *scanners* is random.

In ``planes`` each class comes from one source (HC18 -> trans-thalamic, tv_plane -> trans-ventricular,
Shenzhen -> mid-sagittal), so a classifier can learn the source. :func:`randomise_source` redraws what
a source stamps on a frame, independently of the plane:

- the sector: a random fan outline (apex, opening angle, depth) or a rectangle, with a black background;
- on-screen text and a depth ruler (ticks on the left or right edge), at random places and grey levels;
- the grey-level curve (gain, gamma, offset) and a mild depth-gain (TGC) ramp;
- the resolution (down- then up-sampled, 0.35-1x) and the JPEG quality (30-95).

``source_aug: {copies: N, seed: S}`` on a classification entry in datasets.yaml adds N randomised copies
of every *train* image (same patient, same label; val and test stay untouched), written through the
entry's preprocessing like the originals (:func:`fetal_detect.data.registry.write_dataset`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import cv2
import numpy as np

from fetal_detect.data.converters.base import Record


def _fan(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.2:  # a linear probe: a rectangle
        x1, x2 = int(w * rng.uniform(0, 0.15)), int(w * rng.uniform(0.85, 1.0))
        y1, y2 = int(h * rng.uniform(0, 0.1)), int(h * rng.uniform(0.85, 1.0))
        m = np.zeros((h, w), bool)
        m[y1:y2, x1:x2] = True
        return m
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ax, ay = w * rng.uniform(0.4, 0.6), -h * rng.uniform(0.0, 0.3)
    half = math.radians(rng.uniform(28, 50))
    ang = np.arctan2(xx - ax, yy - ay)
    r = np.hypot(xx - ax, yy - ay)
    r0, r1 = -ay + h * rng.uniform(0.0, 0.12), -ay + h * rng.uniform(0.9, 1.2)
    return (np.abs(ang) <= half) & (r >= r0) & (r <= r1)


def _text_and_ruler(img: np.ndarray, rng: np.random.Generator) -> None:
    h, w = img.shape
    s = max(0.3, h / 1000) * rng.uniform(0.7, 1.4)
    for _ in range(int(rng.integers(1, 7))):
        txt = "".join(rng.choice(list("ABCDEFGHKLMNPRSTUVX0123456789 .:/%-"), int(rng.integers(3, 14))))
        x, y = int(w * rng.uniform(0, 0.85)), int(h * rng.uniform(0.03, 0.98))
        cv2.putText(img, txt, (x, y), cv2.FONT_HERSHEY_SIMPLEX, s, int(rng.integers(120, 256)), 1, cv2.LINE_AA)
    if rng.random() < 0.6:  # a depth ruler: small ticks along one edge
        x = int(w * (rng.uniform(0.01, 0.08) if rng.random() < 0.5 else rng.uniform(0.92, 0.99)))
        step = int(rng.integers(max(4, h // 60), max(6, h // 12)))
        grey = int(rng.integers(150, 256))
        for k, y in enumerate(range(int(h * 0.1), int(h * 0.95), step)):
            cv2.line(img, (x, y), (x + (8 if k % 5 == 0 else 4), y), grey, 1)


def randomise_source(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey (or BGR) uint8 frame -> a grey uint8 frame with randomised source cues (same anatomy)."""
    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = g.shape
    x = g.astype(np.float32) / 255.0
    gamma, gain, off = rng.uniform(0.6, 1.6), rng.uniform(0.7, 1.3), rng.uniform(-0.05, 0.08)
    tgc = np.linspace(1.0, rng.uniform(0.75, 1.25), h, dtype=np.float32)[:, None]
    x = np.clip((x ** gamma) * gain * tgc + off, 0, 1)
    out = (x * 255).astype(np.uint8)
    out[~_fan(h, w, rng) | (g == 0)] = 0  # a new sector outline (never larger than the image's own content)
    _text_and_ruler(out, rng)
    f = rng.uniform(0.35, 1.0)
    if f < 0.95:
        small = cv2.resize(out, (max(16, int(w * f)), max(16, int(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 96))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else out


def _reader(rec: Record):
    if callable(rec.image):
        return rec.image
    from fetal_detect.io import load_image

    return lambda p=Path(rec.image): load_image(p).image


def augmented_records(records: list[Record], splits: list[str], options: dict) -> list[Record]:
    """``options['copies']`` randomised copies of each *train* record (seeded by ``options['seed']`` and name)."""
    copies, seed = int(options.get("copies", 1)), int(options.get("seed", 0))
    out = []
    for rec, split in zip(records, splits):
        if split != "train" or rec.label is None:
            continue
        read = _reader(rec)
        for k in range(copies):
            key = int(hashlib.sha1(f"{seed}:{rec.name}:{k}".encode()).hexdigest()[:12], 16)

            def make(read=read, key=key):
                return randomise_source(read(), np.random.default_rng(key))

            out.append(dataclasses.replace(rec, name=f"{rec.name}__src{k}", image=make,
                                           meta={**rec.meta, "source_aug": k}))
    return out
