"""INT8 ONNX: quantise the FP32 graph with onnxruntime (QDQ, per-channel), calibrated on the training split."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.tasks import Task

log = logging.getLogger(__name__)

# Quantisation exclusion levels for the YOLO head: "decode" keeps the DFL/box decode, class sigmoid and
# concat tail in float; "head" also the last 1x1 conv of every branch and the mask protos.
EXCLUDE = ("none", "decode", "head")
# decode: with the shipped hc-seg it agreed better with FP32 than "head" (HC MAE +0.012 vs +0.028 mm, Dice
# -0.0005 vs -0.0007 on the 120 HC18 val images) and its model ran ~12 % faster: docs/export.md
DEFAULT_EXCLUDE = "decode"


def calibration_images(prepared, n: int, split: str = "train") -> list[Path]:
    """``n`` images spread evenly over one split of a prepared dataset (deterministic)."""
    folder = prepared.root / split if prepared.manifest["kind"] == "classify" else prepared.root / "images" / split
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    if not files:
        raise FetalDetectError(f"dataset '{prepared.manifest['dataset']}' has no {split} images to calibrate INT8 on")
    idx = np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(idx))]


def head_nodes(model, level: str) -> list[str]:
    """Names of the YOLO head nodes kept in float for an exclusion ``level`` (see :data:`EXCLUDE`)."""
    if level == "none":
        return []
    heads = [int(m.group(1)) for n in model.graph.node if (m := re.match(r"/model\.(\d+)/", n.name))]
    if not heads:
        return []
    prefix = f"/model.{max(heads)}/"
    branch = re.compile(r"/(cv2|cv3|cv4)\.\d+/|/proto/")
    last = re.compile(r"/(cv2|cv3|cv4)\.\d+/(cv\d\.\d+\.2|\d+)/")  # the final 1x1 conv of a branch
    out = []
    for n in model.graph.node:
        if not n.name.startswith(prefix):
            continue
        if not branch.search(n.name) or (level == "head" and (last.search(n.name) or "/proto/" in n.name)):
            out.append(n.name)
    return out


@contextlib.contextmanager
def _in_temp_dir():
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="fetal-detect-quant-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(cwd)


def quantize_onnx(fp32: Path, out: Path, prepared, t: Task, imgsz: int, n: int = 64, exclude: str = DEFAULT_EXCLUDE,
                  per_channel: bool = True, method: str = "MinMax") -> dict:
    """Static INT8 (QDQ) quantisation of an ONNX model, calibrated on ``n`` training images of the task's data."""
    import cv2
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from fetal_detect.runtime.onnx_predictor import preprocess_classify, preprocess_detect

    fp32, out = Path(fp32).resolve(), Path(out).resolve()
    files = calibration_images(prepared, n)
    inp = onnx.load(str(fp32), load_external_data=False)
    input_name = inp.graph.input[0].name
    dynamic = not all(d.dim_value for d in inp.graph.input[0].type.tensor_type.shape.dim[2:])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.files = iter(files)

        def get_next(self):
            f = next(self.files, None)
            if f is None:
                return None
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise FetalDetectError(f"{f}: cannot read calibration image")
            blob = (preprocess_classify([img], imgsz) if t.kind == "classify"
                    else preprocess_detect([img], imgsz, rect=dynamic)[0])
            return {input_name: blob}

    nodes = head_nodes(inp, exclude)
    pre = out.with_name(out.stem + ".pre.onnx")
    try:  # shape inference + graph clean-up, recommended before static quantisation
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with _in_temp_dir():
            try:
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
            except Exception:  # noqa: BLE001  dynamic axes defeat symbolic inference: ONNX shape inference only
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        source = pre
    except Exception as e:  # noqa: BLE001  an optional step: quantise the raw graph instead
        log.warning("quant_pre_process skipped (%s)", e)
        source = fp32
    t0 = time.perf_counter()
    with _in_temp_dir():  # onnxruntime's quantiser drops external-data files into the working folder
        quantize_static(str(source.resolve()), str(out.resolve()), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=nodes,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    pre.unlink(missing_ok=True)
    return {"method": f"onnxruntime quantize_static, QDQ, uint8 activations ({method}), int8 weights"
                      + (" per channel" if per_channel else ""),
            "calibration_data": prepared.manifest["dataset"], "split": "train", "n_images": len(files),
            "excluded": exclude, "n_excluded_nodes": len(nodes), "seconds": round(time.perf_counter() - t0, 1)}
