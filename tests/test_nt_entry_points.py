"""NT through every entry point (measurer, analyze, API, batch): the same status, plane_ok and missing for
the same image, a doubtful plane flagged (refused only with strict_plane), calipers and band everywhere."""
import cv2
import numpy as np
import pandas as pd
import pytest

import fetal_detect.pipeline.nt as nt_pipeline
from fetal_detect.batch import run_batch
from fetal_detect.data.phantom import make_nt
from fetal_detect.pipeline.analyze import Analyzer
from fetal_detect.report import write_image
from fetal_detect.runtime import Instance, Prediction
from fetal_detect.serve.analysis import analyze_upload


class _FakeDetector:
    """Stands in for nt-det: the phantom's own boxes without the nasal bone (a doubtful plane)."""

    backend, weights, meta = "fake", "fake-nt-det.pt", {}

    def __init__(self, boxes, drop=("nasal bone",)):
        self.instances = [Instance(n, 0.9, tuple(b)) for n, *b in boxes if n not in drop]

    def predict(self, image):
        return Prediction(instances=list(self.instances))


@pytest.fixture(scope="module")
def phantom():
    return make_nt(11, pixel_size_mm=0.1, nt_mm=2.4)


@pytest.fixture
def fake_nt(monkeypatch, phantom):
    """Every NTMeasurer built by the analyzer (also inside the batch worker) uses the fake detector."""
    real = nt_pipeline.NTMeasurer

    class Fake(real):
        def __init__(self, *a, **kw):
            super().__init__(predictor=_FakeDetector(phantom.boxes), use_seg=False)

    monkeypatch.setattr(nt_pipeline, "NTMeasurer", Fake)
    return Fake


def test_analyze_flags_a_doubtful_plane_and_refuses_only_when_strict(fake_nt, phantom):
    a = Analyzer()
    rep = a.analyze(phantom.image, 0.1, "nt").to_dict()
    nt = rep["results"]["nt"]["details"]
    assert rep["status"] == "ok" and nt["plane_ok"] is False and nt["missing"] == ["nasal bone"]
    assert abs(rep["measurements"]["nt_mm"] - 2.4) <= 0.1
    strict = a.analyze(phantom.image, 0.1, "nt", options={"nt": {"strict_plane": True}}).to_dict()
    assert strict["status"] == "refused" and strict["measurements"].get("nt_mm") is None and strict["reason"]
    assert strict["results"]["nt"]["details"]["missing"] == ["nasal bone"]


def test_api_draws_the_nt_calipers_band_and_names_the_model(fake_nt, phantom):
    data = cv2.imencode(".png", phantom.image)[1].tobytes()
    resp, _ = analyze_upload(Analyzer(), data, "nt", 0.1, overlay=True)
    res = resp["results"]["nt"]["details"]
    assert resp["status"] == "ok" and res["plane_ok"] is False and res["missing"] == ["nasal bone"]
    (caliper,) = resp["overlay"]["calipers"]  # the measured points, one on-to-on pair
    assert caliper["name"] == "nt" and caliper["length_mm"] == pytest.approx(resp["measurements"]["nt_mm"], abs=0.01)
    assert len(resp["overlay"]["outlines"][0]["points"]) > 10 and resp["overlay"]["outlines"][0]["name"] == "band"
    assert res["value_label"].startswith("NT 2.") and res["value_label"].endswith(" mm")
    assert resp["models"]["nt-det"]["weights"] == "fake-nt-det.pt"
    assert resp["overlay_png"].startswith("data:image/png")
    strict, _ = analyze_upload(Analyzer(), data, "nt", 0.1, strict_plane=True)
    assert strict["status"] == "refused" and strict["results"]["nt"]["details"]["missing"] == ["nasal bone"]


def test_batch_rows_carry_the_nt_plane_columns_and_overlays(fake_nt, phantom, tmp_path):
    src = tmp_path / "in"
    write_image(src / "nt.png", phantom.image)
    out = tmp_path / "nt.csv"
    run_batch(src, out, task="nt", workers=0, pixel_size_mm=0.1, overlays=tmp_path / "ov", progress=False)
    row = pd.read_csv(out).iloc[0]
    assert row["status"] == "ok" and not row["plane_ok"] and row["missing"] == "nasal bone"
    assert abs(row["nt_mm"] - 2.4) <= 0.1 and row["nt_px"] == pytest.approx(24, abs=1)
    assert 0 < row["plane_score"] < 1 and row["nt_box_source"] == "nt-det"
    ov = cv2.imread(row["overlay"])
    assert ov is not None and (np.abs(ov.astype(int) - cv2.cvtColor(phantom.image, cv2.COLOR_GRAY2BGR)).sum() > 0)
    strict = tmp_path / "strict.csv"
    run_batch(src, strict, task="nt", workers=0, pixel_size_mm=0.1, progress=False, strict_plane=True)
    row = pd.read_csv(strict).iloc[0]
    assert row["status"] == "refused" and np.isnan(row["nt_mm"]) and row["missing"] == "nasal bone"
