"""What every reader shares: :class:`Record` and the polygon/box helpers (no reader imports the package)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Record:
    """One image and its annotations, coordinates normalised to 0..1.

    ``image`` is a source file path (linked into the dataset as is) or a callable that returns a
    uint8 array (written as PNG). ``boxes``: ``(class, xc, yc, w, h)``; ``polygons``:
    ``(class, N x 2 array)``; ``label``: the class of a classification image.
    """

    name: str
    image: Path | Callable[[], np.ndarray]
    patient_id: str
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)
    polygons: list[tuple[str, np.ndarray]] = field(default_factory=list)
    label: str | None = None
    meta: dict = field(default_factory=dict)
    split: str | None = None  # a split fixed by the source (used only when the entry asks for it)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def mask_to_polygons(mask: np.ndarray, min_area_px: float = 16.0, epsilon_px: float = 0.7) -> list[np.ndarray]:
    """Outer contours of a binary mask as normalised (N x 2) polygons, simplified by ``epsilon_px``."""
    import cv2

    h, w = mask.shape[:2]
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = []
    for c in contours:
        if cv2.contourArea(c) < min_area_px:
            continue
        c = cv2.approxPolyDP(c, epsilon_px, True).reshape(-1, 2).astype(np.float64)
        if len(c) >= 3:
            out.append(np.clip(c / [w, h], 0, 1))
    return out


def box_from_polygon(poly: np.ndarray) -> tuple[float, float, float, float]:
    """(xc, yc, w, h) normalised box around a normalised polygon."""
    x1, y1 = poly.min(0)
    x2, y2 = poly.max(0)
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def box_xyxy_to_xywhn(x1, y1, x2, y2, w: int, h: int) -> tuple[float, float, float, float]:
    """Pixel corners -> normalised centre/size, clipped to the image."""
    x1, x2 = max(0.0, min(x1, x2)), min(float(w), max(x1, x2))
    y1, y2 = max(0.0, min(y1, y2)), min(float(h), max(y1, y2))
    return (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
