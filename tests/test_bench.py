"""The benchmark runs every requested back-end in one go and reports missing ones as skipped."""
import importlib.util
import json

from fetal_detect.cli import main


def test_bench_reports_every_format(tiny_hc_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--task", "hc-seg", "--formats", "torch,onnx,onnx-int8,openvino,openvino-int8", "--n", "5",
               "--batch", "2", "--weights", str(tiny_hc_model), "--data", "phantom-hc", "--calib-n", "4",
               "--threads", "1", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert {"cpu", "threads", "cores"} <= set(res["machine"]) and res["machine"]["threads"] == 1
    for fmt in ("torch", "onnx", "onnx-int8"):
        r = res["results"][fmt]
        for part in ("pipeline", "model", "pipeline_batch", "model_batch"):
            assert {"p50_ms", "p95_ms", "images_per_s"} <= set(r[part])
            assert r[part]["p50_ms"] > 0
    assert res["results"]["onnx"]["backend"] == "onnx" and res["results"]["torch"]["backend"] == "torch"
    if importlib.util.find_spec("openvino") is None:
        assert "openvino" in res["results"]["openvino"]["skipped"]
    else:  # the advertised OpenVINO path runs (FP32 and NNCF INT8) on the letterboxed rectangle
        for fmt in ("openvino", "openvino-int8") if importlib.util.find_spec("nncf") else ("openvino",):
            r = res["results"][fmt]
            assert "skipped" not in r and r["backend"] == "openvino" and r["pipeline"]["p50_ms"] > 0
