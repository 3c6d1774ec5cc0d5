"""Evaluate ``cns-det``: box mAP50, mAP50-95 and AP50 per class, per source, plus a confusion matrix.

``--data`` is a folder (YOLO ``images/ labels/ classes.txt``, a Roboflow export, VOC masks: every
image is scored) or a registry name (its held-out ``--split`` is scored; ``cns`` has a patient-disjoint
``test`` split that training never saw). Class names are matched to the model's by name.

Partial labels: each source is scored on its own, over the classes it labels. A tv_plane image shows a
choroid plexus that tv_plane never annotates, so a correct choroid-plexus box there must not count as
a false positive (Ultralytics' AP only covers classes with ground truth in the scored set, which is
exactly this rule when one source is scored at a time). The headline ``map50`` is the mean over
(source, class) pairs; ``by_source`` has each source's own numbers.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.report import write_json

log = logging.getLogger(__name__)


def scored_records(data: str | Path, kind: str, split: str = "val") -> tuple[list, str]:
    """Records to score: every image of a folder, or one split of a registry dataset."""
    from fetal_detect.data import registry

    p = Path(str(data))
    if p.is_dir():
        entry = registry.get_entry(p)
        return registry.read_records(entry, kind), f"folder {p} ({entry.layout}, all images)"
    entry = registry.get_entry(str(data))
    prepared = registry.prepare(str(data), kind)
    import pandas as pd

    meta = pd.read_csv(prepared.root / "meta.csv", dtype={"patient": str, "name": str})
    keep = set(meta.loc[meta["split"] == split, "name"])
    if not keep:
        raise FetalDetectError(f"dataset '{entry.name}' has no '{split}' split "
                               f"(splits: {', '.join(sorted(set(meta['split'])))})")
    if kind == "classify":  # the written split holds the label (its folder): no need to read the sources again
        from fetal_detect.data.converters import Record

        rows = meta[meta["split"] == split]
        records = [Record(name=r["name"], image=(prepared.root / r["file"]).resolve(), patient_id=str(r["patient"]),
                          label=Path(r["file"]).parent.name, meta={"source_dataset": r.get("source_dataset", "")})
                   for _, r in rows.iterrows()]
    else:
        records = [r for r in registry.read_records(entry, kind) if r.name in keep]
    return records, f"{entry.name} {split} split (patient-disjoint, {len(records)} images)"


def by_source(records: list) -> dict[str, list]:
    groups = defaultdict(list)
    for r in records:
        groups[r.meta.get("source_dataset", "data")].append(r)
    return dict(groups)


def ultralytics_val(records: list, names: list[str], weights: Path, out: Path, kind: str, imgsz: int,
                    tag: str) -> dict:
    """Write ``records`` as a one-split YOLO set in the model's class order and run Ultralytics val.

    Returns ``{"map50", "map50_95", "ap50": {cls: v}, "ap50_95": {cls: v}, "n_images", "plots"}``
    (for ``kind='segment'`` the mask metrics, with the box ones under ``box_*``).
    """
    from fetal_detect.data.registry import DatasetEntry, write_dataset

    known = set(names)
    dropped = sorted({n for r in records for n, *_ in r.boxes + r.polygons if n not in known})
    for r in records:
        r.split = "val"
        r.boxes = [b for b in r.boxes if b[0] in known]
        r.polygons = [p for p in r.polygons if p[0] in known]
    entry = DatasetEntry(name=tag, layout="records", source={}, names=list(names), split={"use_source_split": True})
    prepared = write_dataset(records, entry, kind, out / "data" / tag, fingerprint=tag)
    import yaml

    data_yaml = yaml.safe_load(prepared.data.read_text())
    prepared.data.write_text(yaml.safe_dump({**data_yaml, "train": data_yaml["val"]}, sort_keys=False))  # required key
    YOLO = settings.import_ultralytics().YOLO
    model = YOLO(str(weights), task=kind)
    m = model.val(data=str(prepared.data), split="val", imgsz=imgsz, batch=8, conf=0.001, iou=0.7, workers=0,
                  plots=True, project=str(out.resolve()), name=tag, exist_ok=True, verbose=False, device=settings.torch_device())
    idx = [int(i) for i in m.ap_class_index]
    res = {"n_images": len(records), "classes_without_model_class": dropped,
           "plots": str(Path(m.save_dir) / "confusion_matrix.png")}
    groups = (("", m.seg), ("box_", m.box)) if kind == "segment" else (("", m.box),)
    for prefix, g in groups:
        res[f"{prefix}map50"] = float(g.map50) if idx else None
        res[f"{prefix}map50_95"] = float(g.map) if idx else None
        res[f"{prefix}ap50"] = {names[c]: float(v) for c, v in zip(idx, g.ap50)}
        res[f"{prefix}ap50_95"] = {names[c]: float(v) for c, v in zip(idx, g.ap)}
    return res


def evaluate_per_source(task: str, kind: str, data, weights=None, out=None, split: str = "val",
                        scored: tuple[list, str] | None = None) -> dict:
    """Score each source of ``data`` on its own (see the module docstring) and write metrics.json.
    ``scored``: ``scored_records(data, kind, split)`` when the caller already has it."""
    from fetal_detect.runtime import read_sidecar, resolve_weights
    from fetal_detect.tasks import get_task

    t = get_task(task)
    w = resolve_weights(t, weights)
    meta = read_sidecar(w)
    out = Path(out or settings.RUNS_DIR / "evaluate" / task / Path(str(data)).name)
    out.mkdir(parents=True, exist_ok=True)
    records, described = scored or scored_records(data, kind, split)
    if not records:
        raise FetalDetectError(f"{data}: no images to score")
    names = meta.get("names") or _model_names(w, kind)
    imgsz = int(meta.get("imgsz") or t.imgsz)
    sources = {s: ultralytics_val(rs, names, w, out, kind, imgsz, tag=s) for s, rs in by_source(records).items()}
    pairs = [(s, c) for s, r in sources.items() for c in r["ap50"]]
    metrics = {"task": task, "data": described, "split": split, "weights": str(w), "imgsz": imgsz,
               "n_images": len(records),
               "map50": _mean([sources[s]["ap50"][c] for s, c in pairs]),
               "map50_95": _mean([sources[s]["ap50_95"][c] for s, c in pairs])}
    for c in names:  # per class: mean over the sources that label it
        vals = [sources[s]["ap50"][c] for s in sources if c in sources[s]["ap50"]]
        if vals:
            metrics[f"ap50_{c}"] = _mean(vals)
    metrics["by_source"] = sources
    if len(sources) == 1:
        metrics["confusion_matrix"] = next(iter(sources.values()))["plots"]
    else:
        metrics["confusion_matrix"] = {s: r["plots"] for s, r in sources.items()}
    metrics["out"] = str(out)
    write_json(out / "metrics.json", metrics)
    return metrics


def _mean(vals) -> float | None:
    return float(np.mean(vals)) if len(vals) else None


def _model_names(weights: Path, kind: str) -> list[str]:
    YOLO = settings.import_ultralytics().YOLO

    names = YOLO(str(weights), task=kind).names
    return [names[i] for i in sorted(names)]


def evaluate(data: str | Path, weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", **_) -> dict:
    """Box mAP of a cns-det model on ``data``; writes ``OUT/metrics.json`` and confusion matrix plots."""
    return evaluate_per_source("cns-det", "detect", data, weights, out, split)
