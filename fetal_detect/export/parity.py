"""Parity: the task's metric for the PyTorch model and an export on the validation split, and the allowed change."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.runtime import read_sidecar
from fetal_detect.tasks import Task

# Allowed metric change of an export against the PyTorch FP32 model (worse direction only).
TOLERANCE = {"hc_mae_mm": 0.2, "map50": 0.01, "accuracy": 0.01, "dice": 0.01}


def exported_predictor(t: Task, path: Path, conf: float = 0.25):
    """A predictor on an exported file: the runtime's back-end for its suffix (:data:`runtime.BACKENDS`: .onnx,
    .xml), Ultralytics' own back-ends (through the torch predictor) for any other export format."""
    from fetal_detect.runtime import BACKENDS

    return BACKENDS.get(Path(path).suffix, BACKENDS[".pt"])()(t, path, conf=conf)


def parity(t: Task, pt: Path, exported: Path, prepared, n: int | None = None) -> dict:
    """The task's metric for the PyTorch model and the export on the validation split, and the change."""
    if t.measure == "hc":
        ref, exp = _hc_parity(t, pt, exported, prepared, n)
    else:
        ref, exp = _ultralytics_metrics(t, pt, prepared), _ultralytics_metrics(t, exported, prepared)
    delta = {k: exp[k] - ref[k] for k in ref if isinstance(ref.get(k), float) and isinstance(exp.get(k), float)}
    failures = []
    for k, tol in TOLERANCE.items():
        if k not in delta:
            continue
        worse = delta[k] if k.endswith("_mm") else -delta[k]  # errors must not grow, scores must not drop
        if worse > tol:
            failures.append(f"{k} {ref[k]:.4g} -> {exp[k]:.4g} (allowed change {tol:g})")
    return {"split": "val", "n_images": ref.get("n_images"), "pytorch": ref, "exported": exp,
            "delta": delta, "tolerance": {k: v for k, v in TOLERANCE.items() if k in delta},
            "passed": not failures, "failures": "; ".join(failures)}


def _hc_parity(t: Task, pt: Path, exported: Path, prepared, n: int | None) -> tuple[dict, dict]:
    """Dice and HC MAE of both models through the HC pipeline, on the val images both measured (paired)."""
    from fetal_detect.measure.hc_scoring import score, split_items, summarise
    from fetal_detect.pipeline.hc import HCMeasurer

    items = split_items(prepared, "val")
    items = items[:n] if n else items
    rows = {}
    for key, w in (("ref", pt), ("exp", exported)):
        measurer = HCMeasurer(predictor=exported_predictor(t, w))
        rows[key] = score(items, measurer, progress=False)[0]
    both = [i for i, (a, b) in enumerate(zip(rows["ref"], rows["exp"])) if a["status"] == b["status"] == "ok"]
    out = []
    for key in ("ref", "exp"):
        m = summarise([rows[key][i] for i in both])
        out.append({"n_images": len(items), "n_failed": sum(r["status"] != "ok" for r in rows[key]),
                    "n_paired": len(both), **{k: m.get(k) for k in ("dice", "hc_mae_mm", "hc_bias_mm")}})
    diff = [abs(rows["exp"][i]["hc_mm"] - rows["ref"][i]["hc_mm"]) for i in both]
    out[1]["hc_abs_diff_to_pytorch_mm"] = float(np.mean(diff)) if diff else None
    return out[0], out[1]


def _ultralytics_metrics(t: Task, weights: Path, prepared) -> dict:
    """mAP50 (box, or mask for segment) or top-1 accuracy from Ultralytics val on the whole val split."""
    YOLO = settings.import_ultralytics().YOLO
    args = dict(data=str(prepared.data), imgsz=read_sidecar(weights).get("imgsz") or t.imgsz, batch=1, split="val",
                plots=False, verbose=False, device=settings.torch_device(), workers=0,
                project=str((settings.RUNS_DIR / "export" / "val").resolve()), name=Path(weights).stem, exist_ok=True)
    r = YOLO(str(weights), task=t.kind).val(**args)
    if t.kind == "classify":
        return {"accuracy": float(r.top1), "n_images": None}
    box = r.seg if t.kind == "segment" else r.box
    return {"map50": float(box.map50), "map50_95": float(box.map), "n_images": None}
