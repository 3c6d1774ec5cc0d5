"""What every back-end shares: :class:`Prediction` / :class:`Instance` and the :class:`Predictor` base.

The base does the part all back-ends repeat: the weights' JSON sidecar (``W.json``: task, class
names, imgsz, preprocess steps, HC calibration), the input size, the task's preprocessing steps
(those the model was trained with), timing (``model_ms``) and the check that the model's kind is
the task's. A back-end implements ``_load`` (returns the model's own kind, or None) and ``_infer``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.tasks import Task


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
    features: np.ndarray | None = None  # a classifier's penultimate-layer features, when the caller tapped them

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


class Predictor:
    """Base of the back-ends: ``predict(image) -> Prediction`` and ``predict_batch(images)``.

    Subclasses set ``backend`` and implement ``_load(**options) -> kind | None`` (open ``self.weights``, set
    ``self.names``; return the kind the file says it is) and ``_infer(images) -> list[Prediction]``
    on images already preprocessed (grey or BGR uint8, any size).
    """

    backend = "?"
    pool = None  # the runtime.pool.PredictorPool sharing this predictor (its outputs per image), if any

    def __init__(self, task: Task, weights: str | Path, conf: float = 0.25, imgsz: int | None = None, **options):
        self.task, self.conf = task, conf
        self.weights = self._resolve(Path(weights))
        self.meta = read_sidecar(self.weights)
        self.names: list[str] = []
        self._imgsz_arg = imgsz
        native_kind = self._load(**options)
        self.kind = self.meta.get("kind") or native_kind or task.kind
        if self.kind != task.kind:
            raise FetalDetectError(f"{self.weights}: a '{self.kind}' model, but task {task.name} needs '{task.kind}'")
        if not getattr(self, "imgsz", None):
            self.imgsz = int(imgsz or self.meta.get("imgsz") or task.imgsz)
        from fetal_detect.preprocess import steps_for

        self.preprocess = steps_for(task, self.meta)  # the steps the model was trained with

    def _resolve(self, weights: Path) -> Path:
        """The file the weights argument names (a back-end may map a folder to its model file)."""
        if not weights.exists():
            raise FetalDetectError(f"{weights}: weights file not found")
        return weights

    def _load(self, **options) -> str | None:
        raise NotImplementedError

    def _infer(self, images: list[np.ndarray]) -> list[Prediction]:
        raise NotImplementedError

    def predict(self, image: np.ndarray) -> Prediction:
        if self.pool is not None:  # shared by an Analyzer's measurers: at most one model pass per image
            return self.pool.predict(self, image)
        return self.predict_batch([image])[0]

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        if not images:
            return []
        t0 = time.perf_counter()
        from fetal_detect.preprocess import apply

        preds = self._infer([apply(im, self.preprocess) for im in images])
        ms = (time.perf_counter() - t0) * 1000 / len(images)
        for p in preds:
            p.model_ms = ms
        return preds

    @property
    def info(self) -> dict:
        """What a result's ``models`` records about this model."""
        return {"task": self.task.name, "weights": str(self.weights), "backend": self.backend}
