"""Trans-ventricular biometry (the ``tv`` measurement): Vp and brain-outline HC on phantoms with exact truth,
and the measurement offered everywhere through its one row of the measurer table."""
import math

import numpy as np
import pytest

from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.geometry import ellipse_perimeter
from fetal_detect.measure.ventricle import VP_NORMAL_MAX_MM, atrial_width
from fetal_detect.runtime import Instance, Prediction

PX = 0.1  # mm per pixel


def ellipse_mask(shape, cx, cy, a, b, angle_deg):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    t = math.radians(angle_deg)
    x, y = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t), -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
    return ((x / a) ** 2 + (y / b) ** 2 <= 1).astype(np.uint8)


@pytest.mark.parametrize("seed", range(12))
def test_vp_of_an_elliptic_ventricle_is_its_minor_axis_within_a_pixel(seed):
    rng = np.random.default_rng(seed)
    b = rng.uniform(25, 90)  # half-width in px: 5-18 mm at 0.1 mm/px, both sides of the 10 mm limit
    m = ellipse_mask((500, 600), rng.uniform(250, 350), rng.uniform(200, 300), b * rng.uniform(1.6, 2.6), b,
                     rng.uniform(0, 180))
    r = atrial_width(m, PX)
    assert abs(r["vp_px"] - 2 * b) <= 1.0 and abs(r["vp_mm"] - 2 * b * PX) <= 0.1
    assert r["vp_normal"] == (r["vp_mm"] < VP_NORMAL_MAX_MM)
    (x1, y1), (x2, y2) = r["calipers"]
    assert math.hypot(x2 - x1, y2 - y1) == pytest.approx(r["vp_px"], abs=0.02)


def test_vp_is_taken_at_the_widest_part_perpendicular_to_the_axis():
    # a slim ventricle body (8 mm wide) and, at its end, an atrium 12 mm wide across the same axis
    body = ellipse_mask((400, 700), 300, 200, 220, 40, 0)
    atrium = ellipse_mask((400, 700), 470, 200, 60, 60, 0)
    r = atrial_width(body | atrium, PX)
    assert abs(r["vp_mm"] - 12.0) <= 0.1 and r["axis_position"] > 0.6  # at the atrium end
    assert abs(r["calipers"][0][0] - 470) <= 1 and abs(r["calipers"][1][0] - 470) <= 1  # a vertical chord there


def test_a_small_second_component_is_not_the_ventricle_and_an_empty_mask_is_none():
    m = ellipse_mask((300, 400), 200, 150, 90, 30, 20)
    m[10:14, 10:14] = 1  # a speck far away
    assert abs(atrial_width(m, PX)["vp_px"] - 60) <= 1.0
    assert atrial_width(np.zeros((50, 50), np.uint8), PX) is None
    assert "vp_mm" not in atrial_width(m, None)  # no pixel size: px only


class _Seg:
    weights, backend = "cns-seg-stub.pt", "stub"

    def __init__(self, instances):
        self.instances = instances

    def predict(self, image):
        return Prediction(instances=list(self.instances))


def _scene():
    brain = ellipse_mask((480, 640), 320, 240, 250, 200, 10)
    lv = ellipse_mask((480, 640), 400, 260, 90, 40, 30)
    return brain, lv, [Instance("Brain", 0.9, (70, 40, 570, 440), brain.astype(bool)),
                       Instance("LV", 0.8, (310, 200, 490, 320), lv.astype(bool))]


def test_tv_measurer_gives_vp_and_brain_outline_biometry_in_mm():
    from fetal_detect.pipeline.tv import TVMeasurer

    _, _, inst = _scene()
    out = TVMeasurer(predictor=_Seg(inst))(np.zeros((480, 640), np.uint8), PX)
    assert abs(out["vp_mm"] - 8.0) <= 0.1
    assert out["brain_hc_mm"] == pytest.approx(ellipse_perimeter(250, 200) * PX, rel=0.005)
    assert abs(out["brain_bpd_mm"] - 40.0) <= 0.2 and abs(out["brain_ofd_mm"] - 50.0) <= 0.2
    assert out["calipers"][0].name == "vp" and 0 < out["confidence"] <= 1 and not out["notes"]
    with pytest.raises(FetalDetectError) as e:
        TVMeasurer(predictor=_Seg([]))(np.zeros((64, 64), np.uint8), PX)
    assert e.value.status == 422
    only_brain = TVMeasurer(predictor=_Seg(inst[:1]))(np.zeros((480, 640), np.uint8), PX)
    assert "vp_mm" not in only_brain and "no lateral ventricle" in only_brain["notes"][0]


def test_tv_is_offered_everywhere_by_its_table_row_and_routed_from_the_trans_ventricular_plane():
    from fetal_detect import measurers
    from fetal_detect.pipeline.analyze import Analyzer
    from fetal_detect.pipeline.tv import TVMeasurer

    assert "tv" in measurers.choices() and "tv" in measurers.routes("trans-ventricular")
    assert {"vp_mm", "brain_hc_mm"} <= set(measurers.field_columns()) and measurers.units()["vp_mm"] == "mm"
    _, _, inst = _scene()
    a = Analyzer()
    a._measurers["tv"] = TVMeasurer(predictor=_Seg(inst))
    result = a.analyze(np.zeros((480, 640), np.uint8), PX, task="tv")
    d = result.to_dict()
    assert d["status"] == "ok" and abs(d["measurements"]["vp_mm"] - 8.0) <= 0.1 and d["units"]["vp_mm"] == "mm"
    assert {c["name"] for c in d["overlay"]["calipers"]} == {"vp", "brain_bpd", "brain_ofd"}
    bpd = next(c for c in d["overlay"]["calipers"] if c["name"] == "brain_bpd")
    assert bpd["length_mm"] == d["measurements"]["brain_bpd_mm"]
    assert d["models"]["cns-seg"]["backend"] == "stub"
    row = result.row()
    assert row["vp_mm"] == d["measurements"]["vp_mm"] and row["measurers"] == "tv"
