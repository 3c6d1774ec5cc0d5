"""A model several measurers need (``cns-seg``: the ``cns`` and ``tv`` measurements) is loaded once per
Analyzer and runs at most once per image; its outputs are not kept from one image to the next."""
import numpy as np
import pytest

from fetal_detect.runtime import Instance, Prediction, Predictor
from test_measure_vp import PX, _scene
from test_plane_cls import _Stub


class _Counting(Predictor):
    """A back-end that records every model built and every model pass, and answers a fixed prediction."""

    backend = "counting"
    built: list = []
    passes: list = []
    answers: dict = {}

    def _load(self, **options):
        _Counting.built.append(self.task.name)
        return None

    def _infer(self, images):
        _Counting.passes.extend(self.task.name for _ in images)
        return [Prediction(instances=list(_Counting.answers.get(self.task.name, []))) for _ in images]


@pytest.fixture
def counting(tmp_path, monkeypatch):
    _Counting.built, _Counting.passes = [], []
    _, _, seg = _scene()
    _Counting.answers = {"cns-seg": seg, "cns-det": [Instance("CSP", 0.8, (300, 200, 340, 230)),
                                                      Instance("LV", 0.7, (310, 200, 490, 320))]}
    monkeypatch.setitem(__import__("fetal_detect.runtime", fromlist=["BACKENDS"]).BACKENDS, ".pt", lambda: _Counting)
    weights = {}
    for task in ("hc-seg", "cns-det", "cns-seg"):
        weights[task] = str(tmp_path / f"{task}.pt")
        (tmp_path / f"{task}.pt").write_bytes(task.encode())
    return weights


def _analyzer(weights):
    from fetal_detect.pipeline.analyze import Analyzer

    a = Analyzer(weights, gate=lambda image, pred: None)
    a._measurers["plane-cls"] = _Stub(Prediction(probs={"trans-ventricular": 0.9, "other": 0.1}))
    return a


def test_cns_and_tv_share_one_cns_seg_model_that_runs_once_per_image(counting):
    a = _analyzer(counting)
    image = np.zeros((480, 640), np.uint8)
    d = a.analyze(image, PX).to_dict()
    assert {"cns", "tv"} <= set(d["measurers"]) and d["results"]["tv"]["status"] == "ok"
    assert sorted(_Counting.built) == ["cns-det", "cns-seg", "hc-seg"]  # cns-seg loaded once, not per measurer
    assert sorted(_Counting.passes) == ["cns-det", "cns-seg", "hc-seg"]  # and run once on the image
    assert a.measurer("cns").seg_predictor is a.measurer("tv").predictor
    assert d["models"]["cns-seg"]["backend"] == "counting"
    assert abs(d["measurements"]["vp_mm"] - 8.0) <= 0.1 and d["results"]["cns"]["details"]["masks"]["LV"]["area_px"] > 0

    again = a.analyze(image, PX).to_dict()  # the same array again: a new analyze call runs the models again
    assert sorted(_Counting.built) == ["cns-det", "cns-seg", "hc-seg"]
    assert sorted(_Counting.passes) == sorted(["cns-det", "cns-seg", "hc-seg"] * 2)
    assert again["measurements"] == d["measurements"]


def test_shared_outputs_give_the_numbers_of_measurers_built_on_their_own(counting):
    from fetal_detect.pipeline.cns import CNSMeasurer
    from fetal_detect.pipeline.tv import TVMeasurer

    image = np.zeros((480, 640), np.uint8)
    shared = _analyzer(counting).analyze(image, PX).to_dict()["results"]
    alone_tv = TVMeasurer(counting["cns-seg"])(image, PX)
    alone_cns = CNSMeasurer(counting["cns-det"], seg_weights=counting["cns-seg"])(image, PX)
    assert all(shared["tv"]["values"][k] == alone_tv[k] for k in shared["tv"]["values"])
    assert shared["cns"]["details"]["masks"] == alone_cns["masks"]
    assert _Counting.built.count("cns-seg") == 3  # one shared by the analyzer, one per measurer built alone


def test_outside_an_analyze_call_a_pooled_predictor_remembers_nothing(counting):
    a = _analyzer(counting)
    seg = a.measurer("tv").predictor
    image = np.zeros((480, 640), np.uint8)
    seg.predict(image), seg.predict(image)
    assert _Counting.passes == ["cns-seg", "cns-seg"]
