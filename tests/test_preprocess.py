"""Preprocessing: sector detection on phantoms with a known fan, each step's contract, the CLI."""

import cv2
import numpy as np
import pytest

from fetal_detect import preprocess as pp
from fetal_detect.data import phantom
from fetal_detect.errors import FetalDetectError


def _phantom_with_truth(make, seed, monkeypatch):
    """A phantom frame and the exact fan mask it was rendered with (captured from the renderer)."""
    seen = {}
    real = phantom._sector_mask

    def spy(h, w, rng):
        seen["mask"], ax, ay = real(h, w, rng)
        return seen["mask"], ax, ay

    monkeypatch.setattr(phantom, "_sector_mask", spy)
    return make(seed), seen["mask"]


@pytest.mark.parametrize("make", [phantom.make_hc, phantom.make_nt, phantom.make_cns, phantom.make_blank])
def test_sector_mask_matches_the_phantom_fan(make, monkeypatch):
    ph, truth = _phantom_with_truth(make, 3, monkeypatch)
    m = pp.sector_mask(ph.image)
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.97, iou


def test_sector_removes_burnt_in_text_outside_the_fan(monkeypatch):
    ph, truth = _phantom_with_truth(phantom.make_hc, 5, monkeypatch)
    text = (ph.image > 0) & ~truth  # the phantom's UI text is everything lit outside the fan
    assert text.sum() > 100
    out = pp.apply(ph.image, ["sector"])
    assert out[text].max() == 0
    inside = truth & (pp.sector_mask(ph.image))
    assert np.array_equal(out[inside], ph.image[inside])  # the fan itself is untouched


def test_sector_keeps_the_whole_frame_when_there_is_no_fan():
    rng = np.random.default_rng(0)
    img = rng.integers(30, 200, (120, 160), dtype=np.uint8)  # a frame already cropped inside the fan
    assert pp.sector_mask(img).all()
    assert pp.sector_mask(np.zeros((50, 60), np.uint8)).all()


def test_crop_returns_the_fan_bounding_box(monkeypatch):
    ph, truth = _phantom_with_truth(phantom.make_blank, 1, monkeypatch)
    x1, y1, x2, y2 = pp.sector_box(truth)
    out = pp.apply(ph.image, ["crop"])
    assert abs(out.shape[0] - (y2 - y1)) <= 4 and abs(out.shape[1] - (x2 - x1)) <= 4


@pytest.mark.parametrize("steps", ["clahe", "wavelet", "wavelet:method=visu:level=3", "speckle",
                                   "speckle:method=median", "speckle:method=bilateral", "normalize",
                                   "sector,clahe,wavelet,speckle,normalize"])
def test_each_step_keeps_shape_dtype_and_black_background(steps):
    img = phantom.make_nt(7, size=(320, 240)).image
    out = pp.apply(img, steps)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[img == 0].max() == 0
    bgr = pp.apply(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), steps)
    assert bgr.shape == (*img.shape, 3)


def _speckle_sd(img):
    """SD of the high-pass (image - Gaussian(4 px)) grey levels in the flat centre of a blank phantom."""
    x = img.astype(np.float32)
    h, w = x.shape
    return float((x - cv2.GaussianBlur(x, (0, 0), 4))[int(0.45 * h):int(0.7 * h), int(0.35 * w):int(0.65 * w)].std())


@pytest.mark.parametrize("step", ["wavelet", "wavelet:method=visu", "speckle", "speckle:method=median"])
def test_denoising_steps_reduce_speckle(step):
    img = phantom.make_blank(2, size=(320, 240)).image
    assert _speckle_sd(pp.apply(img, [step])) < 0.8 * _speckle_sd(img)


def test_visushrink_smooths_more_than_bayesshrink():
    img = phantom.make_blank(4, size=(320, 240)).image
    bayes, visu = pp.wavelet_denoise(img, method="bayes"), pp.wavelet_denoise(img, method="visu")
    assert np.abs(np.diff(visu.astype(float), axis=1)).mean() < np.abs(np.diff(bayes.astype(float), axis=1)).mean()


def test_normalize_stretches_fan_percentiles_to_full_range():
    img = (phantom.make_blank(1, size=(320, 240)).image // 3)
    out = pp.normalize(img, 1, 99)
    vals = out[img > 0]
    assert np.percentile(vals, 99) >= 250 and np.percentile(vals, 1) <= 5


def test_no_steps_returns_the_input_unchanged():
    img = np.zeros((4, 4), np.uint8)
    assert pp.apply(img, []) is img and pp.apply(img, None) is img


def test_steps_parse_from_cli_strings_and_yaml_dicts():
    assert pp.parse_steps("sector, wavelet:method=visu:level=3") == [
        ("sector", {}), ("wavelet", {"method": "visu", "level": 3})]
    assert pp.parse_steps([{"clahe": {"clip_limit": 3.0}}]) == [("clahe", {"clip_limit": 3.0})]
    assert pp.steps_key(["sector"]) != pp.steps_key(["sector", "clahe"]) and pp.steps_key([]) == ""
    assert pp.changes_geometry(["crop"]) and not pp.changes_geometry(["sector", "clahe"])


@pytest.mark.parametrize("bad, needle", [("sharpen", "unknown preprocess step"),
                                         ("wavelet:sigma=3", "unknown parameter"),
                                         ("wavelet:level", "key=value"),
                                         ("wavelet:method=sure", "bayes' or 'visu")])
def test_bad_steps_are_one_line_user_errors(bad, needle):
    with pytest.raises(FetalDetectError, match=needle):
        pp.apply(np.full((64, 64), 50, np.uint8), bad)
