"""cns-det evaluation on a YOLO folder and on a Roboflow export: mAP, AP50 per class, confusion matrix."""
import json

import pytest
import yaml

from fetal_detect.data.converters import box_xyxy_to_xywhn
from fetal_detect.data.phantom import make_cns
from fetal_detect.report import write_image

FOLDER_CLASSES = ["LV", "CSP", "Brain"]  # a source's own ids, in another order than the model's


def _write(img_dir, lbl_dir, seeds, names):
    for s in seeds:
        ph = make_cns(s, size=(160, 120))
        write_image(img_dir / f"Patient{s:05d}_Plane3_1_of_1.png", ph.image)
        h, w = ph.image.shape
        lines = [f"{names.index(n)} " + " ".join(f"{v:.5f}" for v in box_xyxy_to_xywhn(*xyxy, w, h))
                 for n, *xyxy in ph.boxes if n in names]
        lbl_dir.mkdir(parents=True, exist_ok=True)
        (lbl_dir / f"Patient{s:05d}_Plane3_1_of_1.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def cns_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cns")
    yolo = root / "yolo"
    _write(yolo / "images", yolo / "labels", range(8), FOLDER_CLASSES)
    (yolo / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    rf = root / "roboflow"
    for split, seeds in (("train", range(20, 23)), ("valid", range(23, 25))):
        _write(rf / split / "images", rf / split / "labels", seeds, ["CHOROID_PLEXUS", "CSP", "MIDLINE_FALX"])
    (rf / "data.yaml").write_text(yaml.safe_dump({"train": "../train/images", "val": "../valid/images", "nc": 3,
                                                   "names": ["CHOROID_PLEXUS", "CSP", "MIDLINE_FALX"]}))
    return yolo, rf


@pytest.fixture(scope="module")
def tiny_cns_model(no_network, cns_folders):
    from fetal_detect.engine.train import train

    return train("cns-det", data=str(cns_folders[0]), epochs=1, imgsz=64, batch=8, workers=0, name="tiny",
                 extra={"plots": False}).weights


@pytest.mark.parametrize("layout", ["yolo", "roboflow"])
def test_evaluate_writes_map_per_class_ap_and_confusion_matrix(tiny_cns_model, cns_folders, tmp_path, layout):
    from fetal_detect.cli import main

    data = cns_folders[0] if layout == "yolo" else cns_folders[1]
    out = tmp_path / "eval"
    assert main(["evaluate", "--task", "cns-det", "--data", str(data), "--weights", str(tiny_cns_model),
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["map50"] <= 1 and 0 <= m["map50_95"] <= m["map50"] + 1e-9
    if layout == "yolo":  # classes matched by name, not by id
        assert {"ap50_Brain", "ap50_CSP", "ap50_LV"} <= set(m) and m["n_images"] == 8
    else:  # classes the model does not know are reported, not silently mis-mapped; every image is scored
        assert m["n_images"] == 5 and "ap50_CSP" in m
        (source,) = m["by_source"].values()
        assert source["classes_without_model_class"] == ["CHOROID_PLEXUS", "MIDLINE_FALX"]
    assert __import__("pathlib").Path(m["confusion_matrix"]).exists()
