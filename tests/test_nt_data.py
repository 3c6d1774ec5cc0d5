"""Shenzhen NT converter (CSV and XLSX box tables), derived band masks, evaluators' plumbing."""
import json

import cv2
import numpy as np
import pandas as pd

from fetal_detect.data.converters import detect_layout
from fetal_detect.data.converters.shenzhen_nt import iter_boxes, read_shenzhen_nt
from fetal_detect.data.nt_masks import derive_nt_mask
from fetal_detect.data.phantom import make_nt
from fetal_detect.evaluate.nt_det import metric_key
from fetal_detect.measure.geometry import dice


def _shenzhen_folder(root, n=2, xlsx=False):
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        ph = make_nt(100 + i, pixel_size_mm=0.1, size=(320, 240))
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), ph.image)
        for name, x1, y1, x2, y2 in ph.boxes:  # h = row (y), w = column (x)
            rows.append({"fname": f"{i}.jpg", "structure": name, "h_min": y1, "w_min": x1, "h_max": y2, "w_max": x2})
    df = pd.DataFrame(rows)
    if xlsx:
        df.to_excel(root / "ObjectDetection.xlsx", index=False)
    else:
        df.to_csv(root / "ObjectDetection.csv", index=False)
    return df


def test_csv_and_xlsx_tables_give_the_same_boxes(tmp_path):
    df = _shenzhen_folder(tmp_path / "csv")
    _shenzhen_folder(tmp_path / "xlsx", xlsx=True)
    assert detect_layout(tmp_path / "csv") == detect_layout(tmp_path / "xlsx") == "shenzhen-nt"
    a, _ = iter_boxes(tmp_path / "csv")
    b, _ = iter_boxes(tmp_path / "xlsx")
    assert [x[1] for x in a] == [x[1] for x in b]
    recs = list(read_shenzhen_nt(None, tmp_path / "csv", "detect"))
    nt = next(bx for bx in recs[0].boxes if bx[0] == "NT")
    row = df[(df.fname == "0.jpg") & (df.structure == "NT")].iloc[0]
    assert nt[1] * 320 == np.float64((row.w_min + row.w_max) / 2).round(3) or abs(nt[1] * 320 - (row.w_min + row.w_max) / 2) < 1e-3
    assert abs(nt[2] * 240 - (row.h_min + row.h_max) / 2) < 1e-3  # h is y


def test_derived_mask_matches_exact_phantom_band():
    ph = make_nt(11, pixel_size_mm=0.1, nt_mm=3.0)
    box = next(b[1:] for b in ph.boxes if b[0] == "NT")
    res = derive_nt_mask(ph.image, box)
    assert res.passed, res.qc
    assert dice(res.mask, ph.mask) > 0.85


def test_metric_keys_use_underscores():
    assert metric_key("nasal bone") == "ap50_nasal_bone" and metric_key("NT") == "ap50_NT"


def test_nt_measure_evaluator_writes_metrics(tmp_path):
    from fetal_detect.evaluate.nt_measure import evaluate, phantom_grid

    m = evaluate("phantom", out=tmp_path, grid=phantom_grid(nt_mm=(1.0, 4.0), pixel_sizes=(0.1,), noises=(1.0,)),
                 progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"nt_mae_mm", "nt_max_mm", "nt_bias_mm"} <= set(saved) and saved["nt_mae_mm"] <= 0.1
    assert m["n_failed"] == 0 and (tmp_path / "per_image.csv").exists()


def test_nt_det_scores_every_image_of_a_folder(tmp_path):
    import yaml

    from fetal_detect.evaluate.nt_det import data_yaml_for

    _shenzhen_folder(tmp_path / "set", n=3)
    path, split, described = data_yaml_for(tmp_path / "set", "val", tmp_path)
    cfg = yaml.safe_load(path.read_text())
    assert split == "val" and isinstance(cfg["val"], list) and "all 3 images" in described
    assert cfg["names"][0] == "NT" and cfg["names"][6] == "nasal bone"


def test_nt_det_evaluation_with_a_relative_out_keeps_the_pr_curve_there(tmp_path, monkeypatch, no_network):
    """Ultralytics puts a relative ``project`` under its own runs folder: the evaluator must not lose its plots."""
    import json

    from fetal_detect.cli import main
    from fetal_detect.engine.train import train

    weights = train("nt-det", data="phantom-nt", epochs=1, imgsz=64, batch=8, workers=0, name="tiny-nt",
                    extra={"plots": False}).weights
    _shenzhen_folder(tmp_path / "set", n=3)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--task", "nt-det", "--data", "set", "--weights", str(weights), "--out", "eval"]) == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "ap50_NT" in m and "ap50_nasal_bone" in m
    assert (tmp_path / "eval" / "pr_curve.png").exists()
