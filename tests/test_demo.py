"""`fetal-detect demo` writes overlays and a JSON/CSV report on the embedded phantoms."""
import json

from fetal_detect.cli import main


def test_demo_writes_overlays_and_reports(tiny_hc_model, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--n", "2", "--hc18", "0", "--weights", str(tiny_hc_model), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["images"]) == 2 and report["model"]["task"] == "hc-seg"
    assert (out / "report.csv").read_text().startswith("image,")
    assert (out / "overview.png").exists()
    assert "report.json" in capsys.readouterr().out
