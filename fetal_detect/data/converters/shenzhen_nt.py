"""Shenzhen NT layout: ``images/N.jpg`` + a box table with one row per structure.

The table is ``ObjectDetection.csv`` (or the upstream ``.xlsx`` of the same table) with columns
``fname, structure, h_min, w_min, h_max, w_max``: **h is the row (y), w the column (x)**, in px.
Nine structures: NT, IT, CM, thalami, midbrain, palate, nasal bone, nasal tip, nasal skin.

The set has no patient ids; each image is taken as its own patient (the registry then splits per
image, which is documented in ``docs/nt.md``). For ``segment`` the NT fluid band is *derived* from
the image inside the NT box (:mod:`fetal_detect.data.nt_masks`): only masks that pass the quality
checks become polygons, and every derived mask is written as a PNG (plus ``qc.csv``) under
``runs/datasets/<entry>/derived_masks/`` so it can be inspected.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from fetal_detect.data.converters.base import Record, box_xyxy_to_xywhn, list_images
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)
COLUMNS = ("fname", "structure", "h_min", "w_min", "h_max", "w_max")


def find_table(root: Path) -> Path:
    """``ObjectDetection.csv``, else any ``*.csv``/``*.xlsx`` with the box columns, in ``root``."""
    root = Path(root)
    cands = [root / "ObjectDetection.csv", *sorted(root.glob("*.xlsx")), *sorted(root.glob("*.csv"))]
    for p in cands:
        if p.exists():
            return p
    raise FetalDetectError(f"{root}: not in the Shenzhen NT layout (no ObjectDetection.csv or .xlsx box table)")


def read_box_table(path: Path):
    """The box table as a DataFrame with columns :data:`COLUMNS` (CSV or the upstream XLSX)."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_excel(path, engine="openpyxl") if path.suffix.lower() in (".xlsx", ".xlsm") else pd.read_csv(path)
    except Exception as e:  # unreadable / not a table
        raise FetalDetectError(f"{path.name}: cannot read the box table ({type(e).__name__}: {e})") from None
    df.columns = [str(c).strip().lower().replace(" ", "_") for c in df.columns]
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise FetalDetectError(f"{path.name}: box table lacks column(s) {', '.join(missing)} "
                               f"(expected {', '.join(COLUMNS)}; h = row/y, w = column/x)")
    df = df[list(COLUMNS)].dropna()
    df["fname"] = df["fname"].astype(str).str.strip()
    df["structure"] = df["structure"].astype(str).str.strip()
    for c in COLUMNS[2:]:
        df[c] = df[c].astype(float)
    return df


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) in px from the header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        raise FetalDetectError(f"{path.name}: cannot read the image header") from None


def iter_boxes(root: Path) -> tuple[list[tuple[Path, list[tuple[str, float, float, float, float]]]], list[dict]]:
    """``[(image, [(structure, x1, y1, x2, y2) px])]`` and the problems found (missing images, bad rows)."""
    root = Path(root)
    table = read_box_table(find_table(root))
    img_dir = root / "images" if (root / "images").is_dir() else root
    images = {p.name: p for p in list_images(img_dir)}
    boxes: dict[str, list] = defaultdict(list)
    problems = []
    for r in table.itertuples(index=False):
        y1, x1, y2, x2 = r.h_min, r.w_min, r.h_max, r.w_max
        if not (x2 > x1 and y2 > y1):
            problems.append({"file": r.fname, "error": f"empty box for {r.structure}"})
            continue
        boxes[r.fname].append((r.structure, x1, y1, x2, y2))
    for fname in sorted(set(boxes) - set(images)):
        problems.append({"file": fname, "error": "listed in the box table but no image"})
    items = [(images[f], boxes.get(f, [])) for f in sorted(images, key=_natural)]
    return items, problems


def _natural(name: str):
    stem = Path(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def read_shenzhen_nt(entry, root: Path, kind: str) -> Iterable[Record]:
    """Detection records (9 structures) or, for ``segment``, derived NT band polygons (QC-passed only).

    Options (``datasets.yaml``): ``holdout_from: NAME`` drops the images that the registry entry NAME
    puts in its val/test split, so a model trained here never sees the detector's validation images.
    """
    items, problems = iter_boxes(root)
    for p in problems:
        log.warning("%s: %s (skipped)", p["file"], p["error"])
    opts = getattr(entry, "options", {}) or {}
    if kind == "segment":
        yield from _segment_records(entry, items, opts)
        return
    for img, bxs in items:
        w, h = image_size(img)
        yield Record(name=img.stem, image=img, patient_id=img.stem,
                     boxes=[(n, *box_xyxy_to_xywhn(x1, y1, x2, y2, w, h)) for n, x1, y1, x2, y2 in bxs],
                     meta={"width": w, "height": h})


def _held_out(opts: dict, items) -> set[str]:
    """Stems that another entry (``holdout_from``) puts in val/test (its split rule, same ids)."""
    name = opts.get("holdout_from")
    if not name:
        return set()
    from fetal_detect.data.registry import get_entry
    from fetal_detect.data.splits import assign_by_rule

    stems = [img.stem for img, _ in items]
    splits = assign_by_rule(stems, get_entry(name).split)
    return {s for s, sp in zip(stems, splits) if sp != "train"}


def _segment_records(entry, items, opts: dict) -> Iterable[Record]:
    import cv2

    from fetal_detect import settings
    from fetal_detect.data.converters.base import mask_to_polygons
    from fetal_detect.data.nt_masks import derive_nt_mask
    from fetal_detect.report import write_csv

    skip = _held_out(opts, items)
    out = settings.CACHE_DIR / entry.name / "derived_masks"
    out.mkdir(parents=True, exist_ok=True)
    qc_rows, kept = [], 0
    for img, bxs in items:
        nt = [b for b in bxs if b[0] == "NT"]
        if img.stem in skip or not nt:
            continue
        grey = cv2.imread(str(img), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            log.warning("%s: cannot decode (skipped)", img.name)
            continue
        _, x1, y1, x2, y2 = nt[0]
        res = derive_nt_mask(grey, (x1, y1, x2, y2))
        qc_rows.append({"image": img.name, "passed": res.passed, **res.qc})
        if res.mask is not None:
            cv2.imwrite(str(out / f"{img.stem}.png"), res.mask)
        if not res.passed:
            continue
        polys = mask_to_polygons(res.mask)
        if not polys:
            continue
        kept += 1
        h, w = grey.shape
        yield Record(name=img.stem, image=img, patient_id=img.stem, polygons=[("NT", max(polys, key=len))],
                     meta={"width": w, "height": h, "derived_mask": str(out / f"{img.stem}.png")})
    write_csv(out / "qc.csv", qc_rows)
    log.info("derived NT masks: %d of %d passed QC (%s)", kept, len(qc_rows), out)
