"""Evaluate ``nt-det``: mAP50, mAP50-95 and per-structure AP50 (``ap50_<structure>``) plus a PR curve.

``--data`` is a registry name (its held-out ``val`` split is scored; for ``nt_shenzhen`` that split
is per image, since the set has no patient ids) or a folder in the Shenzhen layout (``images/`` and
``ObjectDetection.csv`` or the upstream ``.xlsx``): then every image in it is scored.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.report import write_json

log = logging.getLogger(__name__)


def metric_key(name: str) -> str:
    """``nasal bone`` -> ``ap50_nasal_bone``."""
    return "ap50_" + name.replace(" ", "_")


def data_yaml_for(data: str | Path, split: str, out: Path, names: list[str] | None = None) -> tuple[Path, str, str]:
    """(data.yaml to validate on, split key in it, description). A folder is scored whole, its
    classes numbered as the model's ``names`` (default: the nt_shenzhen label space)."""
    from fetal_detect.data import registry

    p = Path(data)
    if not p.is_dir():
        prepared = registry.prepare(str(data), "detect")
        if split not in {f["split"] for f in prepared.manifest["files"]}:
            raise FetalDetectError(f"dataset '{prepared.manifest['dataset']}' has no '{split}' split")
        return prepared.data, split, f"{prepared.manifest['dataset']} {split} split"
    entry = registry.get_entry(p)
    entry.names = list(names or registry.get_entry("nt_shenzhen").names)
    entry.split = {"val": 0.5, "seed": 0}
    records = registry.read_records(entry, "detect")
    if not records:
        raise FetalDetectError(f"{p}: no images found")
    prepared = registry.write_dataset(records, entry, "detect", out / "dataset", fingerprint="evaluation")
    cfg = yaml.safe_load(prepared.data.read_text())
    present = [s for s in ("train", "val", "test") if s in cfg]
    cfg["val"] = [cfg[s] for s in present]  # every image of the folder, whatever split it was given
    path = out / "data-all.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, "val", f"folder {p} (all {len(records)} images)"


def evaluate(data: str | Path, weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", imgsz: int | None = None, batch: int = 8, progress: bool = True) -> dict:
    """Validate the detector and write metrics.json and pr_curve.png (Ultralytics' PR curve) under ``out``."""
    from fetal_detect.runtime import read_sidecar, resolve_weights
    from fetal_detect.tasks import get_task

    task = get_task("nt-det")
    w = resolve_weights(task, weights)
    out = Path(out or settings.RUNS_DIR / "evaluate" / "nt-det" / Path(str(data)).name)
    out.mkdir(parents=True, exist_ok=True)
    data_yaml, split_key, described = data_yaml_for(data, split, out, read_sidecar(w).get("names"))
    YOLO = settings.import_ultralytics().YOLO
    imgsz = int(imgsz or read_sidecar(w).get("imgsz") or task.imgsz)
    try:
        model = YOLO(str(w), task="detect")
    except Exception as e:
        raise FetalDetectError(f"{w}: cannot load model ({type(e).__name__}: {e})") from None
    val_dir = out / "ultralytics"
    res = model.val(data=str(data_yaml), split=split_key, imgsz=imgsz, batch=batch, workers=0, device="cpu",
                    plots=True, project=str(out.resolve()), name="ultralytics", exist_ok=True, verbose=progress)
    names = res.names if isinstance(res.names, dict) else dict(enumerate(res.names))
    metrics = {"task": "nt-det", "data": described, "weights": str(w), "imgsz": imgsz,
               "map50": round(float(res.box.map50), 4), "map50_95": round(float(res.box.map), 4),
               "precision": round(float(res.box.mp), 4), "recall": round(float(res.box.mr), 4)}
    ap50 = {int(c): float(res.box.ap50[i]) for i, c in enumerate(res.box.ap_class_index)}
    for cid, name in sorted(names.items()):
        metrics[metric_key(name)] = round(ap50[cid], 4) if cid in ap50 else None
    metrics["targets"] = {"ap50_NT": 0.95, "map50": 0.85}
    pr = next((p for p in (val_dir / "BoxPR_curve.png", val_dir / "PR_curve.png") if p.exists()), None)
    if pr is not None:
        shutil.copyfile(pr, out / "pr_curve.png")
        metrics["pr_curve"] = str(out / "pr_curve.png")
    write_json(out / "metrics.json", metrics)
    metrics["out"] = str(out)
    return metrics
