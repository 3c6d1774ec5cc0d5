"""ONNX -> OpenVINO IR, and INT8 through OpenVINO's own post-training quantisation (NNCF).

The IR is converted from the project's FP32 ONNX export (dynamic axes, the same graph that
onnxruntime runs) with ``openvino.Core.read_model`` + ``save_model`` (no Ultralytics round trip, so
the input shape is whatever the runtime feeds: the letterboxed stride-32 rectangle, any batch).
INT8: ``nncf.quantize`` (MIXED preset: symmetric int8 weights, asymmetric activations) calibrated on
``n`` evenly spaced images of the task's **training** split, preprocessed exactly as at run time;
the same head nodes as the ONNX INT8 recipe stay in float (``--exclude``, see
:data:`fetal_detect.export.EXCLUDE`): the box/DFL decode tail mixes px with probabilities.

Telemetry: the model is read with the runtime (not the ``ovc`` converter) and NNCF's is turned off
(``NNCF_CI``), so nothing tries to reach the network.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from fetal_detect.errors import FetalDetectError
from fetal_detect.tasks import Task


def ir_path(out_dir: Path, stem: str) -> Path:
    """``<out>/<stem>_openvino_model/<stem>.xml`` (Ultralytics' folder name; the sidecar is ``<stem>.json`` in it)."""
    return Path(out_dir) / f"{stem}_openvino_model" / f"{stem}.xml"


def to_openvino(onnx_fp32: Path, xml: Path, prepared=None, t: Task | None = None, imgsz: int = 320,
                int8: bool = False, n: int = 64, exclude: str = "decode", meta: dict | None = None) -> dict | None:
    """Write the IR of ``onnx_fp32`` to ``xml`` (FP32 weights), quantised with NNCF when ``int8``.

    Returns the quantisation record for the sidecar (None for FP32).
    """
    import openvino as ov

    xml.parent.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(str(onnx_fp32))
    quant = None
    if int8:
        model, quant = quantize_openvino(model, onnx_fp32, prepared, t, imgsz, n, exclude, meta)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return quant


def quantize_openvino(model, onnx_fp32: Path, prepared, t: Task, imgsz: int, n: int, exclude: str,
                      meta: dict | None = None):
    """NNCF post-training INT8 of an OpenVINO model on ``n`` training images, preprocessed with the steps of
    the source weights' sidecar ``meta``; returns (model, record)."""
    import cv2
    import onnx

    os.environ.setdefault("NNCF_CI", "1")  # NNCF's telemetry off (it would try to send events)
    try:
        import nncf
    except ImportError:
        raise FetalDetectError("OpenVINO INT8 needs nncf (pip install 'fetal-detect[openvino]')") from None
    nncf.set_log_level(logging.WARNING)  # its INFO lists every node it leaves alone
    from fetal_detect.export.int8 import calibration_images, head_nodes
    from fetal_detect.preprocess import apply, steps_for
    from fetal_detect.runtime.onnx_predictor import preprocess_classify, preprocess_detect

    files = calibration_images(prepared, n)
    steps = steps_for(t, meta)
    shape = model.inputs[0].get_partial_shape()
    rect = shape[2].is_dynamic or shape[3].is_dynamic

    def blob(f: Path):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise FetalDetectError(f"{f}: cannot read calibration image")
        img = apply(img, steps)
        return preprocess_classify([img], imgsz) if t.kind == "classify" else preprocess_detect([img], imgsz, rect=rect)[0]

    ignored = head_nodes(onnx.load(str(onnx_fp32), load_external_data=False), exclude)
    t0 = time.perf_counter()
    q = nncf.quantize(model, nncf.Dataset(files, blob), preset=nncf.QuantizationPreset.MIXED, subset_size=len(files),
                      ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None)
    return q, {"method": "OpenVINO NNCF post-training quantisation (MIXED preset: int8 symmetric weights, "
                         "asymmetric activations)",
               "calibration_data": prepared.manifest["dataset"], "split": "train", "n_images": len(files),
               "excluded": exclude, "n_excluded_nodes": len(ignored), "seconds": round(time.perf_counter() - t0, 1),
               "nncf": nncf.__version__}
