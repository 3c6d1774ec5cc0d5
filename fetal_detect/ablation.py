"""Preprocessing ablation: the same model, seed, epochs and patient split with and without each step.

``python -m fetal_detect.ablation --tasks hc-seg,nt-det --patients 0.25 --epochs 5`` trains one model
per (task, condition) on a patient subset of the task's dataset and scores it on that subset's
patient-disjoint val split: ``hc-seg`` -> Dice and HC MAE (mm, uncalibrated so no condition gets a
fitted correction), ``nt-det`` -> mAP50 / mAP50-95 (Ultralytics). Results are appended to
``runs/ablation/results.jsonl`` (a finished run is skipped when the command is repeated) and a
Markdown table is written to ``runs/ablation/table.md``.

Every condition's val images are the *raw* images pushed through the predictor, which applies the
steps recorded in the model's sidecar: exactly what inference does.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.data import registry
from fetal_detect.tasks import get_task

log = logging.getLogger(__name__)

# condition name -> steps; "none" is the baseline, each other adds one step (sector first: it is
# what every denoiser should see), the last combines the steps that help
CONDITIONS: dict[str, list[str]] = {
    "none": [],
    "sector": ["sector"],
    "wavelet": ["wavelet"],
    "clahe": ["clahe"],
    "speckle": ["speckle"],
    "normalize": ["normalize"],
    "sector+clahe+wavelet": ["sector", "clahe", "wavelet"],
}
OUT = settings.RUNS_DIR / "ablation"


def subset(task, patients: float, seed: int, steps: list) -> registry.PreparedDataset:
    """The task dataset's registry holdout split, its ``train`` part cut to a fixed ``patients`` fraction
    of patients (``val`` kept whole, so a model fine-tuned from a holdout run never sees val patients),
    written with ``steps`` applied."""
    from fetal_detect import preprocess as pp

    entry = registry.get_entry(task.data)
    records = registry.read_records(entry, task.kind)
    for r, split in zip(records, registry._assign(records, entry, None, 0)):
        r.split = split
    keep = {r.patient_id for r in records if r.split == "train"
            and int(hashlib.sha1(f"{seed}:{r.patient_id}".encode()).hexdigest(), 16) % 10_000 < patients * 10_000}
    records = [r for r in records if r.split == "val" or r.patient_id in keep]
    key = pp.steps_key(steps)
    out = OUT / "datasets" / f"{entry.name}-p{patients:g}-s{seed}" / (f"{task.kind}-pp{key}" if key else task.kind)
    if (out / "manifest.json").exists():
        return registry.PreparedDataset(out, out / "data.yaml", json.loads((out / "manifest.json").read_text()))
    fixed = dataclasses.replace(entry, split={**(entry.split or {}), "use_source_split": True})
    return registry.write_dataset(records, fixed, task.kind, out, f"ablation:{patients}:{seed}:{key}",
                                  preprocess=pp.canonical(steps))


def score_hc(weights: Path, raw: registry.PreparedDataset) -> dict:
    """Dice (failures count 0) and HC MAE (mm, uncalibrated) on the raw val images via the runtime."""
    from fetal_detect.measure.hc_scoring import score, split_items, summarise
    from fetal_detect.pipeline.hc import HCMeasurer

    rows, _ = score(split_items(raw, "val"), HCMeasurer(weights), progress=False)
    s = summarise(rows)
    dice_all = [r.get("dice", 0.0) if r["status"] == "ok" else 0.0 for r in rows]
    err = [abs(r["hc_err_mm"]) for r in rows if r.get("hc_err_mm") is not None]
    return {"dice": float(np.mean(dice_all)), "hc_mae_mm": float(np.mean(err)) if err else None,
            "hc_icc": s.get("hc_icc"), "n_val": len(rows), "n_failed": s["n_failed"]}


def run_one(task_name: str, condition: str, epochs: int, imgsz: int, patients: float, seed: int,
            batch: int, init: str | None = None) -> dict:
    from fetal_detect.engine.train import train

    steps = CONDITIONS[condition]
    task = get_task(task_name)
    t = dataclasses.replace(task, measure=None)  # no HC calibration: compare raw model output
    raw = subset(task, patients, seed, [])
    prepared = subset(task, patients, seed, steps) if steps else raw
    t0 = time.time()
    res = train(t, data=prepared, epochs=epochs, imgsz=imgsz, batch=batch, workers=0, seed=seed, model=init,
                name=f"ablation-{condition}", preprocess=steps, patience=epochs,
                extra={"plots": False, "val": False, "project": str(OUT / "train" / task_name),
                       **({"pretrained": init} if init else {})})  # pretrained=False would re-initialise
    row = {"task": task_name, "condition": condition, "steps": steps, "epochs": epochs, "imgsz": imgsz,
           "seed": seed, "patients": patients, "init": init, "train_images": prepared.manifest["counts"]["train"]["images"],
           "val_images": prepared.manifest["counts"]["val"]["images"], "train_s": round(time.time() - t0, 1),
           "weights": str(res.weights)}
    if task.kind == "segment" and task.measure == "hc":
        row.update(score_hc(res.weights, raw))
    m = res.metrics
    for k_out, k_in in (("map50", "metrics/mAP50(B)"), ("map50_95", "metrics/mAP50-95(B)"),
                        ("mask_map50", "metrics/mAP50(M)")):
        if k_in in m:
            row[k_out] = m[k_in]
    return row


def done_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def table(rows: list[dict]) -> str:
    """Markdown table: one row per condition, the metrics of each task side by side."""
    by = {(r["task"], r["condition"]): r for r in rows if r["seed"] == 0}  # repeats with other seeds: results.jsonl
    lines = ["| condition | steps | hc-seg Dice | hc-seg HC MAE (mm) | hc-seg failed | nt-det mAP50 | nt-det mAP50-95 |",
             "|---|---|---|---|---|---|---|"]

    def f(v, p=3):
        return "-" if v is None else f"{v:.{p}f}"

    for cond, steps in CONDITIONS.items():
        hc, nt = by.get(("hc-seg", cond), {}), by.get(("nt-det", cond), {})
        if not hc and not nt:
            continue
        failed = f"{hc['n_failed']}/{hc['n_val']}" if hc else "-"
        lines.append(f"| {cond} | {','.join(steps) or '-'} | {f(hc.get('dice'))} | {f(hc.get('hc_mae_mm'), 1)} | "
                     f"{failed} | {f(nt.get('map50'))} | {f(nt.get('map50_95'))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="hc-seg,nt-det")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--imgsz", default="hc-seg=160,nt-det=256", help="TASK=px,... or one size for all")
    p.add_argument("--patients", type=float, default=0.25, help="fraction of each dataset's patients used")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline", help="UTC HH:MM after which no new run starts")
    p.add_argument("--init", default="", help="TASK=weights.pt,...: fine-tune from these (trained on the same "
                                            "holdout train split) instead of training from scratch")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = dict(kv.split("=") for kv in a.imgsz.split(",")) if "=" in a.imgsz else {}
    inits = dict(kv.split("=", 1) for kv in a.init.split(",") if kv)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.jsonl"
    for cond in a.conditions.split(","):
        for task in a.tasks.split(","):
            if any(r["task"] == task and r["condition"] == cond and r["epochs"] == a.epochs and r["seed"] == a.seed
                   and r["patients"] == a.patients and r.get("init") == inits.get(task) for r in done_rows(path)):
                continue
            if a.deadline and time.strftime("%H:%M", time.gmtime()) >= a.deadline:
                log.info("deadline %s reached; stopping before %s/%s", a.deadline, task, cond)
                break
            log.info("ablation %s / %s", task, cond)
            row = run_one(task, cond, a.epochs, int(sizes.get(task, a.imgsz if not sizes else 256)),
                          a.patients, a.seed, a.batch, inits.get(task))
            with path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            (OUT / "table.md").write_text(table(done_rows(path)))
            log.info("ablation row: %s", row)
    print((OUT / "table.md").read_text() if (OUT / "table.md").exists() else "no runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
