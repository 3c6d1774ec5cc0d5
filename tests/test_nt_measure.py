"""NT measurement: sub-pixel thickness on phantoms, bad input, plane check and the risk note."""
import json

import numpy as np
import pytest

from fetal_detect.cli import main
from fetal_detect.data.phantom import make_nt
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.nt import measure_nt
from fetal_detect.measure.nt_plane import PlaneCalibration, plane_evidence
from fetal_detect.measure.nt_risk import nt_centile, risk_note
from fetal_detect.pipeline.nt import NTMeasurer
from fetal_detect.report import write_image
from fetal_detect.runtime import Instance, Prediction


def _nt_box(ph):
    return next(b[1:] for b in ph.boxes if b[0] == "NT")


@pytest.mark.parametrize("seed,nt_mm", [(1, 0.9), (2, 2.7), (3, 5.5)])
def test_phantom_thickness_within_a_pixel(seed, nt_mm):
    ph = make_nt(seed, pixel_size_mm=0.1, nt_mm=nt_mm)
    res = measure_nt(ph.image, _nt_box(ph), 0.1)
    assert abs(res["nt_mm"] - nt_mm) <= 0.1
    # calipers lie across the band: their distance is the thickness, their midpoint on the band axis
    c = np.array(res["calipers"])
    assert np.linalg.norm(c[0] - c[1]) * 0.1 == pytest.approx(res["nt_mm"], abs=0.01)
    assert abs(res["axis_angle_deg"] - ph.truth["axis_angle_deg"]) < 3


def test_no_pixel_size_gives_pixels_only():
    ph = make_nt(4, pixel_size_mm=0.1, nt_mm=2.0)
    res = measure_nt(ph.image, _nt_box(ph), None)
    assert "nt_mm" not in res and res["units"] == "px" and res["nt_px"] == pytest.approx(20, abs=1)
    assert risk_note(None)["flag"] is None


def test_flat_image_reports_no_nt():
    with pytest.raises(FetalDetectError, match="no NT found"):
        measure_nt(np.full((200, 300), 90, np.uint8), (50, 50, 250, 120), 0.1)


def test_box_outside_image_is_one_line_error(tmp_path, capsys):
    ph = make_nt(5, pixel_size_mm=0.1, nt_mm=2.0)
    img = write_image(tmp_path / "nt.png", ph.image)
    assert main(["measure", "nt", str(img), "--box", "900,10,990,60"]) == 2
    err = capsys.readouterr().err
    assert "outside" in err and "Traceback" not in err


def test_cli_box_mode_json_and_overlay(tmp_path, capsys):
    ph = make_nt(6, pixel_size_mm=0.1, nt_mm=3.8)
    img = write_image(tmp_path / "nt.png", ph.image)
    overlay = tmp_path / "ov.png"
    box = ",".join(f"{v:g}" for v in _nt_box(ph))
    assert main(["measure", "nt", str(img), "--pixel-size", "0.1", "--box", box, "--crl-mm", "60",
                 "--overlay", str(overlay)]) == 0
    res = json.loads(capsys.readouterr().out)
    nt = res["results"]["nt"]
    assert abs(res["measurements"]["nt_mm"] - 3.8) <= 0.1 and len(res["overlay"]["calipers"][0]["points"]) == 2
    assert res["overlay"]["calipers"][0]["name"] == "nt" and res["quality"] is not None and res["processing_ms"] > 0
    assert {"plane_ok", "missing"} <= set(nt["details"])
    assert nt["details"]["risk"]["flag"] is True and nt["details"]["risk"]["nt_centile"] > 99
    assert overlay.exists()


class _FakeDetector:
    """Stands in for nt-det: returns the phantom's own boxes minus the ones named in ``drop``."""

    backend, weights = "fake", "fake.pt"

    def __init__(self, boxes, drop=()):
        self.instances = [Instance(n, 0.9, tuple(b)) for n, *b in boxes if n not in drop]

    def predict(self, image):
        return Prediction(instances=list(self.instances))


def test_doubtful_plane_is_measured_and_flagged_unless_strict():
    ph = make_nt(7, pixel_size_mm=0.1, nt_mm=2.5)
    m = NTMeasurer(predictor=_FakeDetector(ph.boxes, drop=("nasal bone", "CM")), use_seg=False)
    res = m(ph.image, 0.1)
    assert res["status"] == "ok" and res["plane_ok"] is False and set(res["missing"]) == {"nasal bone", "CM"}
    assert abs(res["nt_mm"] - 2.5) <= 0.1 and res["plane_score"] < 1 and len(res["plane_reasons"]) == 2
    strict = m(ph.image, 0.1, strict_plane=True)
    assert strict["nt_mm"] is None and strict["status"] == "unsuitable_plane"
    assert abs(strict["nt_mm_unsuitable_plane"] - 2.5) <= 0.1
    ok = NTMeasurer(predictor=_FakeDetector(ph.boxes), use_seg=False, strict_plane=True)
    res = ok(ph.image, 0.1)
    assert res["plane_ok"] is True and res["plane_score"] == 1 and abs(res["nt_mm"] - 2.5) <= 0.1


class _FakeSegmenter:
    """Stands in for nt-seg: one band instance with the phantom's exact mask, or nothing."""

    backend, weights = "fake", "fake-seg.pt"

    def __init__(self, mask=None, conf=0.8):
        self.instances = [] if mask is None else [Instance("NT", conf, (0, 0, 1, 1), mask > 0)]

    def predict(self, image):
        return Prediction(instances=list(self.instances))


def test_segmenter_finds_the_band_when_the_detector_misses_the_nt():
    ph = make_nt(8, pixel_size_mm=0.1, nt_mm=3.0)
    m = NTMeasurer(predictor=_FakeDetector(ph.boxes, drop=("NT",)), seg_predictor=_FakeSegmenter(ph.mask))
    res = m(ph.image, 0.1)
    assert res["nt_box_source"] == "nt-seg" and res["plane_ok"] is True
    assert abs(res["nt_mm"] - 3.0) <= 0.15
    with pytest.raises(FetalDetectError, match="no NT found"):
        NTMeasurer(predictor=_FakeDetector(ph.boxes, drop=("NT",)), seg_predictor=_FakeSegmenter(None))(ph.image, 0.1)


def test_centiles():
    lo, hi = nt_centile(1.2, 38.0), nt_centile(2.7, 84.0)
    assert lo["nt_centile"] == pytest.approx(50, abs=0.5) and hi["nt_centile"] == pytest.approx(95, abs=0.5)
    with pytest.raises(FetalDetectError, match="outside the reference range"):
        nt_centile(2.0, 120.0)


# head frame: thalami at the origin, palate one unit to the right (anterior); v = down (midbrain side)
_GEO = PlaneCalibration(
    thresholds={"nasal bone": 0.05, "palate": 0.3, "thalami": 0.3, "midbrain": 0.3, "IT": 0.3, "CM": 0.3, "NT": 0.1},
    typical={"nasal bone": 0.2}, source="test",
    geometry={"span": [1.0, 1.5], "nasal bone": [0.9, 1.1, -0.5, -0.35], "midbrain": [-0.45, -0.15, 0.4, 0.65],
              "IT": [-0.2, 0.2, 0.65, 0.95], "CM": [-0.3, 0.3, 0.8, 1.2], "NT": [0.0, 1.7, 1.15, 1.95]})


def _landmarks(mirror=False, nasal=(300, 55), nasal_score=0.08):
    """Boxes (10 px squares) around centres in a 100 px head frame with thalami at (200, 100)."""
    pts = {"thalami": (200, 100, 0.9), "palate": (300, 100, 0.8), "midbrain": (170, 150, 0.8),
           "IT": (200, 180, 0.7), "CM": (200, 200, 0.6), "NT": (260, 250, 0.5), "nasal bone": (*nasal, nasal_score)}
    out = []
    for n, (x, y, s) in pts.items():
        y = 200 - y if mirror else y
        half = 40 if n == "thalami" else 5  # thalami box diagonal ~ 113 px: span 100/113 = 0.88 -> x0.85..1.5 ok
        out.append((n, s, (x - half, y - half, x + half, y + half)))
    return out


def test_plane_evidence_uses_calibrated_thresholds_and_anatomy():
    res = plane_evidence(_landmarks(), _GEO)
    assert res["plane_ok"] and res["anatomy_checked"] and res["missing"] == []
    assert 0.5 < res["plane_score"] < 1  # the nasal bone passes its low threshold but is weaker than typical
    assert plane_evidence(_landmarks(mirror=True), _GEO)["plane_ok"]  # a mirrored image is the same anatomy
    wrong = plane_evidence(_landmarks(nasal=(120, 55), nasal_score=0.9), _GEO)  # a "nasal bone" behind the head
    assert not wrong["plane_ok"] and wrong["missing"] == ["nasal bone"]
    assert "implausible" in wrong["plane_reasons"][0]
    weak = plane_evidence(_landmarks(nasal_score=0.02), _GEO)
    assert weak["missing"] == ["nasal bone"] and "below its threshold" in weak["plane_reasons"][0]
    assert res["chosen"]["NT"][0] == 0.5


def test_uncalibrated_plane_check_uses_the_default_threshold():
    res = plane_evidence([("palate", 0.9, (0, 0, 5, 5))])
    assert res["missing"] == ["nasal bone", "thalami", "midbrain", "IT", "CM"] and not res["anatomy_checked"]
    assert res["plane_calibration"] == "uncalibrated" and res["plane_score"] == pytest.approx(1 / 6, abs=0.01)


def test_two_input_sizes_merge_per_class_and_keep_the_nt_box_of_the_first():
    from fetal_detect.pipeline.nt import merge_scales

    p416 = Prediction(instances=[Instance("NT", 0.3, (0, 0, 100, 20)), Instance("palate", 0.5, (0, 50, 20, 70))])
    p512 = Prediction(instances=[Instance("NT", 0.6, (5, 0, 110, 22)), Instance("palate", 0.7, (1, 50, 21, 70)),
                                 Instance("nasal bone", 0.2, (30, 30, 40, 35))])
    got = {i.name: i for i in merge_scales([p416, p512])}
    assert got["NT"].confidence == 0.3 and got["palate"].confidence == 0.7 and "nasal bone" in got
    assert merge_scales([Prediction(), p512])[0].name == "palate"  # no NT at 416: the 512 px NT counts
    assert {i.name for i in merge_scales([Prediction(), p512])} == {"NT", "palate", "nasal bone"}


def test_calibration_picks_the_lowest_sensitivity_that_passes_most_six_landmark_planes():
    from fetal_detect.evaluate.nt_plane import ap50, calibrate

    rng = np.random.default_rng(0)
    names = ("nasal bone", "palate", "thalami", "midbrain", "IT", "CM")
    quality = rng.uniform(0.2, 0.9, 200)  # one clarity per plane: landmarks pass or fail together
    scores = {n: list(quality + 0.01 * k) for k, n in enumerate(names)}
    planes = [{n: s[i] for n, s in scores.items()} for i in range(200)]
    cal = calibrate(scores, planes)
    first = next(t for t in cal["table"] if t["all_six_pass"] >= 0.95)
    assert cal["chosen"] == first and cal["table"][0]["thresholds"]["palate"] >= cal["table"][-1]["thresholds"]["palate"]
    gts = {0: (0, 0, 10, 10), 1: (0, 0, 10, 10)}
    assert ap50([(0, 0.9, (0, 0, 10, 10)), (1, 0.8, (1, 0, 11, 10))], gts) == pytest.approx(1.0, abs=0.01)
    assert 0.5 <= ap50([(0, 0.9, (0, 0, 10, 10)), (1, 0.8, (50, 50, 60, 60))], gts) < 0.7  # one of two found
