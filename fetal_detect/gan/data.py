"""Real images of a registry dataset as gray arrays with a class per image (the GAN's label space).

The class is the file-name subtype (:mod:`fetal_detect.gan.labels`) when the names carry one
(``brain_abnormal``), else the first box class (or the classification label) of the image.
Images come from the registry's converted dataset, so its patient/source split is the one used.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetal_detect.data import registry
from fetal_detect.data.converters.yolo import parse_label_file
from fetal_detect.errors import FetalDetectError
from fetal_detect.gan.labels import subtype_of


@dataclass
class RealSet:
    """``images``: N x S x S uint8 gray; ``labels``: class index per image; ``boxes``: (box class, xc, yc, w, h)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    box_names: list[str]
    files: list[str] = field(default_factory=list)
    boxes: list[tuple] = field(default_factory=list)

    def class_box(self) -> dict[str, list]:
        """Per class: the box class most of its images carry and the mean whole-image box (normalised)."""
        out = {}
        for k, c in enumerate(self.classes):
            bs = [b for b, lab in zip(self.boxes, self.labels) if lab == k and b]
            if not bs:
                out[c] = [self.box_names[0] if self.box_names else c, 0.5, 0.5, 0.9, 0.9]
                continue
            name = Counter(b[0] for b in bs).most_common(1)[0][0]
            out[c] = [name, *np.mean([b[1:] for b in bs], 0).round(4).tolist()]
        return out


def _class_of(name: str, boxes: list, by_subtype: bool) -> str | None:
    if by_subtype:
        try:
            return subtype_of(name)
        except ValueError:
            return None
    return boxes[0][0] if boxes else None


def load_real(data: str, imgsz: int, splits=("train",), classes: list[str] | None = None) -> RealSet:
    """Images of ``splits`` of dataset ``data`` resized to ``imgsz`` px, with their classes.

    ``classes`` fixes the label space (e.g. the generator's); images of other classes are dropped.
    Synthetic images (``meta.synthetic``) in a converted dataset are never loaded as real.
    """
    import cv2

    prepared = registry.prepare(data, "detect")
    box_names = prepared.names
    synthetic = {f["name"] for f in prepared.manifest["files"] if f.get("synthetic")}
    files = [(s, p) for s in splits for p in sorted((prepared.root / "images" / s).glob("*"))
             if p.name not in synthetic]
    if not files:
        raise FetalDetectError(f"dataset '{data}': no images in split(s) {', '.join(splits)}")
    names = [p.name for _, p in files]
    by_subtype = len({_class_of(n, [], True) for n in names} - {None}) >= 2
    imgs, labs, keep, boxes = [], [], [], []
    for split, p in files:
        bx, _, _ = parse_label_file(prepared.root / "labels" / split / f"{p.stem}.txt", box_names, "detect")
        c = _class_of(p.name, bx, by_subtype)
        if c is None or (classes is not None and c not in classes):
            continue
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise FetalDetectError(f"{p}: not a readable image")
        imgs.append(cv2.resize(im, (imgsz, imgsz), interpolation=cv2.INTER_AREA))
        labs.append(c)
        keep.append(p.name)
        boxes.append(bx[0] if bx else None)
    classes = list(classes) if classes is not None else sorted(set(labs))
    index = {c: i for i, c in enumerate(classes)}
    return RealSet(np.stack(imgs) if imgs else np.zeros((0, imgsz, imgsz), np.uint8),
                   np.array([index[c] for c in labs], np.int64), classes, box_names, keep, boxes)


def counts(rs: RealSet) -> dict[str, int]:
    c = Counter(rs.labels.tolist())
    return {name: c.get(i, 0) for i, name in enumerate(rs.classes)}


def to_tensor(images: np.ndarray):
    """uint8 N x S x S -> float N x 1 x S x S in [-1, 1]."""
    import torch

    return torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)


def to_uint8(x) -> np.ndarray:
    """float N x 1 x S x S in [-1, 1] -> uint8 N x S x S."""
    return ((x.detach().clamp(-1, 1).squeeze(1).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)


def weights_path(p: str | Path) -> Path:
    p = Path(p)
    if not p.exists():
        raise FetalDetectError(f"{p}: generator weights not found")
    return p
