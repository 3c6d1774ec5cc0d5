"""One sub-folder per class (``DIR/CLASS/*.png``): the classification layout ``evaluate.py`` and users
hand in. A ``train|val|test`` level above the class folders is honoured as the source's own split."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from fetal_detect.data.converters.base import Record, list_images
from fetal_detect.data.splits import patient_of
from fetal_detect.errors import FetalDetectError

SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "test": "test"}


def class_folders(root: Path) -> list[tuple[Path, str | None]]:
    """``(class folder, split or None)`` pairs under ``root``."""
    root = Path(root)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs and all(d.name in SPLIT_DIRS for d in subdirs):
        return [(c, SPLIT_DIRS[s.name]) for s in subdirs for c in sorted(s.iterdir()) if c.is_dir()]
    return [(d, None) for d in subdirs]


def read_imagefolder(entry, root: Path, kind: str) -> Iterable[Record]:
    root = Path(root)
    folders = class_folders(root) if root.is_dir() else []
    if not folders:
        raise FetalDetectError(f"{root}: expected one sub-folder of images per class")
    pattern = (entry.split or {}).get("patient_pattern") if entry is not None else None
    for folder, split in folders:
        for img in list_images(folder):
            yield Record(name=f"{folder.name}__{img.stem}", image=img, patient_id=patient_of(img.name, pattern),
                         label=folder.name, split=split, meta={"source_split": split} if split else {})
