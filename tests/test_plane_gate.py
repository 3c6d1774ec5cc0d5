"""The abstain gate of auto mode: non-head frames are refused with a reason, heads get HC (and CNS)."""
import numpy as np
import pytest

from fetal_detect.data.phantom import make_cns, make_hc
from fetal_detect.data.phantom_nonhead import NONHEAD_KINDS, make_nonhead
from fetal_detect.measure.skull_rim import check_skull, skull_rim
from fetal_detect.pipeline.plane_gate import AbstainGate, FeatureStats
from fetal_detect.runtime import Instance, Prediction
from test_plane_cls import _Stub  # a predictor that answers one fixed Prediction


def _disc_mask(shape, ellipse):
    import cv2

    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (round(ellipse["cx"]), round(ellipse["cy"])), (round(ellipse["a"]), round(ellipse["b"])),
                ellipse["angle_deg"], 0, 360, 255, -1)
    return m


@pytest.mark.parametrize("seed", range(4))
def test_a_skull_phantom_shows_a_bright_rim_along_its_ellipse(seed):
    p = make_hc(seed)
    rim = skull_rim(p.image, p.truth["ellipse"])
    assert check_skull(rim, confidence=0.8) == (True, None), rim


@pytest.mark.parametrize("seed", range(3))
def test_an_abdomen_like_disc_has_no_skull_rim(seed):
    p = make_nonhead("abdomen", seed)
    ell = p.truth["ellipse"]
    ok, reason = check_skull(skull_rim(p.image, ell), confidence=0.8)
    assert not ok and "no bright skull rim" in reason


def test_a_femur_like_bar_is_not_head_shaped():
    p = make_nonhead("limb", 0)
    ok, reason = check_skull(skull_rim(p.image, p.truth["ellipse"]), 0.9)
    assert not ok and "not head-shaped" in reason


def test_an_ellipse_outside_the_sector_is_refused():
    p = make_hc(0)
    e = {**p.truth["ellipse"], "cx": 40.0, "cy": 40.0}
    ok, reason = check_skull(skull_rim(p.image, e), 0.9)
    assert not ok


def _analyzer(plane: str, hc_mask=None, conf: float = 0.9):
    from fetal_detect.pipeline.analyze import Analyzer
    from fetal_detect.pipeline.cns import CNSMeasurer
    from fetal_detect.pipeline.hc import HCMeasurer

    a = Analyzer()
    a._measurers["plane-cls"] = _Stub(Prediction(probs={plane: conf, "mid-sagittal": (1 - conf) / 2, "other": (1 - conf) / 2}))
    a.gate = AbstainGate(a.plane_classifier, stats=None)
    inst = [] if hc_mask is None else [Instance("skull", 0.9, (0, 0, 1, 1), hc_mask > 0)]
    a._measurers["hc"] = HCMeasurer(predictor=_Stub(Prediction(instances=inst)))
    a._measurers["cns"] = CNSMeasurer(predictor=_Stub(Prediction(instances=[
        Instance("CSP", 0.8, (10, 10, 20, 16)), Instance("LV", 0.7, (30, 30, 50, 40))])), use_seg=False)
    return a


def test_a_trans_ventricular_head_gets_hc_and_its_cns_structures():
    p = make_hc(3)
    report = _analyzer("trans-ventricular", p.mask).analyze(p.image, pixel_size_mm=p.pixel_size_mm).to_dict()
    assert report["status"] == "ok" and report["reason"] is None
    assert report["measurers"][:2] == ["hc", "cns"] and report["measurements"]["hc_mm"] > 0
    assert "CSP" in report["results"]["cns"]["details"]["structures"]
    assert report["plane_evidence"]["gate"]["skull_rim"]["coverage"] > 0.5


@pytest.mark.parametrize("kind", NONHEAD_KINDS)
def test_auto_refuses_a_non_head_frame_that_the_skull_model_mistakes_for_a_head(kind):
    """The worst case: plane-cls says trans-thalamic and hc-seg returns a head-sized ellipse anyway."""
    p = make_nonhead(kind, 1)
    h, w = p.image.shape[:2]
    mask = _disc_mask((h, w), {"cx": w / 2, "cy": h * 0.55, "a": 0.3 * h, "b": 0.25 * h, "angle_deg": 0})
    report = _analyzer("trans-thalamic", mask).analyze(p.image, pixel_size_mm=0.2).to_dict()
    assert report["status"] == "no_standard_plane", report["plane_evidence"]
    assert "skull" in report["reason"] and report["measurements"] == {} and report["results"]["hc"]["values"] == {}


def test_no_skull_found_in_auto_is_a_refusal_not_an_error():
    report = _analyzer("trans-thalamic", None).analyze(make_nonhead("limb", 2).image, 0.2).to_dict()
    assert report["status"] == "no_standard_plane" and "no skull" in report["reason"]


def test_an_unsure_classifier_is_a_refusal():
    p = make_hc(1)
    report = _analyzer("trans-thalamic", p.mask, conf=0.4).analyze(p.image, p.pixel_size_mm).to_dict()
    assert report["status"] == "no_standard_plane" and "unsure" in report["reason"] and report["measurers"] == []
    assert report["plane_evidence"]["gate"]["feature_distance"] is None  # no statistics: skipped, and says so


def test_forced_tasks_do_not_go_through_the_gate():
    p = make_cns(0)
    report = _analyzer("other").analyze(p.image, 0.2, task="cns").to_dict()
    assert report["status"] == "ok" and report["plane"] is None and report["measurers"] == ["cns"]


def test_feature_statistics_flag_what_lies_far_from_every_supported_plane(tmp_path):
    rng = np.random.default_rng(0)
    centres = {"trans-thalamic": 0.0, "trans-ventricular": 3.0, "mid-sagittal": -3.0}
    feats = np.concatenate([rng.normal(c, 1.0, (200, 40)) for c in centres.values()])
    labels = [n for n in centres for _ in range(200)]
    stats = FeatureStats.fit(feats, labels, k=8, meta={"thresholds": {"distance_max": 2.0}})
    stats = FeatureStats.load(stats.save(tmp_path / "ood.npz"))
    d_in, nearest = stats.distance(rng.normal(3.0, 1.0, (50, 40)))
    d_out, _ = stats.distance(rng.normal(0.0, 1.0, (50, 40)) + 12.0 * rng.standard_normal(40))
    assert np.median(d_in) < 1.5 and set(nearest) == {"trans-ventricular"}
    assert d_out.min() > 2.0
    gate = AbstainGate(None, stats=stats)
    assert gate.thresholds["distance_max"] == 2.0 and (tmp_path / "ood.json").exists()


def test_batch_rows_show_a_refusal_as_status_and_reason_never_a_number(tmp_path, monkeypatch):
    import cv2
    import pandas as pd

    from fetal_detect.batch import run_batch
    from fetal_detect.pipeline.analyze import Analyzer

    stub = _Stub(Prediction(probs={"other": 0.97, "trans-thalamic": 0.03}))
    monkeypatch.setattr(Analyzer, "plane_classifier", lambda self: stub)
    src = tmp_path / "in"
    src.mkdir()
    for kind in ("limb", "doppler"):
        cv2.imwrite(str(src / f"{kind}.png"), make_nonhead(kind, 0).image)
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"rows.{fmt}"
        run_batch(src, out, task="auto", workers=0, progress=False)
        df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert (df["status"] == "no_standard_plane").all() and df["reason"].str.contains("other").all()
        assert df["hc_mm"].isna().all()


def test_the_api_answers_a_refusal_with_200_status_and_reason():
    import cv2
    from fastapi.testclient import TestClient

    from fetal_detect.serve.app import create_app

    p = make_nonhead("abdomen", 3)
    h, w = p.image.shape
    app = create_app(workers=1, queue=1, analyzer_factory=lambda: _analyzer("trans-thalamic", _disc_mask((h, w), p.truth["ellipse"])))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for _ in range(2400):
            if client.get("/ready").status_code == 200:
                break
            import time

            time.sleep(0.05)
        r = client.post("/api/v1/analyze", files={"file": ("x.png", cv2.imencode(".png", p.image)[1].tobytes())})
    body = r.json()
    assert r.status_code == 200, body
    assert body["status"] == "no_standard_plane" and "skull" in body["reason"]
    assert body["measurements"] == {} and body["plane_evidence"]["gate"]["skull_rim"]["arc"] is not None


def test_a_head_whose_skull_band_is_filled_from_its_inside_has_no_rim():
    from fetal_detect.evaluate.skull_rim import deskull

    p = make_hc(5)
    e = p.truth["ellipse"]
    assert check_skull(skull_rim(p.image, e), 0.8)[0]
    ok, reason = check_skull(skull_rim(deskull(p.image, e, np.random.default_rng(0)), e), 0.8)
    assert not ok and "rim" in reason
