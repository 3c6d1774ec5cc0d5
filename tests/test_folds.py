"""Patient-level K-fold cross-validation: K models, each scored on its own val fold, mean +- SD."""
import json
from pathlib import Path


def test_folds_report_mean_and_sd_of_the_task_metrics(runs_dir):
    from fetal_detect.engine.train import train_folds

    out = train_folds("hc-seg", 2, data="phantom-hc", epochs=1, imgsz=64, batch=8, workers=0,
                      extra={"plots": False})
    assert [f["fold"] for f in out["per_fold"]] == [0, 1]
    for key in ("n_images", "n_scored"):  # the HC evaluator ran on each fold's own val split
        assert key in out["summary"] and out["summary"][key]["n"] == 2
    s = out["summary"]["n_images"]
    assert s["text"].startswith(f"{s['mean']:.4g} ±")
    saved = json.loads(Path(out["path"]).read_text())
    assert saved["summary"].keys() == out["summary"].keys()
    # the two val folds are disjoint by patient and together cover every patient once
    from fetal_detect.data import registry

    vals = [{r["patient"] for r in registry.prepare("phantom-hc", "segment", folds=2, fold=k).manifest["files"]
             if r["split"] == "val"} for k in (0, 1)]
    assert vals[0] and vals[1] and not vals[0] & vals[1]
