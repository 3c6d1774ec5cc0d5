"""FETAL_PLANES_DB (Burgos-Artizzu et al. 2020, Zenodo 3904280): ``FETAL_PLANES_DB_data.csv``
(``;``-separated: Image_name, Patient_num, Plane, Brain_plane, Operator, US_Machine, Train) and
``Images/<Image_name>.png``.

``options: {labels: planes | brain}`` picks the label: the six planes (``Fetal brain``, ``Fetal
abdomen``, ``Fetal femur``, ``Fetal thorax``, ``Maternal cervix``, ``Other``) or, for brain images
only, the three brain planes (``Trans-thalamic``, ``Trans-ventricular``, ``Trans-cerebellum``; the
``Other``/``Not A Brain`` rows are dropped). ``Train`` = 1/0 is kept as the source split when
``split: {use_source_split: true}``; patients are ``Patient_num`` either way.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Iterable

from fetal_detect.data.converters.base import Record
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)
CSV_NAME = "FETAL_PLANES_DB_data.csv"
COLUMNS = ("Image_name", "Patient_num", "Plane", "Brain_plane", "Train")
BRAIN_PLANES = ("Trans-thalamic", "Trans-ventricular", "Trans-cerebellum")


def find_csv(root: Path) -> Path:
    hits = [root / CSV_NAME] if (root / CSV_NAME).exists() else sorted(root.glob("*FETAL_PLANES_DB*.csv"))
    if not hits:
        raise FetalDetectError(f"{root}: no {CSV_NAME} (FETAL_PLANES_DB layout)")
    return hits[0]


def read_rows(path: Path) -> list[dict]:
    """CSV rows with whitespace stripped; a clear error for a wrong delimiter or missing columns."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in csv.DictReader(f, delimiter=";")]
    missing = [c for c in COLUMNS if rows and c not in rows[0]] or ([] if rows else ["(no rows)"])
    if missing:
        raise FetalDetectError(f"{path}: missing column(s) {', '.join(missing)} (expected ';'-separated "
                               f"{', '.join(COLUMNS)})")
    return rows


def label_of(row: dict, labels: str) -> str | None:
    if labels == "brain":
        return row["Brain_plane"] if row["Brain_plane"] in BRAIN_PLANES else None
    return row["Plane"] or None


def read_fetal_planes_db(entry, root: Path, kind: str) -> Iterable[Record]:
    root = Path(root)
    labels = ((entry.options or {}).get("labels") if entry is not None else None) or "planes"
    if labels not in ("planes", "brain"):
        raise FetalDetectError(f"fetal-planes-db: options.labels must be 'planes' or 'brain', got '{labels}'")
    csv_path = find_csv(root)
    img_dir = root / "Images" if (root / "Images").is_dir() else root / "images"
    missing = 0
    for row in read_rows(csv_path):
        label = label_of(row, labels)
        if label is None:
            continue
        img = img_dir / f"{row['Image_name']}.png"
        if not img.exists():
            missing += 1
            continue
        split = {"1": "train", "0": "val"}.get(row["Train"])  # the official test half is held out
        yield Record(name=row["Image_name"], image=img, patient_id=f"Patient{row['Patient_num']}", label=label,
                     split=split, meta={"plane": row["Plane"], "brain_plane": row["Brain_plane"],
                                        "operator": row.get("Operator", ""), "us_machine": row.get("US_Machine", "")})
    if missing:
        log.warning("%s: %d images listed in %s are missing from %s", root, missing, csv_path.name, img_dir.name)
