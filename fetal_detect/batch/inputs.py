"""Batch inputs: a folder (recursively), a glob, or a CSV with ``path`` (and ``pixel_size_mm``) -> :class:`Item` s."""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fetal_detect.errors import FetalDetectError
from fetal_detect.io import parse_pixel_size_mm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


@dataclass(frozen=True)
class Item:
    """One image to analyse; ``pixel_size_mm`` from the input CSV (None: ``--pixel-size``, DICOM, ruler)."""

    path: str
    pixel_size_mm: float | None = None


def collect_inputs(src: str | Path) -> list[Item]:
    """A folder (recursive), a glob, a CSV with ``path`` [+ ``pixel_size_mm``], or one file -> items."""
    text = str(src)
    p = Path(text)
    if p.is_dir():
        items = [Item(str(f)) for f in _walk(p)]
    elif p.is_file() and p.suffix.lower() == ".csv":
        items = read_input_csv(p)
    elif p.is_file():
        items = [Item(str(p))]
    elif any(c in text for c in "*?["):
        items = [Item(f) for f in sorted(glob.glob(text, recursive=True)) if Path(f).is_file()]
    else:
        raise FetalDetectError(f"{text}: no such file, folder or glob")
    if not items:
        raise FetalDetectError(f"{text}: no images found (PNG, JPEG, BMP, TIFF or DICOM)")
    return items


def _walk(folder: Path) -> Iterator[Path]:
    """Image files by suffix, plus suffix-less or unknown files that are DICOM (sniffed ``DICM``)."""
    from fetal_detect.io import is_regular_file, sniff_format

    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            f = Path(root) / name
            if name.startswith(".") or name.upper() == "DICOMDIR" or not is_regular_file(f):
                continue  # FIFOs, devices (a symlink to /dev/zero) and sockets would hang the batch
            if f.suffix.lower() in IMAGE_SUFFIXES:
                yield f
            elif f.suffix.lower() not in {".csv", ".json", ".txt", ".md", ".parquet", ".jsonl", ".yaml"}:
                try:
                    with open(f, "rb") as fh:
                        if sniff_format(fh.read(132)) == "dicom":
                            yield f
                except OSError:
                    continue


def read_input_csv(path: Path) -> list[Item]:
    """CSV with a ``path`` column (relative paths are relative to the CSV's folder), optional ``pixel_size_mm``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise FetalDetectError(f"{path}: the CSV needs a 'path' column (has {reader.fieldnames})")
        items = []
        for i, row in enumerate(reader, start=2):
            p = Path(row["path"].strip())
            if not p.is_absolute():
                p = path.parent / p
            px = parse_pixel_size_mm(row.get("pixel_size_mm"), f"{path}:{i}: pixel_size_mm")
            items.append(Item(str(p), px))
    return items


def file_sha256(path: str | Path) -> str | None:
    """Hex SHA-256 of a regular file's bytes (None when it cannot be read, or is a FIFO or a device)."""
    from fetal_detect.io import regular_file_sha256

    return regular_file_sha256(path)
