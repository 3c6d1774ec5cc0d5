"""Export: refusals come first and cost nothing; ONNX / INT8 exports carry a sidecar; parity is checked."""
import importlib.util
import json

import pytest

from fetal_detect.cli import main


def _forbid_work(monkeypatch):
    import fetal_detect.data.registry as registry
    import fetal_detect.export.core as ex

    def boom(*a, **k):
        raise AssertionError("work started before the back-end check")

    monkeypatch.setattr(ex, "_ultralytics_export", boom)
    monkeypatch.setattr(registry, "prepare", boom)


def test_engine_refused_before_any_work(monkeypatch, capsys, tmp_path):
    import fetal_detect.export.core as ex

    monkeypatch.setattr(ex, "_has", lambda m: False if m == "tensorrt" else importlib.util.find_spec(m) is not None)
    _forbid_work(monkeypatch)
    out = tmp_path / "out"
    rc = main(["export", "--task", "hc-seg", "--format", "engine", "--weights", str(tmp_path / "absent.pt"),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "TensorRT" in err and "pip install tensorrt" in err and "--format onnx" in err
    assert not out.exists()


@pytest.mark.parametrize("missing", ["openvino", "nncf"])
def test_openvino_refused_with_install_hint(monkeypatch, capsys, tmp_path, missing):
    import fetal_detect.export.core as ex

    monkeypatch.setattr(ex, "_has", lambda m: m != missing and importlib.util.find_spec(m) is not None)
    _forbid_work(monkeypatch)
    rc = main(["export", "--task", "hc-seg", "--format", "openvino", "--int8", "--weights", str(tmp_path / "absent.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and missing in err and "pip install" in err and len(err.strip().splitlines()) == 1


def test_int8_with_half_refused():
    from fetal_detect.errors import FetalDetectError
    from fetal_detect.export import check_request
    from fetal_detect.tasks import get_task

    with pytest.raises(FetalDetectError, match="one of --int8 and --half"):
        check_request(get_task("hc-seg"), "onnx", int8=True, half=True)
    with pytest.raises(FetalDetectError, match="no exportable"):
        check_request(get_task("gan"), "onnx", int8=False, half=False)


def test_onnx_and_int8_export_with_parity(tiny_hc_model, runs_dir, capsys):
    from fetal_detect.data.registry import file_sha256
    from fetal_detect.runtime import load_predictor

    out = runs_dir / "export-tests"
    rc = main(["export", "--task", "hc-seg", "--weights", str(tiny_hc_model), "--data", "phantom-hc", "--int8",
               "--calib-n", "4", "--out", str(out), "--verify", "--verify-n", "3"])
    printed = capsys.readouterr()
    assert rc in (0, 2), printed.err  # a 1-epoch model may drift beyond the tolerance: then a clean failure
    if rc == 2:
        assert "parity check" in printed.err and "Traceback" not in printed.err
    meta = json.loads((out / "hc-seg-int8.json").read_text())
    assert meta["task"] == "hc-seg" and meta["precision"] == "int8" and meta["names"] == ["skull"]
    assert meta["imgsz"] == 128 and meta["source_sha256"] == file_sha256(tiny_hc_model)
    assert {"preprocessing", "pixel_size_handling", "calibration", "quantization", "metrics"} <= set(meta)
    q = meta["quantization"]
    assert q["calibration_data"] == "phantom-hc" and q["split"] == "train" and q["n_images"] == 4
    m = meta["metrics"]
    assert {"pytorch", "exported", "delta", "passed"} <= set(m) and m["n_images"] == 3
    assert "hc_mae_mm" in m["pytorch"] and "dice" in m["pytorch"]
    assert load_predictor("hc-seg", out / "hc-seg-int8.onnx").backend == "onnx"
    assert not (out / "hc-seg-int8.fp32.onnx").exists() and not (out / "hc-seg-int8.pt").exists()
