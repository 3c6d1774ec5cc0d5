"""HC maths against phantom truth: ellipse fit, Ramanujan perimeter, GA and centiles, calibration."""
import math

import cv2
import numpy as np
import pytest

from fetal_detect.data.phantom import make_hc
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.geometry import Ellipse, ellipse_perimeter, fit_ellipse
from fetal_detect.measure.hc import (fit_calibration, hadlock_ga_weeks, intergrowth_hc_centile, intergrowth_hc_mm,
                                     measure_hc)


def test_ramanujan_perimeter_is_exact_for_a_circle_and_close_to_numeric_integration():
    assert ellipse_perimeter(10, 10) == pytest.approx(2 * math.pi * 10, rel=1e-12)
    a, b = 30.0, 21.0
    t = np.linspace(0, 2 * np.pi, 200001)
    numeric = np.trapezoid(np.hypot(a * np.sin(t), b * np.cos(t)), t)
    assert ellipse_perimeter(a, b) == pytest.approx(numeric, rel=1e-9)


@pytest.mark.parametrize("seed,hc_mm", [(1, 110.0), (2, 150.0), (3, 170.0), (4, 135.0)])
def test_hc_error_below_0_3_percent_on_exact_phantoms_at_0_1_mm(seed, hc_mm):
    ph = make_hc(seed, pixel_size_mm=0.1, hc_mm=hc_mm, size=(900, 700))
    res = measure_hc(ph.mask, 0.1)
    assert abs(res["hc_mm"] - ph.truth["hc_mm"]) / ph.truth["hc_mm"] < 0.003
    assert abs(res["bpd_mm"] - ph.truth["bpd_mm"]) < 0.3 and abs(res["ofd_mm"] - ph.truth["ofd_mm"]) < 0.3


def test_fit_is_robust_to_a_missing_arc_and_a_stray_blob():
    truth = Ellipse(400, 300, 200, 150, 20.0)
    mask = truth.mask((600, 800))
    cv2.rectangle(mask, (560, 200), (620, 420), 0, -1)  # a bite out of one side (shadowed skull)
    cv2.circle(mask, (230, 300), 40, 255, -1)  # noise glued on the other side
    ell, inliers = fit_ellipse(mask)
    clean = ellipse_perimeter(truth.a, truth.b)
    assert abs(ellipse_perimeter(ell.a, ell.b) - clean) / clean < 0.02
    assert 0.5 < inliers < 1.0


def test_no_skull_and_bad_pixel_sizes_are_user_errors():
    with pytest.raises(FetalDetectError, match="no skull"):
        measure_hc(np.zeros((100, 100), np.uint8), 0.1)
    mask = make_hc(1, pixel_size_mm=0.2).mask
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(FetalDetectError, match="pixel size"):
            measure_hc(mask, bad)


def test_without_pixel_size_results_are_in_pixels_and_say_so():
    res = measure_hc(make_hc(1, pixel_size_mm=0.2).mask, None)
    assert res["units"] == "px" and "hc_px" in res and "hc_mm" not in res and "pixel" in res["note"]


def test_hadlock_ga_and_intergrowth_centiles():
    assert hadlock_ga_weeks(175.0) == pytest.approx(20.0, abs=0.1)  # 8.96 + 0.54*17.5 + 0.0003*17.5^3
    assert hadlock_ga_weeks(30.0) is None  # outside the formula's range: no made-up age
    mean, sd = intergrowth_hc_mm(20.0)
    assert 165 < mean < 180 and 5 < sd < 10
    assert intergrowth_hc_centile(mean, 20.0)["hc_centile"] == pytest.approx(50.0, abs=0.1)
    assert intergrowth_hc_centile(mean + 1.645 * sd, 20.0)["hc_centile"] == pytest.approx(95.0, abs=0.2)
    with pytest.raises(FetalDetectError):
        intergrowth_hc_centile(100.0, 45.0)


def test_calibration_recovers_a_known_bias_line():
    rng = np.random.default_rng(0)
    ref = rng.uniform(80, 330, 200)
    fitted = (ref - 2.0) / 1.02 + rng.normal(0, 0.2, 200)
    cal = fit_calibration(fitted, ref, "test")
    assert cal.slope == pytest.approx(1.02, abs=0.005) and cal.intercept_mm == pytest.approx(2.0, abs=0.5)
    assert fit_calibration(fitted[:5], ref[:5], "test").slope == 1.0  # too few: identity


def test_a_skull_cut_by_the_image_frame_is_fitted_without_the_straight_cut():
    truth = Ellipse(330, 300, 200, 160, 10.0)
    mask = truth.mask((600, 480))  # the right ~15 % of the head is outside the 480 px wide frame
    res = measure_hc(mask, 0.2)
    clean = ellipse_perimeter(truth.a, truth.b) * 0.2
    assert res["border_points_dropped"] > 50
    assert abs(res["hc_mm"] - clean) / clean < 0.01
    whole = fit_ellipse(mask)[0]  # every border point, the cut included
    assert abs(ellipse_perimeter(whole.a, whole.b) * 0.2 - clean) > max(3 * abs(res["hc_mm"] - clean), 0.015 * clean)


def test_a_skull_cut_by_the_sector_border_is_fitted_without_the_cut_when_the_image_is_given():
    ph = make_hc(2, pixel_size_mm=0.1, hc_mm=170.0, size=(900, 700))
    ell, _ = fit_ellipse(ph.mask)
    image, mask = ph.image.copy(), ph.mask.copy()
    yy, xx = np.mgrid[0:700, 0:900]
    outside = xx > ell.cx + 0.75 * ell.a + 0.3 * (yy - ell.cy)  # a slanted fan edge through the head
    image[outside], mask[outside] = 0, 0
    blind = measure_hc(mask, 0.1)
    seen = measure_hc(mask, 0.1, image_gray=image)
    assert blind["border_points_dropped"] == 0 and seen["border_points_dropped"] > 50
    assert abs(seen["hc_mm"] - ph.truth["hc_mm"]) < 0.01 * ph.truth["hc_mm"] < abs(blind["hc_mm"] - ph.truth["hc_mm"])
    assert 0.0 <= seen["rim_support"] <= 1.0


def test_a_whole_skull_loses_no_points_and_mirror_views_are_averaged():
    ph = make_hc(3, pixel_size_mm=0.1, hc_mm=150.0, size=(900, 700))
    one = measure_hc(ph.mask, 0.1, image_gray=ph.image)
    assert one["border_points_dropped"] == 0 and one["rim_support"] > 0.7
    both = measure_hc(ph.mask, 0.1, more_masks=[ph.mask[:, ::-1][:, ::-1]])
    assert both["hc_mm"] == pytest.approx(one["hc_mm"], abs=0.01)
    grown = cv2.dilate(ph.mask, np.ones((9, 9), np.uint8))  # a second view 4 px larger all round
    avg = measure_hc(ph.mask, 0.1, more_masks=[grown])
    big = measure_hc(grown, 0.1)
    assert one["hc_mm"] < avg["hc_mm"] < big["hc_mm"]


def test_mean_ellipse_averages_axis_angles_across_the_plus_minus_90_wrap():
    from fetal_detect.measure.geometry import mean_ellipse

    m = mean_ellipse([Ellipse(10, 20, 50, 40, 89.0), Ellipse(12, 20, 52, 40, -89.0)])
    assert (m.cx, m.a) == (11, 51) and abs(abs(m.angle_deg) - 90) < 1e-6
