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
    assert res["results"]["onnx"]["verified"] is None  # made by the bench, not by `export --verify`
    if importlib.util.find_spec("openvino") is None:
        assert "openvino" in res["results"]["openvino"]["skipped"]
    else:  # the advertised OpenVINO path runs (FP32 and NNCF INT8) on the letterboxed rectangle
        for fmt in ("openvino", "openvino-int8") if importlib.util.find_spec("nncf") else ("openvino",):
            r = res["results"][fmt]
            assert "skipped" not in r and r["backend"] == "openvino" and r["pipeline"]["p50_ms"] > 0


def test_bench_tradeoff_sizes_accuracy_stages_and_plot(tiny_hc_model, tmp_path, capsys):
    out, png, md = tmp_path / "bench.json", tmp_path / "tradeoff.png", tmp_path / "table.md"
    formats = "torch," + ("openvino" if importlib.util.find_spec("openvino") else "onnx")
    rc = main(["bench", "--task", "hc-seg", "--formats", formats, "--imgsz", "64,128", "--n", "3", "--batch", "2",
               "--weights", str(tiny_hc_model), "--data", "phantom-hc", "--calib-n", "4", "--threads", "1",
               "--accuracy", "--stages", "--plot", str(png), "--md", str(md), "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    keys = {f"{f}@{s}" for f in formats.split(",") for s in (64, 128)}
    assert set(res["results"]) == keys
    for key in keys:
        r = res["results"][key]
        assert r["imgsz"] == int(key.split("@")[1]) and {"hc_mae_mm", "dice", "n_failed"} <= set(r["accuracy"])
    assert res["summary"]["reference"] == "torch@128"  # the model's own size is the reference
    acc = res["accuracy_summary"]
    assert acc["reference"] == "torch@128"
    if res["results"]["torch@128"]["accuracy"]["hc_mae_mm"] is not None:  # a 1-epoch model may find no skull
        assert acc["hc_mae_change_mm"]["torch@128"] == 0
    st = res["stages"]
    assert st["entry"] in keys and not st["entry"].startswith("torch")
    assert all(st[s]["p50_ms"] >= 0 for s in ("decode", "letterbox", "network", "mask_decode", "ellipse_fit", "report"))
    assert png.stat().st_size > 1000 and md.read_text().count("\n") == len(keys) + 2


def test_bench_refuses_bad_sizes(capsys):
    rc = main(["bench", "--task", "hc-seg", "--imgsz", "100"])
    err = capsys.readouterr().err
    assert rc == 2 and "multiples of 32" in err and len(err.strip().splitlines()) == 1
    rc = main(["bench", "--task", "hc-seg", "--imgsz", "x", "--plot", "a.png"])
    assert rc == 2 and "--imgsz" in capsys.readouterr().err
