"""nt-seg evaluation: mask mAP per source plus band Dice / IoU against the reference polygons."""
import json

import numpy as np

from fetal_detect.cli import main
from fetal_detect.evaluate.nt_seg import polygon_mask


def test_polygon_mask_fills_the_normalised_polygon_at_image_size():
    m = polygon_mask([("NT", np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]))], (40, 80))
    assert m.shape == (40, 80) and m[20, 40] and not m[2, 2]
    assert abs(m.sum() - 20 * 40) <= 2 * (20 + 40) + 1  # pixel-centre rounding along the border


def test_evaluate_nt_seg_writes_map_dice_and_per_image_rows(tiny_hc_model, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--task", "nt-seg", "--data", "phantom-nt-seg", "--weights", str(tiny_hc_model),
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"map50", "map50_95", "dice", "iou"} <= set(m)
    assert 0 <= m["dice"] <= 1 and m["band"]["all"]["n_images"] == m["n_images"] > 0
    assert (out / "per_image.csv").read_text().count("\n") == m["n_images"] + 1
