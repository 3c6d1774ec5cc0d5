"""plane-cls: metrics, the source-cue views, evaluate on class folders, and plane routing in analyze."""
import json

import numpy as np
import pytest

from fetal_detect.evaluate.plane_cls import classification_metrics, make_views, shuffle_tiles
from fetal_detect.runtime import Instance, Prediction


PHANTOM_PLANES = (("trans-thalamic", "hc"), ("trans-ventricular", "cns"), ("mid-sagittal", "nt"), ("other", "blank"))


@pytest.fixture(scope="module")
def plane_folders(tmp_path_factory):
    """One sub-folder of phantom images per plane (3 each: small, so the test stays fast)."""
    from fetal_detect.data import phantom
    from fetal_detect.report import write_image

    root = tmp_path_factory.mktemp("planes")
    for label, kind in PHANTOM_PLANES:
        for i, ph in enumerate(phantom.generate(kind, 3, seed=50)):
            write_image(root / label / f"{kind}{i}.png", ph.image)
    return root


@pytest.fixture(scope="module")
def tiny_plane_model(no_network, plane_folders):
    from fetal_detect.engine.train import train

    return train("plane-cls", data=str(plane_folders), epochs=1, imgsz=32, batch=16, workers=0, name="tiny",
                 extra={"plots": False}).weights


def test_macro_f1_and_per_class_scores():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # classes without support are not averaged
    assert "c" not in m["per_class"]


def test_tile_shuffle_keeps_the_fan_and_its_histogram_but_moves_content():
    rng = np.random.default_rng(0)
    img = (np.arange(64 * 96).reshape(64, 96) % 251).astype(np.uint8)
    mask = np.zeros(img.shape, bool)
    mask[8:56, 8:88] = True
    out = shuffle_tiles(img, mask, rng, tiles=6)
    assert (out[~mask] == 0).all()
    assert not np.array_equal(out[mask], img[mask])
    assert sorted(out[mask].tolist()) == sorted(img[mask].tolist())


def test_views_cut_content_to_the_donor_fan():
    from fetal_detect.data.phantom import make_hc

    raw = make_hc(1).image
    donor = np.zeros((60, 80), bool)  # another source, another size: resized to this frame
    donor[:, :40] = True
    views = make_views(raw, ["sector"], donor, np.random.default_rng(0))
    assert set(views) == {"as_trained", "full_frame", "swapped_sector", "anatomy_shuffled"}
    assert (views["swapped_sector"][:, raw.shape[1] // 2:] == 0).all()
    assert views["swapped_sector"][:, : raw.shape[1] // 2].any()
    assert views["full_frame"] is raw


def test_evaluate_class_folders_writes_metrics_and_cue_test(tiny_plane_model, plane_folders, tmp_path):
    from fetal_detect.cli import main

    data = plane_folders
    out = tmp_path / "eval"
    assert main(["evaluate", "--task", "plane-cls", "--data", str(data), "--weights", str(tiny_plane_model),
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_images"] == 12 and 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
    assert set(m["per_class"]) == {label for label, _ in PHANTOM_PLANES}
    assert {"precision", "recall", "f1"} <= set(m["per_class"]["other"])
    assert {"full_frame", "swapped_sector", "anatomy_shuffled"} <= set(m["source_cues"])
    assert 0 <= m["source_cues"]["swapped_sector"]["follows_donor"] <= 1
    assert (out / "confusion_matrix.png").exists() and (out / "per_image.csv").exists()
    assert sum(v["n_images"] for v in m["per_source"].values()) == 12 and (out / "confusion_by_source.png").exists()
    assert 0 <= m["macro_auroc"] <= 1 and (out / "roc_pr.png").exists()
    assert {"auroc", "average_precision"} <= set(m["per_class"]["other"])


class _Stub:
    weights, backend = "stub.pt", "stub"

    def __init__(self, pred):
        self.pred = pred

    def predict(self, image):
        return self.pred


@pytest.mark.parametrize("plane", ["trans-ventricular", "trans-thalamic", "other"])
def test_analyze_classifies_the_plane_then_routes_to_every_measurer_of_the_plane(plane):
    from fetal_detect import measurers
    from fetal_detect.pipeline.analyze import Analyzer

    from fetal_detect.pipeline.cns import CNSMeasurer
    from fetal_detect.pipeline.hc import HCMeasurer

    routed = measurers.routes(plane)  # the table's route (trans-ventricular: hc, cns, ...; other: none)
    a = Analyzer()
    a._measurers["plane-cls"] = _Stub(Prediction(probs={plane: 0.9, "mid-sagittal": 0.1}))
    a._measurers["hc"] = HCMeasurer(predictor=_Stub(Prediction()))  # finds no skull: that measurer's own status
    a._measurers["cns"] = CNSMeasurer(predictor=_Stub(Prediction(instances=[
        Instance("CSP", 0.8, (10, 10, 20, 16)), Instance("LV", 0.7, (30, 30, 50, 40)), Instance("CSP", 0.3, (0, 0, 1, 1))])))
    report = a.analyze(np.zeros((64, 64), np.uint8), pixel_size_mm=0.2).to_dict()
    assert report["plane"] == plane and report["plane_confidence"] == 0.9 and report["measurers"] == routed
    assert report["plane_evidence"]["probs"][plane] == 0.9 and report["models"]["plane-cls"]["backend"] == "stub"
    if "hc" in routed:  # no skull in a head plane: the abstain gate refuses the whole image, CNS included
        assert report["results"]["hc"]["status"] == "no_finding" and "no skull" in report["results"]["hc"]["reason"]
        assert report["status"] == "no_standard_plane" and "no skull" in report["reason"]
        assert report["measurements"] == {} and report["results"]["cns" if "cns" in routed else "hc"]["status"] != "ok"
    else:
        assert report["status"] == "no_standard_plane" and report["measurements"] == {}
    for name in set(routed) - {"hc", "cns"}:  # rows without a model in these hermetic tests: said, not raised
        assert report["results"][name]["status"] == "refused" and "not available" in report["results"][name]["reason"]


def test_the_plane_gate_can_refuse_before_any_measurement():
    from fetal_detect.pipeline.analyze import Analyzer

    seen = []
    a = Analyzer(gate=lambda image, pred: seen.append(pred.top_class) or "looks unlike the training images")
    a._measurers["plane-cls"] = _Stub(Prediction(probs={"trans-thalamic": 0.6, "other": 0.4}))
    report = a.analyze(np.zeros((64, 64), np.uint8)).to_dict()
    assert seen == [("trans-thalamic", 0.6)] and report["status"] == "no_standard_plane" and report["measurers"] == []
    assert report["reason"] == "looks unlike the training images" and report["plane_evidence"]["gate"] == report["reason"]


def test_cns_report_adds_mask_areas_in_mm2_when_a_cns_seg_model_is_loaded():
    from fetal_detect.pipeline.cns import CNSMeasurer

    brain = np.zeros((32, 32), np.uint8)
    brain[4:28, 4:28] = 1  # 576 px at 32 x 32 -> 2304 px at the 64 x 64 image size
    lv_small, lv_big = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    lv_small[0:2, 0:5], lv_big[10:20, 10:20] = True, True
    seg = _Stub(Prediction(instances=[Instance("Brain", 0.9, (8, 8, 56, 56), brain),
                                      Instance("LV", 0.4, (0, 0, 5, 2), lv_small), Instance("LV", 0.8, (10, 10, 20, 20), lv_big)]))
    det = _Stub(Prediction(instances=[Instance("CSP", 0.8, (10, 10, 20, 16))]))
    out = CNSMeasurer(predictor=det, seg_predictor=seg)(np.zeros((64, 64), np.uint8), pixel_size_mm=0.5)
    assert out["masks"]["Brain"] == {"confidence": 0.9, "area_px": 2304, "area_mm2": 576.0}
    assert out["masks"]["LV"]["area_px"] == 100 and out["masks"]["LV"]["area_mm2"] == 25.0  # the confident one
    assert "CSP" not in out["masks"] and out["structures"]["CSP"]["width_mm"] == 5.0
    no_seg = CNSMeasurer(predictor=det)(np.zeros((64, 64), np.uint8), pixel_size_mm=None)
    assert "masks" not in no_seg  # no cns-seg weights shipped to the tests


def test_optional_model_is_skipped_when_absent_but_named_weights_must_load(tmp_path):
    from fetal_detect.errors import FetalDetectError
    from fetal_detect.runtime import optional_predictor

    assert optional_predictor("cns-seg") is None
    with pytest.raises(FetalDetectError):
        optional_predictor("cns-seg", tmp_path / "missing.pt")
