"""NT measurement: sub-pixel thickness on phantoms, bad input, plane check and the risk note."""
import json

import numpy as np
import pytest

from fetal_detect.cli import main
from fetal_detect.data.phantom import make_nt
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.nt import measure_nt, nt_centile, plane_check, risk_note
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
    assert abs(res["nt_mm"] - 3.8) <= 0.1 and len(res["calipers"]) == 2
    assert {"confidence", "plane_ok", "missing", "processing_ms"} <= set(res)
    assert res["risk"]["flag"] is True and res["risk"]["nt_centile"] > 99
    assert overlay.exists()


class _FakeDetector:
    """Stands in for nt-det: returns the phantom's own boxes minus the ones named in ``drop``."""

    backend, weights = "fake", "fake.pt"

    def __init__(self, boxes, drop=()):
        self.instances = [Instance(n, 0.9, tuple(b)) for n, *b in boxes if n not in drop]

    def predict(self, image):
        return Prediction(instances=list(self.instances))


def test_unsuitable_plane_returns_no_number():
    ph = make_nt(7, pixel_size_mm=0.1, nt_mm=2.5)
    m = NTMeasurer(predictor=_FakeDetector(ph.boxes, drop=("nasal bone", "CM")), use_seg=False)
    res = m(ph.image, 0.1)
    assert res["plane_ok"] is False and set(res["missing"]) == {"nasal bone", "CM"}
    assert res["nt_mm"] is None and res["status"] == "unsuitable_plane"
    ok = NTMeasurer(predictor=_FakeDetector(ph.boxes), use_seg=False)
    res = ok(ph.image, 0.1)
    assert res["plane_ok"] is True and abs(res["nt_mm"] - 2.5) <= 0.1


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


def test_plane_check_and_centiles():
    assert plane_check({"palate": 0.9})["missing"] == ["nasal bone", "thalami", "midbrain", "IT", "CM"]
    lo, hi = nt_centile(1.2, 38.0), nt_centile(2.7, 84.0)
    assert lo["nt_centile"] == pytest.approx(50, abs=0.5) and hi["nt_centile"] == pytest.approx(95, abs=0.5)
    with pytest.raises(FetalDetectError, match="outside the reference range"):
        nt_centile(2.0, 120.0)
