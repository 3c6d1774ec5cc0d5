"""One predictor interface over the model back-ends.

``load_predictor(task, weights)`` returns an object with ``predict(image) -> Prediction``; the
measuring pipeline, evaluation, the service and the batch runner only ever see :class:`Prediction`.
Back-ends: ``.pt`` -> Ultralytics/torch (imported lazily); ``.onnx`` -> onnxruntime (see
``fetal_detect.runtime_onnx``, torch-free). Each weights file may have a JSON sidecar
(``W.json``) with task, class names, imgsz and the HC calibration.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.tasks import Task, get_task


@dataclass
class Instance:
    """One detected object: class name, score, box ``(x1, y1, x2, y2)`` in image px, optional full-res mask."""

    name: str
    confidence: float
    box_xyxy: tuple[float, float, float, float]
    mask: np.ndarray | None = None  # bool/uint8 H x W at the input image size

    def mask_at(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The mask as uint8 at ``shape[:2]`` (image px; nearest-neighbour when it must be resized)."""
        if self.mask is None:
            return None
        m = self.mask.astype(np.uint8)
        if m.shape != tuple(shape[:2]):
            import cv2

            m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return m

    def as_dict(self) -> dict:
        return {"name": self.name, "confidence": round(float(self.confidence), 4),
                "box_xyxy": [round(float(v), 1) for v in self.box_xyxy]}


@dataclass
class Prediction:
    """What a model says about one image: instances (detect/segment) or class probabilities (classify)."""

    instances: list[Instance] = field(default_factory=list)
    probs: dict[str, float] = field(default_factory=dict)
    model_ms: float = 0.0

    def best(self, name: str | None = None) -> Instance | None:
        cands = [i for i in self.instances if name is None or i.name == name]
        return max(cands, key=lambda i: i.confidence) if cands else None

    @property
    def top_class(self) -> tuple[str, float] | None:
        return max(self.probs.items(), key=lambda kv: kv[1]) if self.probs else None


def read_sidecar(weights: Path) -> dict:
    """The JSON written next to trained weights (``best.json`` beside ``best.pt``), or {}."""
    p = Path(weights).with_suffix(".json")
    return json.loads(p.read_text()) if p.exists() else {}


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Grey or BGR(A) uint8 -> 3-channel BGR, the layout the models were trained on."""
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class TorchPredictor:
    """Ultralytics YOLO on torch (CPU or CUDA)."""

    backend = "torch"

    def __init__(self, task: Task, weights: Path, conf: float = 0.25, imgsz: int | None = None):
        from fetal_detect import settings

        settings.configure_ultralytics_offline()
        from ultralytics import YOLO

        settings.disable_ultralytics_network()
        self.task, self.weights, self.conf = task, Path(weights), conf
        self.meta = read_sidecar(self.weights)
        self.imgsz = int(imgsz or self.meta.get("imgsz") or task.imgsz)
        from fetal_detect.preprocess import steps_for

        self.preprocess = steps_for(task, self.meta)  # the steps the model was trained with
        try:
            self.model = YOLO(str(self.weights), task=task.kind)
        except Exception as e:  # a corrupt or foreign checkpoint
            raise FetalDetectError(f"{self.weights}: cannot load model ({type(e).__name__}: {e})") from None
        self.names = [self.model.names[i] for i in sorted(self.model.names)]

    def predict(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        import time

        t0 = time.perf_counter()
        from fetal_detect.preprocess import apply

        results = self.model.predict([to_bgr(apply(im, self.preprocess)) for im in images], imgsz=self.imgsz, conf=self.conf,
                                     retina_masks=True, verbose=False, device=self._device())
        ms = (time.perf_counter() - t0) * 1000 / max(len(images), 1)
        return [self._convert(r, ms) for r in results]

    def _device(self) -> str:
        import torch

        return "0" if torch.cuda.is_available() else "cpu"

    def _convert(self, r, ms: float) -> Prediction:
        if r.probs is not None:
            p = r.probs.data.cpu().numpy()
            return Prediction(probs={self.names[i]: float(v) for i, v in enumerate(p)}, model_ms=ms)
        out = []
        if r.boxes is not None and len(r.boxes):
            xyxy = r.boxes.xyxy.cpu().numpy()
            conf = r.boxes.conf.cpu().numpy()
            cls = r.boxes.cls.cpu().numpy().astype(int)
            masks = r.masks.data.cpu().numpy() if r.masks is not None else None
            for i in range(len(xyxy)):
                out.append(Instance(self.names[cls[i]], float(conf[i]), tuple(map(float, xyxy[i])),
                                    None if masks is None else masks[i] > 0.5))
        return Prediction(instances=out, model_ms=ms)


def resolve_weights(task: Task, weights: str | Path | None) -> Path:
    """``weights`` if given, else the shipped ``weights/<task>.pt`` (or ``.onnx``, first when torch is not
    installed); a clear error if absent."""
    if weights:
        p = Path(weights)
        if not p.exists():
            raise FetalDetectError(f"{p}: weights file not found")
        return p
    cands = (task.weights, task.weights.with_suffix(".onnx"))
    if importlib.util.find_spec("torch") is None:  # a torch-free deployment runs the ONNX export
        cands = cands[::-1]
    for cand in cands:
        if cand.exists():
            return cand
    raise FetalDetectError(f"no shipped model for {task.name} ({task.weights} is missing); "
                           f"train one with `python train.py --task {task.name}` or pass --weights")


def optional_predictor(task: str, weights: str | Path | None = None, conf: float = 0.25):
    """``load_predictor`` for a model a pipeline can do without: None when no weights were named and
    none are shipped (``resolve_weights``: ``.pt`` or ``.onnx``) or the shipped ones do not load; named
    weights that fail still raise."""
    try:
        return load_predictor(task, weights, conf=conf)
    except FetalDetectError:
        if weights:
            raise
        return None


def load_predictor(task: str | Task, weights: str | Path | None = None, conf: float = 0.25):
    """A predictor for ``task``: torch for ``.pt``, onnxruntime for ``.onnx``."""
    t = get_task(task) if isinstance(task, str) else task
    w = resolve_weights(t, weights)
    if w.suffix == ".onnx":
        from fetal_detect.runtime_onnx import OnnxPredictor

        return OnnxPredictor(t, w, conf=conf)
    if w.suffix == ".xml" or w.is_dir():
        from fetal_detect.runtime_openvino import OpenVinoPredictor

        return OpenVinoPredictor(t, w, conf=conf)
    if w.suffix != ".pt":
        raise FetalDetectError(f"{w}: unsupported model format '{w.suffix}' (use .pt, .onnx or an OpenVINO .xml)")
    return TorchPredictor(t, w, conf=conf)
