"""Decoding for speed without changing what the models see: JPEG is decoded to its luma directly."""
import cv2
import numpy as np

from fetal_detect.data.phantom import make_hc
from fetal_detect.io import load_image


def test_jpeg_decodes_to_its_luma_as_colour_then_grey_would():
    grey = make_hc(4, pixel_size_mm=0.2).image
    tinted = cv2.merge([grey, np.clip(grey.astype(int) + 20, 0, 255).astype(np.uint8), grey // 2])  # colour screenshot
    for colour, exact in ((cv2.merge([grey] * 3), True), (tinted, False)):
        data = cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        loaded = load_image(data, name="x.jpg")
        slow = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
        assert loaded.format == "jpeg" and loaded.image.shape == grey.shape and loaded.image.dtype == np.uint8
        diff = np.abs(loaded.image.astype(int) - slow)
        if exact:  # grey content (the ultrasound itself): identical
            assert diff.max() == 0
        else:  # where RGB clipped a saturated tint the luma differs: rare and small on average
            assert np.percentile(diff, 99) <= 2 and diff.mean() < 0.2


def test_png_still_decodes_exactly():
    grey = make_hc(5, pixel_size_mm=0.2).image
    assert np.array_equal(load_image(cv2.imencode(".png", grey)[1].tobytes()).image, grey)
    bgr = cv2.merge([grey, grey, grey])
    assert np.array_equal(load_image(cv2.imencode(".png", bgr)[1].tobytes()).image, grey)

