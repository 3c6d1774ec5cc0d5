"""User errors on the command line: one line on stderr, exit 2, no traceback, nothing overwritten."""
import subprocess
import sys

import pytest

from fetal_detect.cli import main


@pytest.fixture
def corrupt_png(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return p


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("fetal-detect: error:") and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv_tail,needle", [
    (["--pixel-size", "0"], "pixel-size"),
    (["--pixel-size", "-1"], "pixel-size"),
    (["--pixel-size", "abc"], "pixel-size"),
])
def test_bad_pixel_size_is_rejected(tiny_hc_model, corrupt_png, capsys, argv_tail, needle):
    from fetal_detect.data.phantom import make_hc
    from fetal_detect.report import write_image

    img = write_image(corrupt_png.parent / "ok.png", make_hc(1).image)
    err = _one_line_error(capsys, main(["measure", "hc", str(img), "--weights", str(tiny_hc_model), *argv_tail]))
    assert needle in err


def test_corrupt_missing_and_non_image_files_are_named_in_the_error(tiny_hc_model, corrupt_png, tmp_path, capsys):
    assert "broken.png: corrupt" in _one_line_error(capsys, main(["measure", "hc", str(corrupt_png), "--weights", str(tiny_hc_model)]))
    assert "not found" in _one_line_error(capsys, main(["measure", "hc", str(tmp_path / "x.png"), "--weights", str(tiny_hc_model)]))
    txt = tmp_path / "notes.png"
    txt.write_text("hello")
    assert "not a supported image" in _one_line_error(capsys, main(["measure", "hc", str(txt), "--weights", str(tiny_hc_model)]))


def test_missing_weights_and_wrong_layouts_are_user_errors(tmp_path, capsys):
    from fetal_detect.data.phantom import make_hc
    from fetal_detect.report import write_image

    img = write_image(tmp_path / "ok.png", make_hc(1).image)
    assert "weights file not found" in _one_line_error(capsys, main(["measure", "hc", str(img), "--weights", str(tmp_path / "none.pt")]))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("x")
    err = _one_line_error(capsys, main(["evaluate", "--task", "hc-seg", "--data", str(tmp_path / "junk"), "--weights", str(tmp_path)]))
    assert "junk" in err
    assert "neither a dataset" in _one_line_error(capsys, main(["train", "--task", "hc-seg", "--data", "nope"]))
    assert "--epochs" in _one_line_error(capsys, main(["train", "--task", "hc-seg", "--data", "phantom-hc", "--epochs", "0"]))


def test_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "fetal_detect", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("train", "evaluate", "measure", "data", "demo"):
        assert cmd in out.stdout
    for script in ("train.py", "evaluate.py", "export.py"):
        r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                           cwd=__import__("pathlib").Path(__file__).parents[1])
        assert r.returncode == 0 and "usage" in r.stdout
