"""The phantom generator: deterministic, and its truth is exact."""
import math

import numpy as np
import pytest

from fetal_detect.data import phantom
from fetal_detect.measure.geometry import ellipse_perimeter


def test_same_seed_gives_same_image_and_truth():
    a, b = phantom.make_hc(3), phantom.make_hc(3)
    assert np.array_equal(a.image, b.image) and a.truth == b.truth
    assert not np.array_equal(a.image, phantom.make_hc(4).image)


@pytest.mark.parametrize("kind", phantom.KINDS)
def test_every_kind_renders_a_sector_with_ui_text(kind):
    ph = phantom.MAKERS[kind](1)
    assert ph.image.dtype == np.uint8 and ph.image.ndim == 2
    h, w = ph.image.shape
    assert ph.image[h // 2, w // 2] > 0  # inside the fan
    assert ph.image[int(0.05 * h) - 5: int(0.05 * h) + 2, :int(0.2 * w)].max() > 150  # burnt-in text


def test_hc_truth_matches_requested_circumference_and_mask():
    ph = phantom.make_hc(5, pixel_size_mm=0.1, hc_mm=180.0)
    assert ph.truth["hc_mm"] == pytest.approx(180.0, rel=1e-9)
    e = ph.truth["ellipse"]
    assert ellipse_perimeter(e["a"], e["b"]) * 0.1 == pytest.approx(180.0, rel=1e-3)
    area_px = (ph.mask > 0).sum()
    assert area_px == pytest.approx(math.pi * e["a"] * e["b"], rel=0.01)
    assert ph.truth["bpd_mm"] < ph.truth["ofd_mm"]


def test_nt_phantom_band_has_requested_thickness_and_all_structures():
    ph = phantom.make_nt(2, pixel_size_mm=0.1, nt_mm=2.5)
    (x1, y1), (x2, y2) = ph.truth["calipers"]
    assert math.hypot(x2 - x1, y2 - y1) * 0.1 == pytest.approx(2.5, rel=1e-9)
    assert {b[0] for b in ph.boxes} == set(phantom.NT_STRUCTURES)
    assert ph.mask.any()


def test_hc18_layout_writer_round_trips_through_the_converter(tmp_path):
    from fetal_detect.data.converters.hc18 import iter_hc18

    phs = phantom.write_hc18_layout(tmp_path, 3, seed=1)
    items, problems = iter_hc18(tmp_path)
    assert not problems and len(items) == 3
    assert items[0].hc_mm == pytest.approx(phs[0].truth["hc_mm"], abs=1e-3)
