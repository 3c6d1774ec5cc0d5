"""YOLOv8 on OpenVINO: the ONNX runtime's pre/post-processing with an OpenVINO CPU network (torch-free).

:class:`OpenVinoPredictor` is :class:`fetal_detect.runtime.onnx_predictor.OnnxPredictor` with the network
call swapped (sidecar, imgsz, preprocessing, timing and the kind check come from the ``Predictor`` base): letterbox, NMS, mask protos and class scores are the same numpy/OpenCV code, so the
two back-ends differ only in the network. The model is the IR written by ``export --format openvino``
(``<stem>_openvino_model/<stem>.xml`` + ``.bin`` + the JSON sidecar ``<stem>.json``), with dynamic
axes. OpenVINO's CPU plugin runs a dynamic-shape model 2-3x slower than a static one on this kind of
CPU (measured: 43 vs 14 ms at 224x320), so the predictor compiles one static copy per input shape
it is fed (HC18 frames are all 224x320 at imgsz 320) and keeps the last :data:`MAX_SHAPES`.

Only openvino, OpenCV and numpy are imported here.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime.onnx_predictor import OnnxPredictor, default_threads
from fetal_detect.tasks import Task

MAX_SHAPES = 4  # compiled static shapes kept per predictor (each ~0.3 s to compile, a few MB)


def model_xml(weights: str | Path) -> Path:
    """The ``.xml`` of an OpenVINO IR given as the file or as its ``*_openvino_model`` folder."""
    p = Path(weights)
    if p.is_dir():
        xmls = sorted(p.glob("*.xml"))
        if len(xmls) != 1:
            raise FetalDetectError(f"{p}: expected one OpenVINO .xml in the folder, found {len(xmls)}")
        return xmls[0]
    if p.suffix != ".xml":
        raise FetalDetectError(f"{p}: an OpenVINO model is a .xml file (with its .bin) or its folder")
    if not p.exists():
        raise FetalDetectError(f"{p}: weights file not found")
    if not p.with_suffix(".bin").exists():
        raise FetalDetectError(f"{p}: the weights file {p.with_suffix('.bin').name} is missing beside it")
    return p


def cpu_config(threads: int | None = None) -> dict:
    """Latency-first CPU settings: one stream, ``threads`` threads, FP32 arithmetic (parity with ONNX), threads
    not pinned to cores (on a shared CPU a pinned thread waits for its busy core; ``FETAL_DETECT_OV_PIN=1``
    pins them on a dedicated machine), as onnxruntime's workers do not spin (``FETAL_DETECT_ORT_SPIN``)."""
    return {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": int(threads or default_threads()),
            "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": os.environ.get("FETAL_DETECT_OV_PIN", "0") == "1"}


class OpenVinoPredictor(OnnxPredictor):
    """YOLOv8 detect / segment / classify as OpenVINO IR (FP32 or NNCF INT8) on the CPU."""

    backend = "openvino"

    def __init__(self, task: Task, weights: str | Path, conf: float = 0.25, iou: float = 0.7,
                 imgsz: int | None = None, threads: int | None = None, max_det: int = 300, device: str = "CPU"):
        self.iou, self.max_det, self.device = iou, max_det, device
        super(OnnxPredictor, self).__init__(task, weights, conf, imgsz, threads=threads)  # the Predictor base

    def _resolve(self, weights: Path) -> Path:
        return model_xml(weights)  # the IR's .xml (the sidecar sits beside it)

    def _load(self, threads: int | None = None) -> str | None:
        try:
            import openvino as ov
        except ImportError:
            raise FetalDetectError("openvino is not installed (pip install 'fetal-detect[openvino]')") from None
        self.core, self.config = ov.Core(), cpu_config(threads)
        try:
            self.model = self.core.read_model(str(self.weights))
        except Exception as e:  # noqa: BLE001  corrupt IR, foreign XML
            raise FetalDetectError(f"{self.weights}: cannot load OpenVINO model ({type(e).__name__}: "
                                   f"{str(e).strip().splitlines()[0][:200]})") from None
        shape = self.model.inputs[0].get_partial_shape()
        self.dynamic = shape[2].is_dynamic or shape[3].is_dynamic
        fixed = None if self.dynamic else shape[2].get_length()
        self.imgsz = int(self._imgsz_arg or fixed or self.meta.get("imgsz") or self.task.imgsz)
        self.stride = int(self.meta.get("stride", 32))
        self.fixed_batch = None if shape[0].is_dynamic else shape[0].get_length()
        names = self.meta.get("names") or {}
        self.names = list(names.values()) if isinstance(names, dict) else list(names)
        if not self.names:
            raise FetalDetectError(f"{self.weights}: no class names (the JSON sidecar beside it is missing)")
        self.input_dtype = np.float32
        self._compiled: OrderedDict[tuple, object] = OrderedDict()
        return None

    def _request(self, shape: tuple[int, ...]):
        """An infer request of the model compiled for this exact input shape (cached, oldest dropped)."""
        req = self._compiled.get(shape)
        if req is None:
            model = self.model
            if self.dynamic or self.fixed_batch is None:
                model = self.model.clone()
                model.reshape({model.inputs[0].any_name: list(shape)})
            req = self.core.compile_model(model, self.device, self.config).create_infer_request()
            self._compiled[shape] = req
            while len(self._compiled) > MAX_SHAPES:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(shape)
        return req

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """The network alone: NCHW float32 in [0, 1] -> raw outputs (copied out of the request's buffers)."""
        req = self._request(tuple(blob.shape))
        req.infer({0: np.ascontiguousarray(blob, np.float32)})
        return [req.get_output_tensor(i).data.copy() for i in range(len(req.model_outputs))]
