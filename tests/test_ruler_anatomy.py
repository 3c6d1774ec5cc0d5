"""Rulers whose tick interval the ticks do not tell (the right-edge dot column of the Siemens layout,
3-4 sparse dots) and the fetal anatomy that picks the interval or vetoes a ruler a factor 2 off."""
import numpy as np
import pytest

from fetal_detect.data.phantom import make_nt
from fetal_detect.measure import anatomy_scale
from fetal_detect.measure.calibration import resolve_pixel_size, review_with_anatomy
from fetal_detect.measure.ruler import read_ruler
from fetal_detect.runtime import Instance, Prediction, Predictor
from test_ruler import with_ruler

DOT_SPACING = 116.0  # px between dots: 1 cm on the Shenzhen Siemens views


def with_dots(image, spacing=DOT_SPACING, x=600, y0=60.0, n=4, value=230):
    """Crisp 2 x 2 dots drawn over the image (as the Siemens layout draws them over tissue)."""
    img = image.copy()
    for i in range(n):
        y = int(round(y0 + i * spacing))
        if y + 2 <= img.shape[0]:
            img[y:y + 2, x:x + 2] = value
    return img


def anatomy_boxes(pixel_size_mm, at=(300, 200)):
    """thalami / midbrain / palate boxes of the median 11-14 week size at ``pixel_size_mm``."""
    x, y = at
    return [Instance(name, 0.9, (x, y, x + mm / pixel_size_mm, y + 0.6 * mm / pixel_size_mm))
            for name, mm in anatomy_scale.REFERENCE_MM.items()]


@pytest.fixture(scope="module")
def scan():
    return make_nt(11, pixel_size_mm=0.1, nt_mm=2.4)


def test_a_right_edge_dot_column_is_read_to_sub_pixel_but_its_interval_is_left_open(scan):
    r = read_ruler(with_dots(scan.image))
    assert r.pixel_size_mm is None and r.ambiguous and r.side == "right" and len(r.ticks) == 4
    assert r.spacing_px == pytest.approx(DOT_SPACING, abs=0.05)
    assert r.pixel_size_candidates_mm == pytest.approx([5 / DOT_SPACING, 10 / DOT_SPACING], rel=1e-3)
    assert "pixel_size_candidates_mm" in r.as_dict()
    given = read_ruler(with_dots(scan.image), interval_mm=10)
    assert given.pixel_size_mm == pytest.approx(10 / DOT_SPACING, rel=1e-3) and given.interval_from == "user"


def test_right_edge_ticks_fit_both_5_mm_and_1_cm():
    from test_ruler import dark

    r = read_ruler(with_ruler(dark(), 41.3, side="right", n=10))
    assert r.pixel_size_mm is None and r.ambiguous
    assert r.pixel_size_candidates_mm == pytest.approx([5 / 41.3, 10 / 41.3], rel=3e-3)


def test_two_stray_dots_or_lines_of_text_are_not_a_ruler(scan):
    assert not read_ruler(with_dots(scan.image, n=2)).ambiguous
    text_like = with_dots(scan.image, spacing=26.0, y0=10.0, n=3)  # three lines of a text panel
    r = read_ruler(text_like)
    assert r.pixel_size_mm is None and not r.ambiguous


def test_the_anatomy_needs_two_confident_structures():
    two = [i.as_dict() for i in anatomy_boxes(0.08)[:2]]
    assert anatomy_scale.implied_pixel_size_mm(two)[0] == pytest.approx(0.08, rel=1e-3)
    assert anatomy_scale.implied_pixel_size_mm(two[:1])[0] is None
    faint = [{**d, "confidence": 0.1} for d in two]
    assert anatomy_scale.implied_pixel_size_mm(faint)[0] is None


def test_the_anatomy_picks_the_candidate_within_its_range_and_never_a_size_of_its_own(scan):
    cal = resolve_pixel_size(image=with_dots(scan.image))
    assert cal.pixel_size_mm is None and cal.ruler["pixel_size_candidates_mm"]
    for truth in (5 / DOT_SPACING, 10 / DOT_SPACING):
        picked, changed = review_with_anatomy(cal, [i.as_dict() for i in anatomy_boxes(truth * 1.15)])
        assert changed and picked.source == "ruler" and picked.pixel_size_mm == pytest.approx(truth, rel=1e-3)
        assert picked.ruler["interval_from"] == "anatomy" and "anatomy" in picked.detail
    between = review_with_anatomy(cal, [i.as_dict() for i in anatomy_boxes(7.07 / DOT_SPACING)])[0]
    assert between.pixel_size_mm is None  # half-way between 5 mm and 1 cm: neither is taken


def test_a_ruler_twice_off_the_anatomy_is_vetoed_and_a_user_size_is_never_touched():
    from test_ruler import dark

    img = with_ruler(dark(), 30.0, n=14)
    cal = resolve_pixel_size(image=img)
    assert cal.source == "ruler" and cal.pixel_size_mm == pytest.approx(5 / 30, rel=3e-3)
    agree, changed = review_with_anatomy(cal, [i.as_dict() for i in anatomy_boxes(5 / 30 * 1.2)])
    assert not changed and agree.pixel_size_mm == cal.pixel_size_mm and agree.ruler["anatomy"]
    vetoed, changed = review_with_anatomy(cal, [i.as_dict() for i in anatomy_boxes(10 / 30)])
    assert changed and vetoed.pixel_size_mm is None and vetoed.source is None
    assert "disagrees with the fetal anatomy" in vetoed.detail
    user = resolve_pixel_size(0.2, image=img)
    assert review_with_anatomy(user, [i.as_dict() for i in anatomy_boxes(0.05)]) == (user, False)


class _CountingNT(Predictor):
    """nt-det that answers the phantom's NT box plus median-sized anatomy and counts its passes."""

    backend = "counting"
    passes = 0
    answer: list = []

    def _load(self, **options):
        return None

    def _infer(self, images):
        _CountingNT.passes += len(images)
        return [Prediction(instances=list(_CountingNT.answer)) for _ in images]


@pytest.fixture
def counting_analyzer(scan, tmp_path, monkeypatch):
    """An Analyzer whose nt-det (the counting back-end) finds the phantom's NT and median-sized anatomy at
    1 cm per dot of :func:`with_dots`."""
    from fetal_detect.pipeline.analyze import Analyzer
    from fetal_detect.runtime import BACKENDS

    nt_box = next(b for n, *b in scan.boxes if n == "NT")
    _CountingNT.passes = 0
    _CountingNT.answer = [Instance("NT", 0.9, tuple(nt_box)), *anatomy_boxes(10 / DOT_SPACING)]
    monkeypatch.setitem(BACKENDS, ".pt", lambda: _CountingNT)
    (tmp_path / "nt-det.pt").write_bytes(b"nt")
    return Analyzer({"nt-det": str(tmp_path / "nt-det.pt"), "nt-seg": None}, gate=lambda image, pred: None)


def test_analyze_measures_nt_in_the_interval_the_anatomy_picked_with_one_detector_pass(scan, counting_analyzer):
    truth = 10 / DOT_SPACING
    a = counting_analyzer
    img = with_dots(scan.image)
    d = a.analyze(img, task="nt", calibration=resolve_pixel_size(image=img)).to_dict()
    assert d["pixel_size_source"] == "ruler" and d["pixel_size_mm"] == pytest.approx(truth, rel=1e-3)
    assert d["ruler"]["interval_from"] == "anatomy" and "anatomy" in d["pixel_size_detail"]
    nt = d["results"]["nt"]
    assert nt["status"] == "ok" and d["measurements"]["nt_mm"] == pytest.approx(d["measurements"]["nt_px"] * truth, rel=1e-3)
    assert _CountingNT.passes == len(a.measurer("nt").detectors)  # measured twice, detected once


def test_calibrate_with_anatomy_prints_the_interval_the_anatomy_picked(scan, counting_analyzer, tmp_path):
    import cv2

    from fetal_detect.commands.calibrate import calibrate_file

    path = tmp_path / "siemens.png"
    cv2.imwrite(str(path), with_dots(scan.image))
    alone = calibrate_file(str(path))
    assert alone["pixel_size_mm"] is None and len(alone["pixel_size_candidates_mm"]) == 2
    out = calibrate_file(str(path), analyzer=counting_analyzer, overlay_dir=str(tmp_path / "ov"))
    assert out["pixel_size_mm"] == pytest.approx(10 / DOT_SPACING, rel=1e-3) and out["source"] == "ruler"
    assert out["interval_from"] == "anatomy" and out["anatomy"]["box_px"] and (tmp_path / "ov" / "siemens-ruler.png").exists()
