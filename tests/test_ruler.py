"""Depth-ruler calibration on phantoms with drawn rulers of known spacing, refusals, the one pixel-size
precedence and the ``calibrate`` command."""
import json
import time

import cv2
import numpy as np
import pytest

from fetal_detect.cli import main
from fetal_detect.data.phantom import make_blank, make_hc, make_nt
from fetal_detect.measure.calibration import resolve_pixel_size
from fetal_detect.measure.ruler import draw_ruler, read_ruler


def with_ruler(image, spacing, side="left", n=12, y0=20.0, x=18, lengths=(4,), drop=(), jitter=None, seed=0,
               value=230, noise=0.0):
    """Draw ``n`` ticks ``spacing`` px apart (sub-pixel: anti-aliased over two rows) at column ``x`` from the
    ``side`` edge; ``lengths`` cycles over the ticks (major/minor patterns); ``drop`` ticks are occluded."""
    img = image.astype(np.float32).copy()
    h, w = img.shape
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i in drop:
            continue
        y = y0 + i * spacing + (jitter[i] if jitter is not None else 0.0)
        if y >= h - 2:
            break
        length = lengths[i % len(lengths)]
        x1 = x if side == "left" else w - x - length
        r0, f = int(np.floor(y)), y - np.floor(y)
        img[r0, x1:x1 + length] = np.maximum(img[r0, x1:x1 + length], value * (1 - f))
        img[r0 + 1, x1:x1 + length] = np.maximum(img[r0 + 1, x1:x1 + length], value * f)
    if noise:
        img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def dark(h=480, w=640, seed=0):
    """A screenshot-like frame: the phantom scan in the middle, black margins where rulers live."""
    img = np.zeros((h, w), np.uint8)
    scan = make_hc(seed, size=(w - 160, h)).image
    img[:, 80:w - 80] = scan
    return img


@pytest.mark.parametrize("spacing, side", [(21.37, "left"), (33.9, "right"), (48.25, "left"), (71.6, "right")])
def test_spacing_is_recovered_to_sub_pixel_on_either_side(spacing, side):
    n = int((480 - 30) // spacing)
    # a right-edge column's interval is ambiguous (tests/test_ruler_anatomy.py): given here
    r = read_ruler(with_ruler(dark(), spacing, side=side, n=n), interval_mm=5.0 if side == "right" else None)
    assert r.pixel_size_mm is not None, r.reason
    assert r.source == "ruler" and r.side == side and len(r.ticks) == n
    assert r.spacing_px == pytest.approx(spacing, rel=0.003)
    assert r.pixel_size_mm == pytest.approx(5.0 / spacing, rel=0.003)
    assert 0 < r.confidence <= 1


def test_noise_and_partial_occlusion_still_give_the_spacing():
    img = with_ruler(dark(seed=3), 29.4, n=15, drop=(4, 9), noise=6.0, seed=3)
    r = read_ruler(img)
    assert r.pixel_size_mm is not None, r.reason
    assert r.spacing_px == pytest.approx(29.4, rel=0.005) and len(r.ticks) == 13


def test_major_minor_alternation_is_5_mm_ticks():
    r = read_ruler(with_ruler(dark(), 30.0, n=15, lengths=(6, 3)))
    assert r.pixel_size_mm == pytest.approx(5 / 30.0, rel=0.005) and "alternating" in r.pattern


def test_faint_minor_ticks_half_way_are_found():
    img = with_ruler(dark(), 60.0, n=8, lengths=(6,), value=240)
    img = with_ruler(img, 60.0, n=7, y0=50.0, lengths=(2,), value=90)
    r = read_ruler(img)
    assert r.spacing_px == pytest.approx(30.0, rel=0.005), r.reason


def test_long_tick_every_five_is_ambiguous_unless_the_interval_is_given():
    img = with_ruler(dark(), 40.0, n=11, lengths=(10, 3, 3, 3, 3))
    r = read_ruler(img)
    assert r.pixel_size_mm is None and "5 mm and 1 cm" in r.reason
    r = read_ruler(img, interval_mm=10)
    assert r.pixel_size_mm == pytest.approx(10 / 40.0, rel=0.005) and r.interval_from == "user"


def test_too_few_ticks_are_refused():
    r = read_ruler(with_ruler(dark(), 50.0, n=4))
    assert r.pixel_size_mm is None and r.source is None


def test_irregular_gaps_are_refused():
    jitter = np.array([0, 9, -8, 10, -9, 8, -10, 9, -8, 10, 0, 0], float)
    r = read_ruler(with_ruler(dark(), 35.0, n=12, jitter=jitter))
    assert r.pixel_size_mm is None


@pytest.mark.parametrize("image", [make_hc(1).image, make_nt(2).image, make_blank(3).image, dark(seed=5)])
def test_images_without_a_ruler_are_refused(image):
    r = read_ruler(image)
    assert r.pixel_size_mm is None and r.reason


def test_overlay_marks_the_ticks():
    img = with_ruler(dark(), 30.0, n=14)
    out = draw_ruler(img, read_ruler(img))
    assert out.shape == (*img.shape, 3) and (out[..., 2].astype(int) - out[..., 0]).max() > 100


def test_precedence_user_then_dicom_then_ruler_then_none():
    img = with_ruler(dark(), 25.0, n=17)
    assert resolve_pixel_size(0.3, 0.2, img).source == "user"
    assert resolve_pixel_size(None, 0.2, img).source == "dicom"
    cal = resolve_pixel_size(None, None, img)
    assert cal.source == "ruler" and cal.pixel_size_mm == pytest.approx(0.2, rel=0.005)
    assert cal.as_dict()["ruler"]["ticks"] and "on-screen ruler" in cal.detail
    none = resolve_pixel_size(None, None, dark())
    assert none.pixel_size_mm is None and none.source is None and none.as_dict()["pixel_size_source"] is None


def test_calibrate_command_prints_one_json_line_per_image(tmp_path, capsys):
    good = tmp_path / "ruler.png"
    cv2.imwrite(str(good), with_ruler(dark(), 32.5, n=13, side="left"))
    cv2.imwrite(str(tmp_path / "plain.png"), dark())
    (tmp_path / "bad.png").write_bytes(b"not an image")
    rc = main(["calibrate", str(good), str(tmp_path / "plain.png"), str(tmp_path / "bad.png"),
               "--overlay", str(tmp_path / "ov")])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 2 and len(out) == 3
    assert out[0]["pixel_size_mm"] == pytest.approx(5 / 32.5, rel=0.005) and out[0]["source"] == "ruler"
    assert (tmp_path / "ov" / "ruler-ruler.png").exists()
    assert out[1]["pixel_size_mm"] is None and out[1]["reason"]
    assert "error" in out[2] and out[2]["pixel_size_mm"] is None
    assert main(["calibrate", str(good), "--interval-mm", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["pixel_size_mm"] == pytest.approx(10 / 32.5, rel=0.005)


def with_bottom_ruler(image, spacing, n, heights=(10,), x0=60.0, value=230):
    """A horizontal ruler along the bottom edge: vertical ticks ``spacing`` px apart, ``heights`` cycling."""
    img = image.copy()
    h = img.shape[0]
    for i in range(n):
        x = x0 + i * spacing
        c, f = int(np.floor(x)), x - np.floor(x)
        hh = heights[i % len(heights)]
        img[h - hh:, c] = np.maximum(img[h - hh:, c], int(value * (1 - f)))
        img[h - hh:, c + 1] = np.maximum(img[h - hh:, c + 1], int(value * f))
    return img


def test_bottom_ruler_plain_ticks_are_1_cm_and_alternating_ticks_5_mm():
    plain = read_ruler(with_bottom_ruler(dark(), 52.3, 11))
    assert plain.side == "bottom" and plain.pixel_size_mm == pytest.approx(10 / 52.3, rel=0.005), plain.reason
    alt = read_ruler(with_bottom_ruler(dark(), 26.2, 21, heights=(12, 6)))
    assert alt.pattern == "alternating" and alt.pixel_size_mm == pytest.approx(5 / 26.2, rel=0.005), alt.reason
    assert all(y > 400 for _, y in alt.ticks)


def test_evaluate_ruler_reports_coverage_and_agreement_with_reference(tmp_path):
    from fetal_detect.evaluate.ruler import evaluate

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), with_ruler(dark(), 30.0, n=14))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), dark(seed=2))
    (tmp_path / "pixel_size.csv").write_text(f"file,pixel_size_mm\na.png,{5 / 30 * 1.02}\nb.png,0.2\n")
    m = evaluate(tmp_path, out=tmp_path / "out", progress=False)
    assert m["n_images"] == 2 and m["coverage"] == 0.5 and m["n_with_reference"] == 2
    assert m["vs_reference"]["n"] == 1 and m["vs_reference"]["share_within_5pct"] == 1.0
    assert (tmp_path / "out" / "metrics.json").exists() and (tmp_path / "out" / "per_image.csv").exists()


def test_batch_without_a_pixel_size_takes_the_ruler_and_a_given_size_wins(tiny_hc_model, tmp_path):
    import pandas as pd

    from fetal_detect.batch import run_batch

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "ruler.png"), with_ruler(dark(), 30.0, n=14))
    cv2.imwrite(str(src / "plain.png"), dark(seed=4))
    run_batch(src, tmp_path / "a.csv", task="hc", workers=0, weights=[str(tiny_hc_model)], progress=False)
    df = pd.read_csv(tmp_path / "a.csv").sort_values("path")
    assert df["pixel_size_source"].fillna("none").tolist() == ["none", "ruler"]
    assert df["pixel_size_mm"].iloc[1] == pytest.approx(5 / 30.0, rel=0.005)
    run_batch(src, tmp_path / "b.csv", task="hc", workers=0, weights=[str(tiny_hc_model)], pixel_size_mm=0.3,
              progress=False)
    df = pd.read_csv(tmp_path / "b.csv")
    assert set(df["pixel_size_source"]) == {"user"} and set(df["pixel_size_mm"]) == {0.3}


def test_api_answers_in_mm_from_the_ruler_and_returns_its_ticks():
    from fastapi.testclient import TestClient

    from fetal_detect.serve.app import create_app
    from fetal_detect.serve.testing import OracleAnalyzer

    head = make_hc(11, pixel_size_mm=5 / 30.0, size=(400, 480))
    image, mask = np.zeros((480, 640), np.uint8), np.zeros((480, 640), np.uint8)
    image[:, 120:520], mask[:, 120:520] = head.image, head.mask
    image = with_ruler(image, 30.0, n=15)
    app = create_app(workers=1, queue=2, analyzer_factory=lambda: OracleAnalyzer([(image, mask)]))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for _ in range(1200):  # the models load in the background; /ready answers 200 once they have
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.1)
        rep = client.post("/api/v1/analyze", files={"file": ("s.png", cv2.imencode(".png", image)[1].tobytes())},
                          data={"task": "hc"}).json()
    assert rep["pixel_size_source"] == "ruler" and rep["pixel_size_mm"] == pytest.approx(5 / 30.0, rel=0.005)
    assert len(rep["overlay"]["ruler_ticks"]) == 15
    assert rep["measurements"]["hc_mm"] == pytest.approx(head.truth["hc_mm"], rel=0.02)


def test_huge_images_are_refused_in_bounded_time():
    r = read_ruler(np.zeros((2100, 300), np.uint8))
    assert r.pixel_size_mm is None and "larger than" in r.reason


def test_small_resized_exports_are_not_calibrated_from_their_ruler():
    """A 256 px Roboflow-style export keeps tick-like marks whose interval is unknown: refused, not guessed."""
    big = np.full((640, 640), 60, np.uint8)
    for y in range(40, 620, 40):
        big[y - 1:y + 2, 10:22] = 255
    assert read_ruler(big).pixel_size_mm is not None
    small = cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA)
    r = read_ruler(small)
    assert r.pixel_size_mm is None and "smaller than a scanner screenshot" in r.reason
