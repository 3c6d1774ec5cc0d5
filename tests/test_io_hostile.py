"""Hostile files against ``load_image`` and the CLI/batch readers: bounded memory and time, 4xx-style errors."""
import os
import subprocess
import tracemalloc

import cv2
import numpy as np
import pytest

import hostile as H
from fetal_detect.errors import FetalDetectError
from fetal_detect.io import load_image, parse_pixel_size_mm


def refused(data, **kw) -> FetalDetectError:
    with pytest.raises(FetalDetectError) as e:
        load_image(data, name="upload", **kw)
    return e.value


def with_peak_memory(fn, *args):
    """``fn(*args)`` and the peak of Python-traced memory (bytes) while it ran."""
    tracemalloc.start()
    try:
        out = fn(*args)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def grey():
    return (np.arange(64 * 64) % 200).astype(np.uint8).reshape(64, 64)


def test_deflated_dicom_bomb_is_refused_with_bounded_memory():
    bomb = H.deflated_bomb(200)  # 200 MB of zeros in a ~200 kB file
    err, peak = with_peak_memory(refused, bomb)
    assert err.status == 413 and "inflates to over" in str(err)
    assert peak < 200e6, f"inflating took {peak / 1e6:.0f} MB"


def test_allow_listed_dicom_syntaxes_still_decode(grey):
    colour = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    j2k = cv2.imencode(".jp2", grey)[1].tobytes()
    for data, frames in [(H.deflated_dicom(grey), 1), (H.encapsulated_dicom([H.jpeg(grey)] * 3, 64, 64), 3),
                         (H.encapsulated_dicom([H.jpeg(colour)], 64, 64, spp=3), 1),
                         (H.encapsulated_dicom([j2k], 64, 64, ts=H.J2K), 1)]:
        loaded = load_image(data)
        assert len(loaded.frames) == frames and loaded.image.shape == (64, 64) and loaded.pixel_size_mm == 0.2
        assert abs(int(loaded.image.mean()) - int(grey.mean())) <= 3


def test_transfer_syntax_outside_the_allow_list_is_415(grey):
    data = H.encapsulated_dicom([H.jpeg(grey)], 64, 64, ts="1.2.840.10008.1.2.4.80")  # JPEG-LS
    assert refused(data).status == 415


def test_embedded_jpeg_bigger_than_the_dicom_header_says_is_refused_before_decoding():
    err = refused(H.encapsulated_dicom([H.jpeg_sof_only(12000, 12000)], 64, 64))
    assert err.status == 413 and "12000x12000" in str(err)
    err = refused(H.encapsulated_dicom([H.jpeg(np.zeros((256, 256), np.uint8))], 64, 64))
    assert err.status == 400 and "256x256" in str(err) and "64x64" in str(err)


def test_number_of_frames_is_checked_before_decoding(grey):
    data = H.encapsulated_dicom([H.jpeg(grey)] * 6, 64, 64)
    err = refused(data, max_frames=5)
    assert err.status == 413 and "6 frames" in str(err)


def test_png_signature_then_html_is_refused_without_any_install_attempt(monkeypatch):
    import ultralytics.utils.checks
    import ultralytics.utils.patches  # noqa: F401  (Ultralytics' patched Image.open is active)

    calls = []
    monkeypatch.setattr(ultralytics.utils.checks, "check_requirements", lambda *a, **k: calls.append(a) or False)
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    err = refused(H.PNG_THEN_HTML)
    assert err.status in (400, 415) and not calls
    assert os.environ["YOLO_AUTOINSTALL"] == "False"


def test_frame_memory_counts_bytes_not_just_pixels():
    rgba16 = np.zeros((400, 400, 4), np.uint16)  # 160,000 px but 1.28 MB decoded
    png = cv2.imencode(".png", rgba16)[1].tobytes()
    err = refused(png, max_pixels=200_000)  # 800 kB per frame allowed
    assert err.status == 413 and "per-frame limit" in str(err)
    assert load_image(png, max_pixels=400_000).image.shape == (400, 400)


@pytest.mark.parametrize("text", ["1e308", "1e200", "1_0", "\u0661.\u0662", "0.2e0", "nan", "inf", "0.001", "3", "-1"])
def test_implausible_or_non_ascii_pixel_sizes_are_refused(text):
    with pytest.raises(FetalDetectError, match="pixel_size_mm"):
        parse_pixel_size_mm(text, "pixel_size_mm")


def test_plausible_pixel_sizes_pass_and_long_values_are_not_echoed():
    from fetal_detect.io import plausible_pixel_size_mm

    assert parse_pixel_size_mm(" 0.2 ", "x") == 0.2 and parse_pixel_size_mm(".05", "x") == 0.05
    assert parse_pixel_size_mm("", "x") is None and plausible_pixel_size_mm(0.3) and not plausible_pixel_size_mm(5)
    with pytest.raises(FetalDetectError) as e:
        parse_pixel_size_mm("9" * 60_000, "x")
    assert len(str(e.value)) < 200


@pytest.fixture
def special_files(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(folder / "IM_0002")  # suffix-less: the DICOM sniffer must not open it either
    (folder / "zero.png").symlink_to("/dev/zero")
    cv2.imwrite(str(folder / "real.png"), np.zeros((8, 8), np.uint8))
    return folder


@pytest.mark.timeout(30)
def test_fifo_and_dev_zero_are_refused_not_read(special_files):
    for name in ("pipe.png", "zero.png"):
        err = refused(special_files / name)
        assert "not a regular file" in str(err)


@pytest.mark.timeout(30)
def test_batch_skips_fifos_and_devices_in_a_folder(special_files):
    from fetal_detect.batch import collect_inputs, file_sha256

    assert [os.path.basename(i.path) for i in collect_inputs(special_files)] == ["real.png"]
    assert file_sha256(special_files / "pipe.png") is None and file_sha256(special_files / "zero.png") is None


@pytest.mark.timeout(30)
def test_measure_on_a_fifo_or_dev_zero_is_a_one_line_error(special_files, capsys):
    from fetal_detect.cli import main

    for name in ("pipe.png", "zero.png"):
        assert main(["measure", "hc", str(special_files / name)]) == 2
        err = capsys.readouterr().err
        assert "not a regular file" in err and "Traceback" not in err


def test_rle_dicoms_decode_and_an_rle_bomb_is_capped(grey):
    colour = np.dstack([grey, grey // 2, grey // 3])
    for image in (grey, grey.astype(np.uint16) * 200, colour):
        loaded = load_image(H.rle_dicom(image))
        assert loaded.image.shape == (64, 64) and loaded.pixel_size_mm == 0.2
    assert np.array_equal(load_image(H.rle_dicom(grey)).image, grey)
    bomb = H.rle_dicom(grey, bomb_mb=4)  # 256 MB if the first segment were decoded without a cap
    loaded, peak = with_peak_memory(load_image, bomb)
    assert loaded.image.shape == (64, 64) and peak < 50e6


def test_pillow_bomb_limit_is_the_pixel_limit_and_a_small_call_limit_does_not_leak(grey):
    from PIL import Image

    from fetal_detect.io import MAX_PIXELS

    err = refused(cv2.imencode(".png", grey)[1].tobytes(), max_pixels=1000)
    assert err.status == 413 and "pixel limit" in str(err)
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS  # Ultralytics' own Pillow reads keep a sane limit


def test_the_pixel_limit_is_one_rule_for_rasters_dicom_headers_and_dicom_frames(grey):
    png, dcm = cv2.imencode(".png", grey)[1].tobytes(), H.deflated_dicom(grey)
    at_limit = 64 * 64  # exactly at the limit passes, one pixel under it is refused with the same words
    assert load_image(png, max_pixels=at_limit).image.shape == load_image(dcm, max_pixels=at_limit).image.shape
    for data in (png, dcm):
        err = refused(data, max_pixels=at_limit - 1)
        assert err.status == 413 and str(err) == "upload: 64x64 px is over the 4,095 pixel limit"
    err = refused(H.encapsulated_dicom([H.jpeg_sof_only(12000, 12000)], 64, 64))
    assert err.status == 413 and str(err) == "upload: frame 1 is 12000x12000 px, over the 40,000,000 pixel limit"


def test_file_hashes_agree_between_the_registry_and_the_batch_reader_and_the_cap_is_exact(tmp_path):
    import hashlib

    from fetal_detect.data.registry import file_sha256
    from fetal_detect.io import regular_file_sha256

    data = bytes(range(256)) * 8195  # a little over two 1 MiB blocks
    (tmp_path / "a.bin").write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path / "a.bin") == regular_file_sha256(tmp_path / "a.bin") == want
    assert regular_file_sha256(tmp_path / "a.bin", max_bytes=len(data)) == want
    assert regular_file_sha256(tmp_path / "a.bin", max_bytes=len(data) - 1) is None
