"""HC mirror test-time augmentation through the real HCMeasurer, with the model replaced by exact masks."""
import numpy as np
import pytest

from fetal_detect.data.phantom import make_hc
from fetal_detect.pipeline.hc import HCMeasurer
from fetal_detect.serve.testing import MaskOracle, image_key


def test_mirror_tta_measures_the_mirrored_image_too_and_averages_the_fits():
    ph = make_hc(5, pixel_size_mm=0.2)
    mirrored = np.ascontiguousarray(ph.image[:, ::-1])
    # the "model" sees a 6 px larger skull in the mirrored image
    import cv2

    bigger = cv2.dilate(np.ascontiguousarray(ph.mask[:, ::-1]), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13)))
    oracle = MaskOracle({image_key(ph.image): ph.mask, image_key(mirrored): bigger})
    plain = HCMeasurer(predictor=oracle)(ph.image, 0.2)
    tta = HCMeasurer(predictor=oracle, tta=True)(ph.image, 0.2)
    assert plain["tta"] == "none" and tta["tta"] == "mirror"
    # this phantom's skull runs out of the fan at the upper left: that arc is left out, HC stays exact
    assert plain["border_points_dropped"] > 100
    assert plain["hc_mm"] == pytest.approx(ph.truth["hc_mm"], rel=0.003)
    # the average of the two fits: half of the larger skull's extra perimeter (2 pi x 6 px x 0.2 mm / 2)
    assert tta["hc_mm"] - plain["hc_mm"] == pytest.approx(np.pi * 6 * 0.2, rel=0.15)


def test_tta_is_off_unless_asked_or_set_in_the_sidecar():
    oracle = MaskOracle({})
    assert HCMeasurer(predictor=oracle).tta is False
    oracle.meta = {"tta": True}
    assert HCMeasurer(predictor=oracle).tta is True
    assert HCMeasurer(predictor=oracle, tta=False).tta is False
