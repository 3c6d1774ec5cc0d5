"""VOC-style class masks: ``images/NAME.jpg`` with an RGB colour mask ``masks/NAME.png`` per image.

Each class has one colour (``options: {mask_colors: {CLASS: [R, G, B]}}`` in datasets.yaml); its
pixels become segmentation polygons (one per connected region) and, for detection, one box per class
around all of its regions (the convention of the YOLO labels published with ``tv_plane``). This is
where ``tv_plane``'s ``Brain`` boxes come from: its YOLO label files carry CSP and LV only.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from fetal_detect.data.converters.base import Record, list_images, mask_to_polygons
from fetal_detect.data.splits import patient_of
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)
MIN_REGION_PX = 64  # specks smaller than this (px area) are annotation noise, not structures


def class_masks(mask_rgb: np.ndarray, colors: dict[str, list[int]], tol: int = 40) -> dict[str, np.ndarray]:
    """``{class: bool H x W}`` from an RGB mask, a pixel matching a colour within ``tol`` per channel."""
    out = {}
    for name, rgb in colors.items():
        diff = np.abs(mask_rgb.astype(np.int16) - np.asarray(rgb, np.int16)[None, None, :])
        out[name] = (diff <= tol).all(-1)
    return out


def records_from_masks(img: Path, mask_path: Path, colors: dict, kind: str, patient: str) -> Record:
    """One record: polygons per connected region (segment) or one box per class (detect)."""
    import cv2

    bgr = cv2.imread(str(mask_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FetalDetectError(f"{mask_path}: cannot read the mask image")
    h, w = bgr.shape[:2]
    rec = Record(name=img.stem, image=img, patient_id=patient)
    for name, m in class_masks(bgr[:, :, ::-1], colors).items():
        polys = mask_to_polygons(m.astype(np.uint8), min_area_px=MIN_REGION_PX)
        if not polys:
            continue
        if kind == "segment":
            rec.polygons += [(name, p) for p in polys]
        pts = np.concatenate(polys)
        (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
        rec.boxes.append((name, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
    return rec


def read_voc_mask(entry, root: Path, kind: str) -> Iterable[Record]:
    """``images/`` + ``masks/`` (same stem, PNG) -> records; colours from ``entry.options['mask_colors']``."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise FetalDetectError(f"{root}: not in the VOC-mask layout (expected images/ and masks/)")
    colors = (entry.options or {}).get("mask_colors") if entry is not None else None
    if not colors:
        raise FetalDetectError(f"{root}: VOC masks need `options: {{mask_colors: {{CLASS: [R, G, B]}}}}` "
                               "in datasets.yaml")
    pattern = (entry.split or {}).get("patient_pattern")
    for img in list_images(root / "images"):
        mask_path = root / "masks" / f"{img.stem}.png"
        if not mask_path.exists():
            log.warning("%s: no mask %s, skipped", img.name, mask_path.name)
            continue
        rec = records_from_masks(img, mask_path, colors, kind, patient_of(img.name, pattern))
        if kind == "classify":
            rec.boxes = []
        yield rec
