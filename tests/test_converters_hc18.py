"""The HC18 converter: filled masks and official ellipse outlines give the same skull; problems are listed."""
import shutil

import cv2
import numpy as np
import pytest

from fetal_detect.data.converters.hc18 import iter_hc18, read_hc18
from fetal_detect.data.phantom import write_hc18_layout
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.geometry import dice


def _official_layout(src, dst):
    """HC18 as published: images and NNN_HC_Annotation.png outlines side by side, CSV named per set."""
    dst.mkdir()
    for img in sorted((src / "images").glob("*.png")):
        shutil.copy(img, dst / img.name)
        mask = cv2.imread(str(src / "masks" / f"{img.stem}_Mask.png"), cv2.IMREAD_GRAYSCALE)
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outline = np.zeros_like(mask)
        cv2.drawContours(outline, contours, -1, 255, 2)
        cv2.imwrite(str(dst / f"{img.stem}_Annotation.png"), outline)
    shutil.copy(src / "pixel_size_and_HC.csv", dst / "training_set_pixel_size_and_HC.csv")


def test_outline_and_filled_layouts_give_the_same_skull(tmp_path):
    write_hc18_layout(tmp_path / "filled", 3, seed=11)
    _official_layout(tmp_path / "filled", tmp_path / "official")
    filled, _ = iter_hc18(tmp_path / "filled")
    official, problems = iter_hc18(tmp_path / "official")
    assert not problems and len(official) == 3
    for a, b in zip(filled, official):
        assert b.mask_path.name.endswith("_Annotation.png")
        assert dice(a.load_mask(), b.load_mask()) > 0.99
        assert a.pixel_size_mm == b.pixel_size_mm and a.hc_mm == b.hc_mm


def test_records_carry_polygon_patient_and_pixel_size(tmp_path):
    write_hc18_layout(tmp_path, 2, seed=1)
    recs = list(read_hc18(None, tmp_path, "segment"))
    assert [r.patient_id for r in recs] == ["001", "002"]
    cls, poly = recs[0].polygons[0]
    assert cls == "skull" and poly.shape[1] == 2 and len(poly) > 20 and 0 <= poly.min() and poly.max() <= 1
    assert recs[0].meta["pixel_size_mm"] > 0 and recs[0].meta["hc_mm"] > 0


def test_missing_rows_bad_pixel_sizes_and_missing_masks_are_listed_not_fatal(tmp_path):
    write_hc18_layout(tmp_path, 4, seed=2)
    csv = tmp_path / "pixel_size_and_HC.csv"
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + ",0,100"  # pixel size 0
    del lines[3]  # 003 has no row
    csv.write_text("\n".join(lines) + "\n")
    (tmp_path / "masks" / "004_HC_Mask.png").unlink()
    items, problems = iter_hc18(tmp_path)
    assert [i.name for i in items] == ["001_HC"]
    errors = {p["file"]: p["error"] for p in problems}
    assert "pixel size" in errors["002_HC.png"] and "no row" in errors["003_HC.png"] and "mask" in errors["004_HC.png"]


def test_wrong_layout_is_a_one_line_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FetalDetectError, match="HC18 layout"):
        iter_hc18(tmp_path)
    with pytest.raises(FetalDetectError, match="no such folder"):
        iter_hc18(tmp_path / "nope")
