"""Quality of generated images: kernel inception distance (KID) and a memorisation check.

KID (Binkowski et al. 2018) is the unbiased MMD^2 with the cubic polynomial kernel
``k(a, b) = (a.b / d + 1)^3`` between two feature sets. The features come from a network trained
*by this project* (no download): the penultimate layer of the subtype classifier of the ablation
(:class:`fetal_detect.gan.ablation.TinyCNN`, trained on the real train split only).
Memorisation: for each generated image, the RMSE (gray levels, 0-255, at ``side`` px) to its nearest
training image, next to the same distance for held-out real images (what "not a copy" looks like).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def kid(a: np.ndarray, b: np.ndarray) -> float | None:
    """Unbiased KID between feature sets ``a`` (m x d) and ``b`` (n x d); None when m or n < 2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        return None
    d = a.shape[1]
    kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def _flat(images: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in images]
                    ).reshape(len(images), -1).astype(np.float32)


def nearest(queries: np.ndarray, refs: np.ndarray, side: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest ref, RMSE in gray levels) for each query image, compared at ``side`` px."""
    q, r = _flat(queries, side), _flat(refs, side)
    d2 = (q ** 2).sum(1)[:, None] + (r ** 2).sum(1)[None] - 2 * q @ r.T
    idx = d2.argmin(1)
    return idx, np.sqrt(np.maximum(d2[np.arange(len(q)), idx], 0) / q.shape[1])


def pairs_sheet(gen: np.ndarray, refs: np.ndarray, idx: np.ndarray, dist: np.ndarray, captions: list[str],
                path: Path, k: int = 8) -> Path:
    """The ``k`` closest (generated, nearest training image) pairs side by side, closest first."""
    from fetal_detect.report import contact_sheet, write_image

    order = np.argsort(dist)[:k]
    tiles, caps = [], []
    for i in order:
        tiles += [gen[i], refs[idx[i]]]
        caps += [f"gen {captions[i]} rmse {dist[i]:.1f}", "nearest train image"]
    return write_image(path, contact_sheet(tiles, caps, cols=4, tile_w=160))
