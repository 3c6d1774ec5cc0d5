"""YOLO layouts: a plain folder (``images/``, ``labels/``, ``classes.txt``) and a Roboflow YOLOv8 export
(``data.yaml``, ``train|valid|test/{images,labels}``). Boxes or polygons are read as written."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from fetal_detect.data.converters.base import Record, box_from_polygon, list_images
from fetal_detect.data.splits import patient_of
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)
ROBOFLOW_SPLITS = {"train": "train", "valid": "val", "test": "test"}


def yolo_lines(text: str):
    """``(line_no, class_id, values)`` for each non-blank line of a YOLO text file; class_id and values
    are None when the line is not numbers (callers decide whether that is a problem or an error)."""
    for i, line in enumerate(text.split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            yield i, int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            yield i, None, None


def parse_label_file(path: Path, names: list[str], kind: str) -> tuple[list, list, list[str]]:
    """(boxes, polygons, problems) from a YOLO label file; boxes are (name, xc, yc, w, h) normalised."""
    boxes, polys, problems = [], [], []
    if not path.exists():
        return boxes, polys, [f"{path.name}: no label file"]
    for i, cls, vals in yolo_lines(path.read_text()):
        if cls is None:
            problems.append(f"{path.name}:{i}: not numbers")
            continue
        if not 0 <= cls < len(names):
            problems.append(f"{path.name}:{i}: class id {cls} outside 0..{len(names) - 1}")
            continue
        if any(v < -1e-6 or v > 1 + 1e-6 for v in vals):
            problems.append(f"{path.name}:{i}: coordinates outside [0, 1]")
            continue
        name = names[cls]
        if len(vals) == 4:
            boxes.append((name, *vals))
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            poly = np.array(vals, float).reshape(-1, 2)
            polys.append((name, poly))
            boxes.append((name, *box_from_polygon(poly)))
        else:
            problems.append(f"{path.name}:{i}: expected 4 box values or a polygon, got {len(vals)}")
    return boxes, polys, problems


def _records(img_dir: Path, lbl_dir: Path, names: list[str], entry, kind: str, split: str | None):
    pattern = entry.split.get("patient_pattern") if entry else None
    for img in list_images(img_dir):
        boxes, polys, problems = parse_label_file(lbl_dir / f"{img.stem}.txt", names, kind)
        for p in problems:
            log.warning("%s", p)
        yield Record(name=img.stem, image=img, patient_id=patient_of(img.name, pattern),
                     boxes=boxes, polygons=polys if kind == "segment" else [], split=split,
                     meta={"source_split": split} if split else {})


def read_yolo(entry, root: Path, kind: str) -> Iterable[Record]:
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise FetalDetectError(f"{root}: not in the YOLO layout (expected images/, labels/ and classes.txt)")
    names = _class_names(root, entry)
    yield from _records(root / "images", root / "labels", names, entry, kind, None)


def read_roboflow(entry, root: Path, kind: str) -> Iterable[Record]:
    root = Path(root)
    data_yaml = root / "data.yaml"
    if not data_yaml.exists():
        raise FetalDetectError(f"{root}: not a Roboflow YOLOv8 export (no data.yaml)")
    meta = yaml.safe_load(data_yaml.read_text()) or {}
    names = meta.get("names") or []
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    found = False
    for folder, split in ROBOFLOW_SPLITS.items():
        if (root / folder / "images").is_dir():
            found = True
            yield from _records(root / folder / "images", root / folder / "labels", list(names), entry, kind, split)
    if not found:
        raise FetalDetectError(f"{root}: Roboflow export has no train/valid/test images folders")


def _class_names(root: Path, entry) -> list[str]:
    for f in ("classes.txt", "obj.names"):
        if (root / f).exists():
            return [n.strip() for n in (root / f).read_text().splitlines() if n.strip()]
    if (root / "data.yaml").exists():
        names = (yaml.safe_load((root / "data.yaml").read_text()) or {}).get("names") or []
        return list(names.values()) if isinstance(names, dict) else list(names)
    if entry is not None and entry.names:
        return list(entry.source_names or entry.names)
    raise FetalDetectError(f"{root}: no classes.txt naming the class ids")
