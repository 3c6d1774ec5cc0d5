"""CNS data: RGB class masks -> polygons and boxes (Brain from the mask), partial-label loss masking."""
import numpy as np
import pytest

from fetal_detect.data.registry import DatasetEntry, read_records
from fetal_detect.errors import FetalDetectError

COLORS = {"Brain": [255, 0, 0], "CSP": [0, 255, 0], "LV": [0, 0, 255]}


def _voc_folder(root, n=3):
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(n):
        img = np.full((120, 160), 60, np.uint8)
        mask = np.zeros((120, 160, 3), np.uint8)  # RGB
        cv2.ellipse(mask, (80, 60), (60, 45), 0, 0, 360, (255, 0, 0), -1)
        cv2.rectangle(mask, (70, 40), (80, 50), (0, 255, 0), -1)  # CSP inside Brain
        cv2.rectangle(mask, (95, 65), (115, 75), (0, 0, 255), -1)  # LV
        cv2.imwrite(str(root / "images" / f"Patient0000{k}_Plane3_1_of_1.jpg"), img)
        cv2.imwrite(str(root / "masks" / f"Patient0000{k}_Plane3_1_of_1.png"), mask[:, :, ::-1])
    return root


def _entry(root):
    return DatasetEntry(name="voc", layout="voc-mask", source={"path": str(root)}, names=list(COLORS),
                        options={"mask_colors": COLORS}, split={"patient_pattern": r"^(Patient\d+)"})


def test_voc_masks_give_one_box_per_class_including_brain(tmp_path):
    recs = read_records(_entry(_voc_folder(tmp_path / "tv")), "detect")
    assert len(recs) == 3 and recs[0].patient_id == "Patient00000"
    boxes = {b[0]: b[1:] for b in recs[0].boxes}
    assert set(boxes) == {"Brain", "CSP", "LV"}
    xc, yc, w, h = boxes["LV"]
    assert xc == pytest.approx(105 / 160, abs=0.01) and w == pytest.approx(20 / 160, abs=0.01)
    assert boxes["Brain"][2] == pytest.approx(120 / 160, abs=0.02)


def test_voc_masks_give_polygons_for_segmentation(tmp_path):
    rec = read_records(_entry(_voc_folder(tmp_path / "tv", n=1)), "segment")[0]
    assert sorted({n for n, _ in rec.polygons}) == ["Brain", "CSP", "LV"]
    assert all(p.shape[1] == 2 and (p >= 0).all() and (p <= 1).all() for _, p in rec.polygons)


def test_voc_masks_without_colours_is_a_user_error(tmp_path):
    entry = _entry(_voc_folder(tmp_path / "tv", n=1))
    entry.options = {}
    with pytest.raises(FetalDetectError, match="mask_colors"):
        read_records(entry, "detect")


def test_partial_label_loss_ignores_classes_a_source_never_labels():
    import torch
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import IterableSimpleNamespace

    from fetal_detect.engine.partial_labels import PartialLabelLoss, class_sets, source_of

    labels = [{"im_file": "/x/a__1.jpg", "cls": np.array([[0], [1]])}, {"im_file": "/x/b__2.jpg", "cls": np.array([[1], [2]])}]
    assert source_of("/x/a__1.jpg") == "a" and class_sets(labels) == {"a": {0, 1}, "b": {1, 2}}
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.args = IterableSimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    loss_fn = PartialLabelLoss(model, class_sets(labels))
    model.train()
    torch.manual_seed(0)
    img = torch.rand(1, 3, 64, 64)
    batch = {"batch_idx": torch.zeros(1), "cls": torch.zeros(1, 1), "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]),
             "im_file": ["/x/a__1.jpg"]}
    preds = model(img)
    base = loss_fn(preds, batch)[0].sum().item()
    with torch.no_grad():  # push class 2 (never labelled by source a) everywhere: no change for a
        for seq in model.model[-1].cv3:
            seq[-1].bias[2] += 5.0
    assert loss_fn(model(img), batch)[0].sum().item() == pytest.approx(base, rel=1e-5)
    batch["im_file"] = ["/x/b__2.jpg"]  # source b labels class 2: the same logits now cost more
    assert loss_fn(model(img), batch)[0].sum().item() > base
