"""rim_support: does an ellipse sit on a bright skull rim? Phantoms with exact truth."""
import numpy as np
import pytest

from fetal_detect.data.phantom import make_hc
from fetal_detect.measure.geometry import Ellipse, fit_ellipse
from fetal_detect.measure.rim import rim_support


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_true_skull_ellipse_is_supported_and_wrong_ones_are_not(seed):
    ph = make_hc(seed)
    ell, _ = fit_ellipse(ph.mask)
    on_skull = rim_support(ph.image, ell)
    assert on_skull > 0.7
    for wrong in (ell.scaled(0.8), ell.scaled(1.25), Ellipse(ell.cx + 0.3 * ell.a, ell.cy, ell.a, ell.b, ell.angle_deg)):
        assert rim_support(ph.image, wrong) < on_skull - 0.3


def test_a_blank_image_supports_nothing_and_accepts_the_result_dict():
    ell = Ellipse(200, 150, 80, 60, 10.0)
    assert rim_support(np.zeros((300, 400), np.uint8), ell.as_dict()) == 0.0
    assert rim_support(np.full((300, 400), 128, np.uint8), ell) == 0.0


def test_an_ellipse_leaving_the_image_loses_the_samples_outside():
    ph = make_hc(4)
    ell, _ = fit_ellipse(ph.mask)
    moved = Ellipse(ell.a * 0.5, ell.cy, ell.a, ell.b, ell.angle_deg)  # about half of it left of x = 0
    assert rim_support(ph.image, moved) < 0.6
    assert rim_support(ph.image, Ellipse(-5000, -5000, 10, 5, 0)) == 0.0
    assert rim_support(ph.image, Ellipse(10, 10, 0, 0, 0)) == 0.0
