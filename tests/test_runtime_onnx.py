"""The torch-free ONNX runtime reproduces Ultralytics pre/post-processing and imports no torch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fetal_detect.data.phantom import make_hc
from fetal_detect.measure.geometry import dice
from fetal_detect.runtime.onnx_predictor import letterbox, letterbox_shape, masks_native, nms


@pytest.fixture(scope="module")
def hc_onnx(tiny_hc_model, runs_dir):
    from fetal_detect.export import ensure_export

    return ensure_export("hc-seg", "onnx", tiny_hc_model, runs_dir / "export-tests", data="phantom-hc")


def test_letterbox_matches_ultralytics():
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    for h, w, rect in ((540, 800, True), (540, 800, False), (333, 127, True), (128, 128, True)):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        ours, _ = letterbox(img, letterbox_shape((h, w), 320, rect))
        theirs = LetterBox(320, auto=rect, stride=32)(image=img)
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


def test_classify_preprocess_close_to_ultralytics():
    import cv2
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    from fetal_detect.runtime.onnx_predictor import preprocess_classify

    im = cv2.cvtColor(make_hc(3).image, cv2.COLOR_GRAY2BGR)
    ours = preprocess_classify([im], 160)[0]
    theirs = classify_transforms(160)(Image.fromarray(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))).numpy()
    assert ours.shape == theirs.shape and np.abs(ours - theirs).mean() < 0.02  # PIL antialias vs cv2 area


def test_nms_matches_ultralytics():
    import torch
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(1)
    nc, a = 3, 400
    xy = rng.uniform(20, 300, (2, a))
    wh = rng.uniform(10, 80, (2, a))
    scores = rng.uniform(0, 1, (nc, a)) ** 3
    extra = rng.normal(size=(32, a))
    raw = np.concatenate([xy, wh, scores, extra]).astype(np.float32)
    ours = nms(raw, nc, conf=0.25, iou=0.7)
    theirs = non_max_suppression(torch.from_numpy(raw[None]), 0.25, 0.7, nc=nc)[0].numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_masks_match_ultralytics():
    import torch
    from ultralytics.utils.ops import process_mask_native

    rng = np.random.default_rng(2)
    protos = rng.normal(size=(32, 80, 56)).astype(np.float32)  # a 320x224 input's protos
    coeffs = rng.normal(size=(3, 32)).astype(np.float32)
    boxes = np.array([[10, 20, 500, 400], [100, 50, 700, 530], [0, 0, 800, 540]], np.float32)
    ours = masks_native(protos, coeffs, boxes, (540, 800))
    theirs = process_mask_native(torch.from_numpy(protos), torch.from_numpy(coeffs), torch.from_numpy(boxes),
                                 (540, 800)).numpy() > 0
    for o, t in zip(ours, theirs):
        assert dice(o, t) > 0.999


def test_onnx_predictor_matches_torch_on_phantom(tiny_hc_model, hc_onnx):
    from fetal_detect.runtime import TorchPredictor, load_predictor

    onnx_pred = load_predictor("hc-seg", hc_onnx, conf=0.01)
    assert onnx_pred.backend == "onnx" and onnx_pred.names == ["skull"] and onnx_pred.imgsz == 128
    torch_pred = TorchPredictor(onnx_pred.task, tiny_hc_model, conf=0.01)
    for seed in (7, 8):
        image = make_hc(seed, pixel_size_mm=0.25).image
        a, b = torch_pred.predict(image), onnx_pred.predict(image)
        assert len(a.instances) == len(b.instances)
        for x, y in zip(a.instances[:5], b.instances[:5]):
            assert x.name == y.name and abs(x.confidence - y.confidence) < 1e-3
            assert np.abs(np.subtract(x.box_xyxy, y.box_xyxy)).max() <= 1.0
            assert y.mask.shape == image.shape[:2] and dice(x.mask, y.mask) > 0.98


def test_runtime_imports_no_torch(hc_onnx, tmp_path):
    script = f"""
import sys, json
from fetal_detect.data.phantom import make_hc
from fetal_detect.errors import FetalDetectError
from fetal_detect.pipeline.analyze import Analyzer
from fetal_detect.pipeline.hc import HCMeasurer
from fetal_detect.runtime import load_predictor
image = make_hc(3, pixel_size_mm=0.2).image
pred = load_predictor("hc-seg", {str(hc_onnx)!r}, conf=0.01).predict(image)
measurer = HCMeasurer({str(hc_onnx)!r})
try:
    status = Analyzer({{"hc-seg": {str(hc_onnx)!r}}}).analyze(image, 0.2, "hc").status
except FetalDetectError as e:  # a 1-epoch model may find no skull: still a clean answer
    status = e.status
print(json.dumps({{"backend": measurer.predictor.backend, "status": status, "n": len(pred.instances),
                  "torch": "torch" in sys.modules, "ultralytics": "ultralytics" in sys.modules}}))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == "onnx" and out["status"] in ("ok", "no_finding")  # a 1-epoch model may find no skull
    assert not out["torch"] and not out["ultralytics"]
