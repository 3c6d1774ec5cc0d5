"""OpenVINO end to end: the IR takes the letterboxed input the runtime feeds, INT8 comes from NNCF
calibrated on training images, parity is checked, and the predictor agrees with the ONNX one."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fetal_detect.cli import main
from fetal_detect.data.phantom import make_hc
from fetal_detect.measure.geometry import dice

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exports(tiny_hc_model, runs_dir):
    from fetal_detect.export import ensure_export

    out = runs_dir / "export-tests"
    return {fmt: ensure_export("hc-seg", fmt, tiny_hc_model, out, data="phantom-hc") for fmt in ("onnx", "openvino")}


def test_openvino_predictor_matches_onnx_at_any_input_shape(exports):
    from fetal_detect.runtime import load_predictor

    ov_pred = load_predictor("hc-seg", exports["openvino"], conf=0.01)
    onnx_pred = load_predictor("hc-seg", exports["onnx"], conf=0.01)
    assert ov_pred.backend == "openvino" and ov_pred.names == ["skull"] and ov_pred.imgsz == 128 and ov_pred.dynamic
    assert load_predictor("hc-seg", exports["openvino"].parent).weights == exports["openvino"]  # the folder works too
    for seed, crop in ((7, None), (8, (slice(0, 200), slice(None)))):  # two aspect ratios -> two input shapes
        image = make_hc(seed, pixel_size_mm=0.25).image
        image = image if crop is None else np.ascontiguousarray(image[crop])
        a, b = onnx_pred.predict(image), ov_pred.predict(image)
        assert len(a.instances) == len(b.instances)
        for x, y in zip(a.instances[:5], b.instances[:5]):
            assert abs(x.confidence - y.confidence) < 1e-3
            assert np.abs(np.subtract(x.box_xyxy, y.box_xyxy)).max() <= 1.0
            assert y.mask.shape == image.shape[:2] and dice(x.mask, y.mask) > 0.98
    assert len(ov_pred._compiled) == 2
    batch = ov_pred.predict_batch([make_hc(s, pixel_size_mm=0.25).image for s in (1, 2, 3)])
    assert len(batch) == 3


def test_openvino_int8_export_with_nncf_and_parity(tiny_hc_model, runs_dir, capsys):
    pytest.importorskip("nncf")
    from fetal_detect.runtime import load_predictor

    out = runs_dir / "export-tests"
    rc = main(["export", "--task", "hc-seg", "--format", "openvino", "--int8", "--weights", str(tiny_hc_model),
               "--data", "phantom-hc", "--calib-n", "4", "--out", str(out), "--verify", "--verify-n", "3"])
    printed = capsys.readouterr()
    assert rc in (0, 2), printed.err  # a 1-epoch model may drift beyond the tolerance: then a clean failure
    if rc == 2:
        assert "parity check" in printed.err and "Traceback" not in printed.err
    xml = out / "hc-seg-int8_openvino_model" / "hc-seg-int8.xml"
    meta = json.loads(xml.with_suffix(".json").read_text())
    assert meta["format"] == "openvino" and meta["precision"] == "int8" and meta["dynamic"] and meta["imgsz"] == 128
    q = meta["quantization"]
    assert "NNCF" in q["method"] and q["calibration_data"] == "phantom-hc" and q["split"] == "train"
    assert q["n_images"] == 4 and q["n_excluded_nodes"] > 0
    assert {"pytorch", "exported", "passed"} <= set(meta["metrics"]) and "hc_mae_mm" in meta["metrics"]["exported"]
    assert load_predictor("hc-seg", xml).backend == "openvino"
    assert not list(out.glob("hc-seg-int8.fp32.*"))  # the intermediate FP32 ONNX is gone


def test_openvino_runtime_imports_no_torch(exports):
    script = f"""
import sys, json
from fetal_detect.data.phantom import make_hc
from fetal_detect.runtime import load_predictor
pred = load_predictor("hc-seg", {str(exports["openvino"])!r}, conf=0.01)
p = pred.predict(make_hc(3, pixel_size_mm=0.2).image)
print(json.dumps({{"backend": pred.backend, "torch": "torch" in sys.modules, "ultralytics": "ultralytics" in sys.modules}}))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"backend": "openvino", "torch": False, "ultralytics": False}


def test_broken_openvino_weights_one_line_error(tmp_path, capsys):
    bad = tmp_path / "m_openvino_model"
    bad.mkdir()
    (bad / "m.xml").write_text("<net>not a model")
    (bad / "m.bin").write_bytes(b"\0")
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), make_hc(1, pixel_size_mm=0.2).image)
    rc = main(["measure", "hc", str(tmp_path / "x.png"), "--weights", str(bad / "m.xml"), "--pixel-size", "0.1"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and "OpenVINO" in err
