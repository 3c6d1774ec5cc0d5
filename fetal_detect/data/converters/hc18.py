"""HC18 layout: ``images/NNN[_k]HC.png``, skull as a filled mask (``masks/NNN_HC_Mask.png``) or as the
official ellipse outline (``NNN_HC_Annotation.png``), and ``*pixel_size*_HC.csv``.

The patient id is the 3-digit prefix: ``014_2HC.png`` and ``014_3HC.png`` are one patient.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from fetal_detect.data.converters.base import Record, list_images, mask_to_polygons
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)
PATIENT_PATTERN = r"^(\d{3})"


@dataclass
class HC18Item:
    """One HC18 image with its reference (``mask_path`` may be an outline; ``hc_mm`` may be None)."""

    image_path: Path
    mask_path: Path | None
    pixel_size_mm: float | None
    hc_mm: float | None
    patient_id: str

    @property
    def name(self) -> str:
        return self.image_path.stem

    def load_mask(self) -> np.ndarray:
        """Filled skull mask (uint8 0/255) at image resolution; an outline is filled by an ellipse fit."""
        return load_reference_mask(self.mask_path)


def load_reference_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FetalDetectError(f"{path.name}: cannot read the mask image")
    m = (m > 127).astype(np.uint8)
    if "_Annotation" in path.stem:  # official outline: 1-2 px ellipse; fill it by fitting the ellipse
        ys, xs = np.nonzero(m)
        if len(xs) < 5:
            raise FetalDetectError(f"{path.name}: the annotation outline is empty")
        (cx, cy), (d1, d2), ang = cv2.fitEllipse(np.stack([xs, ys], 1).astype(np.float32))
        m = np.zeros_like(m)
        cv2.ellipse(m, ((cx, cy), (d1, d2), ang), 1, thickness=cv2.FILLED)
    return m * 255


def _find_csv(root: Path) -> Path | None:
    for pattern in ("pixel_size_and_HC.csv", "*pixel_size_and_HC.csv", "*pixel_size*.csv"):
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
    return None


def _find_mask(root: Path, img: Path) -> Path | None:
    stem = img.stem
    for cand in (root / "masks" / f"{stem}_Mask.png", img.parent / f"{stem}_Annotation.png",
                 root / f"{stem}_Annotation.png", root / "masks" / f"{stem}_Annotation.png"):
        if cand.exists():
            return cand
    return None


def iter_hc18(root: Path, require_masks: bool = True) -> tuple[list[HC18Item], list[dict]]:
    """Items of an HC18-layout folder and a list of problems ``{file, error}`` (the batch goes on)."""
    root = Path(root)
    if not root.is_dir():
        raise FetalDetectError(f"{root}: no such folder")
    csv_path = _find_csv(root)
    if csv_path is None:
        raise FetalDetectError(f"{root}: not in the HC18 layout (no pixel_size_and_HC.csv; expected images/, "
                               "masks/ or *_Annotation.png, and pixel_size_and_HC.csv)")
    rows: dict[str, dict] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if row.get("filename"):
                rows[row["filename"]] = row
    img_dir = root / "images" if (root / "images").is_dir() else root
    items, problems = [], []
    for img in list_images(img_dir):
        if img.stem.endswith(("_Annotation", "_Mask")):
            continue
        row = rows.get(img.name)
        if row is None:
            problems.append({"file": img.name, "error": f"no row in {csv_path.name}"})
            continue
        try:
            px = float(row.get("pixel size(mm)") or row.get("pixel size (mm)") or "nan")
        except ValueError:
            px = float("nan")
        if not px > 0:
            problems.append({"file": img.name, "error": f"pixel size must be > 0 mm, got {row.get('pixel size(mm)')!r}"})
            continue
        hc_text = row.get("head circumference (mm)") or ""
        try:
            hc = float(hc_text) if hc_text else None
        except ValueError:
            problems.append({"file": img.name, "error": f"head circumference is not a number: {hc_text!r}"})
            continue
        mask = _find_mask(root, img)
        if mask is None and require_masks:
            problems.append({"file": img.name, "error": "no mask (masks/NAME_Mask.png or NAME_Annotation.png)"})
            continue
        from fetal_detect.data.splits import patient_of

        items.append(HC18Item(img, mask, px, hc, patient_of(img.name, PATIENT_PATTERN)))
    if not items:
        raise FetalDetectError(f"{root}: no usable images in the HC18 layout ({len(problems)} problems, "
                               f"first: {problems[0]['file']}: {problems[0]['error']})" if problems else
                               f"{root}: no images found")
    return items, problems


def read_hc18(entry, root: Path, kind: str) -> Iterable[Record]:
    """Records with the skull polygon (segment) or its box (detect), plus pixel size and HC in meta."""
    items, problems = iter_hc18(root)
    for p in problems:
        log.warning("%s: %s (skipped)", p["file"], p["error"])
    for it in items:
        mask = it.load_mask()
        polys = mask_to_polygons(mask)
        if not polys:
            log.warning("%s: empty mask (skipped)", it.image_path.name)
            continue
        poly = max(polys, key=len)
        yield Record(name=it.name, image=it.image_path, patient_id=it.patient_id,
                     polygons=[("skull", poly)],
                     meta={"pixel_size_mm": it.pixel_size_mm, "hc_mm": it.hc_mm})
