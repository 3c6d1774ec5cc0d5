"""Export a trained model (ONNX, TensorRT, OpenVINO, TorchScript), quantise ONNX to INT8, check parity.

``export(task, fmt)`` wraps Ultralytics export with the task's dataset (``data=`` is always passed, so
nothing reaches for COCO) and writes ``runs/export/<task>/<task>[-int8|-fp16].<ext>`` plus a JSON
sidecar (task, classes, imgsz, preprocessing, pixel-size handling, source weights hash, HC
calibration, quantisation, parity metrics) that :class:`fetal_detect.runtime.onnx_predictor.OnnxPredictor` reads.

INT8 ONNX: Ultralytics' ONNX export has no INT8, so the FP32 graph is quantised with
``onnxruntime.quantization.quantize_static`` (QDQ, per-channel weights) calibrated on real images of
the task's *training* split (the validation split stays clean for the parity check). The head's last convs, mask
protos and box/mask decode tail stay in float (see :data:`EXCLUDE`).

``verify=True`` scores the exported model and the PyTorch model on the validation split: Dice and
HC MAE through the real HC pipeline for ``hc-seg``, mAP50 for detection/segmentation, top-1 accuracy
for classification. An INT8 (or any) export that loses more than :data:`TOLERANCE` fails.
"""
from fetal_detect.export.core import (ENGINE_HINT, FORMATS, SUFFIX, check_request, ensure_export, export,
                                     export_path, sidecar)
from fetal_detect.export.int8 import DEFAULT_EXCLUDE, EXCLUDE, calibration_images, head_nodes, quantize_onnx
from fetal_detect.export.parity import TOLERANCE, exported_predictor, parity

__all__ = ["DEFAULT_EXCLUDE", "ENGINE_HINT", "EXCLUDE", "FORMATS", "SUFFIX", "TOLERANCE", "calibration_images",
           "check_request", "ensure_export", "export", "export_path", "exported_predictor", "head_nodes", "parity",
           "quantize_onnx", "sidecar"]
