"""Training: the task table row + a registry dataset -> an Ultralytics model trained from its yaml.

Models are always built from their yaml (no pretrained download exists here) with a fixed seed and
deterministic ops. Outputs go to ``runs/train/<task>/<name>/`` (Ultralytics' own plots and CSV) and
a sidecar ``weights/best.json`` that the runtime reads (task, classes, imgsz, dataset, calibration).
"""
from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path

from fetal_detect import settings
from fetal_detect import gan  # noqa: F401  (registers the data registry's `synthetic` records hook)
from fetal_detect.data import registry
from fetal_detect.engine.result import TrainResult
from fetal_detect.errors import FetalDetectError
from fetal_detect.tasks import Task, get_task

log = logging.getLogger(__name__)


def train(task: str | Task, data: str | None = None, epochs: int | None = None, imgsz: int | None = None,
          model: str | None = None, batch: int | None = None, workers: int = 2, seed: int = 0,
          device: str | None = None, fold: int | None = None, folds: int | None = None,
          name: str | None = None, hours: float | None = None, patience: int = 100,
          fraction: float = 1.0, extra: dict | None = None, preprocess=None) -> TrainResult:
    """Train one model for ``task`` on ``data`` (a datasets.yaml name or a folder). Returns its best weights.

    ``preprocess``: steps of :mod:`fetal_detect.preprocess` baked into the training images (default: the
    task's ``preprocess``); they are recorded in the sidecar so the runtime applies the same ones.
    """
    t = get_task(task) if isinstance(task, str) else task
    if t.kind == "gan":
        from fetal_detect.gan import train as gan_train  # the GAN has its own loop

        return gan_train.train(data=data or t.data, epochs=epochs or t.epochs, imgsz=imgsz or t.imgsz,
                               batch=batch or t.batch, seed=seed, name=name, hours=hours)
    if epochs is not None and epochs < 1:
        raise FetalDetectError(f"--epochs must be >= 1, got {epochs}")
    from fetal_detect import preprocess as pp

    steps = pp.canonical(t.preprocess if preprocess is None else preprocess)
    if isinstance(data, registry.PreparedDataset):  # already written (e.g. an ablation subset)
        prepared, data = data, data.manifest["dataset"]
    else:
        prepared = registry.prepare(data or t.data, t.kind, folds=folds, fold=fold or 0, preprocess=steps)
    device = device or settings.torch_device()
    YOLO = settings.import_ultralytics().YOLO
    model_cfg = model or t.model
    if model_cfg.endswith(".pt") and not Path(model_cfg).exists():
        raise FetalDetectError(f"{model_cfg}: weights not found (no downloads here; pass a .yaml to train from scratch)")
    yolo = YOLO(model_cfg, task=t.kind)
    run_name = name or (f"fold{fold}" if folds else "train")
    project = settings.RUNS_DIR / "train" / t.name
    args = dict(data=str(prepared.data), epochs=epochs or t.epochs, imgsz=imgsz or t.imgsz, batch=batch or t.batch,
                workers=workers, seed=seed, deterministic=True, device=device, amp=device != "cpu",
                pretrained=model_cfg if model_cfg.endswith(".pt") else False, project=str(project.resolve()), name=run_name, exist_ok=True, patience=patience,
                fraction=fraction, plots=True, verbose=True, hsv_h=0.0, hsv_s=0.0)
    if hours:
        args["time"] = hours
    if t.kind == "detect" and prepared.manifest.get("layout") == "union":  # sources label different classes
        from fetal_detect.engine.partial_labels import PartialLabelTrainer

        args.update(trainer=PartialLabelTrainer, mosaic=0.0)
    args.update(extra or {})
    results = yolo.train(**args)
    trainer = yolo.trainer
    best = Path(trainer.best if Path(trainer.best).exists() else trainer.last)
    metrics = {k: float(v) for k, v in (getattr(results, "results_dict", None) or {}).items()
               if isinstance(v, (int, float)) and math.isfinite(v)}
    sidecar = {"task": t.name, "kind": t.kind, "names": prepared.names, "imgsz": args["imgsz"],
               "dataset": prepared.manifest["dataset"], "dataset_fingerprint": prepared.manifest["fingerprint"],
               "split": prepared.manifest["split_rule"], "counts": prepared.manifest["counts"],
               "epochs": int(getattr(trainer, "epoch", args["epochs"] - 1)) + 1, "seed": seed, "model": model_cfg, "preprocess": steps,
               "ultralytics_metrics": metrics}
    sidecar_path = best.with_suffix(".json")
    if t.measure == "hc":
        from fetal_detect.pipeline.hc import calibrate_on_training_split

        sidecar_path.write_text(json.dumps(sidecar, indent=2, default=str) + "\n")  # the predictor reads its steps
        raw = registry.prepare(data or t.data, t.kind, folds=folds, fold=fold or 0) if steps else prepared
        sidecar["calibration"] = calibrate_on_training_split(best, raw).__dict__
    sidecar_path.write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    log.info("best weights: %s (sidecar %s)", best, sidecar_path.name)
    return TrainResult(t.name, best, Path(trainer.save_dir), metrics)


ULTRALYTICS_KEYS = {"metrics/mAP50(B)": "map50", "metrics/mAP50-95(B)": "map50_95", "metrics/precision(B)": "precision",
                    "metrics/recall(B)": "recall", "metrics/mAP50(M)": "mask_map50", "metrics/mAP50-95(M)": "mask_map50_95",
                    "metrics/accuracy_top1": "top1", "metrics/accuracy_top5": "top5"}


def evaluate_fold(task: str | Task, res: TrainResult, data: str | None, folds: int, fold: int) -> dict:
    """Metrics of one fold's model on that fold's ``val`` split (patients never seen in its training).

    ``hc-seg``: the HC evaluator's Dice, HC MAE / bias / limits of agreement (mm) and ICC on the raw
    val images through the runtime (which applies the model's preprocess steps). Other tasks:
    Ultralytics' final validation of the run, which is on the same fold's val split.
    """
    t = get_task(task) if isinstance(task, str) else task
    if t.measure == "hc":
        from fetal_detect.measure.hc_scoring import score, split_items, summarise
        from fetal_detect.pipeline.hc import HCMeasurer

        raw = registry.prepare(data or t.data, t.kind, folds=folds, fold=fold)
        rows, _ = score(split_items(raw, "val"), HCMeasurer(res.weights), progress=False)
        return {k: v for k, v in summarise(rows).items() if isinstance(v, (int, float))}
    return {ULTRALYTICS_KEYS.get(k, k): v for k, v in res.metrics.items()}


def train_folds(task: str, folds: int, evaluate_fold=evaluate_fold, **kwargs) -> dict:
    """Patient-level K-fold cross-validation: train K models, score each on its own val fold, and
    return per-fold metrics and their mean +- SD (sample SD, ddof 1). Writes ``cv-Kfold.json``."""
    if folds < 2:
        raise FetalDetectError(f"--folds must be >= 2, got {folds}")
    t = get_task(task) if isinstance(task, str) else task
    kwargs.pop("name", None)  # fold runs are always named fold0..fold{K-1}
    per_fold = []
    for k in range(folds):
        res = train(t, fold=k, folds=folds, name=f"fold{k}", **kwargs)
        m = evaluate_fold(t, res, kwargs.get("data"), folds, k) if evaluate_fold else dict(res.metrics)
        per_fold.append({"fold": k, "weights": str(res.weights), **m})
    keys = sorted({k for m in per_fold for k, v in m.items() if k != "fold" and isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    summary = {}
    for key in keys:
        vals = [m[key] for m in per_fold if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]
        if not vals:
            continue
        mean, sd = statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0
        summary[key] = {"mean": mean, "sd": sd, "n": len(vals), "text": f"{mean:.4g} ± {sd:.2g}"}
    out = {"task": t.name, "folds": folds, "per_fold": per_fold, "summary": summary}
    path = settings.RUNS_DIR / "train" / t.name / f"cv-{folds}fold.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    out["path"] = str(path)
    return out
