"""Converters: one reader per source layout, one writer for all of them.

A reader turns a source folder into :class:`Record` items (image, patient, annotations in
normalised 0..1 coordinates). :func:`fetal_detect.data.registry.prepare` splits them by patient
and writes the Ultralytics layout, so no reader repeats the split/copy/label loop.

To add a layout: write ``read_<layout>(entry, root, kind) -> Iterable[Record]`` in its own module
and register it in :data:`READERS` (and, optionally, a detector in :data:`DETECTORS`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from fetal_detect.data.converters.base import (IMAGE_SUFFIXES, Record, box_from_polygon, box_xyxy_to_xywhn,
                                               list_images, mask_to_polygons)

__all__ = ["IMAGE_SUFFIXES", "Record", "box_from_polygon", "box_xyxy_to_xywhn", "list_images", "mask_to_polygons",
           "get_reader", "detect_layout"]


def _readers() -> dict[str, Callable[..., Iterable[Record]]]:
    from fetal_detect.data.converters import hc18, phantom, yolo

    table = {"hc18": hc18.read_hc18, "phantom": phantom.read_phantom,
             "yolo": yolo.read_yolo, "roboflow-yolov8": yolo.read_roboflow}
    for module, layouts in (("shenzhen_nt", {"shenzhen-nt": "read_shenzhen_nt"}),
                            ("voc_mask", {"voc-mask": "read_voc_mask"}),
                            ("fetal_planes_db", {"fetal-planes-db": "read_fetal_planes_db"}),
                            ("imagefolder", {"imagefolder": "read_imagefolder"})):
        try:  # layouts added by later modules register themselves here when present
            mod = __import__(f"fetal_detect.data.converters.{module}", fromlist=["x"])
        except ImportError:
            continue
        for layout, fn in layouts.items():
            table[layout] = getattr(mod, fn)
    return table


def get_reader(layout: str) -> Callable[..., Iterable[Record]]:
    from fetal_detect.errors import FetalDetectError

    table = _readers()
    if layout not in table:
        raise FetalDetectError(f"unknown dataset layout '{layout}'; known: {', '.join(sorted(table))}")
    return table[layout]


def detect_layout(folder: Path) -> str | None:
    """Guess the layout of a folder a user points at (``--data DIR``)."""
    folder = Path(folder)
    if any(folder.glob("*pixel_size*.csv")):
        return "hc18"
    if (folder / "ObjectDetection.csv").exists() or any(folder.glob("*.xlsx")):
        return "shenzhen-nt"
    if any(folder.glob("*FETAL_PLANES_DB*.csv")):
        return "fetal-planes-db"
    if (folder / "data.yaml").exists() and any((folder / s).is_dir() for s in ("train", "valid", "test")):
        return "roboflow-yolov8"
    if (folder / "labels").is_dir() and (folder / "images").is_dir():
        return "yolo"
    if (folder / "masks").is_dir() and (folder / "images").is_dir():
        return "voc-mask"
    subdirs = [d for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
    if subdirs and all(list_images(d) for d in subdirs):
        return "imagefolder"
    return None
