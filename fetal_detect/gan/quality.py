"""Quality of generated images: kernel inception distance (KID) and a memorisation check.

KID (Binkowski et al. 2018) is the unbiased MMD^2 with the cubic polynomial kernel
``k(a, b) = (a.b / d + 1)^3`` between two feature sets. The features come from networks trained
*by this project* (no download): the penultimate layer of the subtype classifier of the ablation
(:class:`fetal_detect.gan.ablation.TinyCNN`, trained on the real train split only), and
:func:`plane_features`, the pooled stride-32 features of the shipped plane classifier
(``weights/plane-cls.pt``, trained on ~1,700 fetal head and NT frames; it never saw brain_abnormal).
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


def plane_features(weights: str | Path | None, px: int = 160):
    """A function: uint8 gray images (N x S x S) -> N x 256 globally averaged stride-32 features of the
    YOLOv8 plane classifier ``weights`` (its backbone, frozen; images resized to ``px``; None: random init)."""
    import torch
    import torch.nn.functional as F

    from fetal_detect.gan.model import feature_backbone

    net = feature_backbone(str(weights) if weights else None)

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 64):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + 64])).float().div(255)[:, None]
                x = F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
                out.append(net(x).mean((2, 3)))
        return torch.cat(out).numpy()

    return features


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
