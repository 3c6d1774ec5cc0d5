"""The same preprocessing at training (registry), inference (runtime) and on the command line."""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fetal_detect import preprocess as pp
from fetal_detect.data import phantom, registry
from fetal_detect.errors import FetalDetectError


def test_prepare_bakes_the_steps_into_a_separate_cache_folder():
    raw = registry.prepare("phantom-hc", "segment")
    done = registry.prepare("phantom-hc", "segment", preprocess=["sector"])
    assert done.root != raw.root and done.root.name.startswith("segment-pp")
    assert done.manifest["preprocess"] == ["sector"]
    assert [f["split"] for f in done.manifest["files"]] == [f["split"] for f in raw.manifest["files"]]
    f = done.manifest["files"][0]
    split_dir = done.root / "images" / f["split"]
    img = cv2.imread(str(split_dir / f["name"]), cv2.IMREAD_GRAYSCALE)
    src = cv2.imread(str(raw.root / "images" / f["split"] / f["name"]), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(img, pp.apply(src, ["sector"]))
    assert registry.prepare("phantom-hc", "segment", preprocess=["sector"]).manifest["created"] == done.manifest["created"]


def test_prepare_refuses_geometry_changing_steps_for_boxes_and_masks():
    with pytest.raises(FetalDetectError, match="geometry"):
        registry.prepare("phantom-hc", "segment", preprocess=["crop"])


def test_runtime_applies_the_steps_recorded_in_the_sidecar(tiny_hc_model, tmp_path, monkeypatch):
    from fetal_detect.runtime import load_predictor

    w = tmp_path / "m.pt"
    shutil.copyfile(tiny_hc_model, w)
    meta = json.loads(tiny_hc_model.with_suffix(".json").read_text())
    w.with_suffix(".json").write_text(json.dumps({**meta, "preprocess": ["sector", "clahe"]}))
    seen = []
    real = pp.apply
    monkeypatch.setattr(pp, "apply", lambda im, steps: seen.append(list(steps)) or real(im, steps))
    predictor = load_predictor("hc-seg", w)
    assert predictor.preprocess == ["sector", "clahe"]
    predictor.predict(phantom.make_hc(0, size=(320, 240)).image)
    assert seen == [["sector", "clahe"]]


def test_preprocess_command_writes_images_and_a_before_after_sheet(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f"p{i}.png"), phantom.make_hc(i, size=(200, 150)).image)
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "fetal_detect", "preprocess", str(src), "--steps",
                        "sector,clahe,wavelet", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["images"] == 2 and len(res["failed"]) == 1 and res["steps"] == ["sector", "clahe", "wavelet"]
    assert (out / "p0.png").exists() and (out / "before_after.png").exists()
    bad = subprocess.run([sys.executable, "-m", "fetal_detect", "preprocess", str(src), "--steps", "blur",
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown preprocess step 'blur'" in bad.stderr and "Traceback" not in bad.stderr
