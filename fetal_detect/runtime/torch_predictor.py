"""Ultralytics YOLO on torch (CPU or CUDA): the training back-end, imported only when a ``.pt`` is loaded."""
from __future__ import annotations

import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime.base import Instance, Prediction, Predictor, to_bgr


class TorchPredictor(Predictor):
    """A ``.pt`` checkpoint through Ultralytics ``predict(retina_masks=True)``."""

    backend = "torch"

    def _load(self, **options) -> str | None:
        YOLO = settings.import_ultralytics().YOLO
        try:
            self.model = YOLO(str(self.weights), task=self.task.kind)
        except Exception as e:  # a corrupt or foreign checkpoint
            raise FetalDetectError(f"{self.weights}: cannot load model ({type(e).__name__}: {e})") from None
        self.names = [self.model.names[i] for i in sorted(self.model.names)]
        self.device = settings.torch_device()
        return None  # Ultralytics was told the task's kind; the sidecar's kind is checked by the base

    def _infer(self, images: list[np.ndarray]) -> list[Prediction]:
        results = self.model.predict([to_bgr(im) for im in images], imgsz=self.imgsz, conf=self.conf,
                                     retina_masks=True, verbose=False, device=self.device)
        return [self._convert(r) for r in results]

    def _convert(self, r) -> Prediction:
        if r.probs is not None:
            p = r.probs.data.cpu().numpy()
            return Prediction(probs={self.names[i]: float(v) for i, v in enumerate(p)})
        out = []
        if r.boxes is not None and len(r.boxes):
            xyxy = r.boxes.xyxy.cpu().numpy()
            conf = r.boxes.conf.cpu().numpy()
            cls = r.boxes.cls.cpu().numpy().astype(int)
            masks = r.masks.data.cpu().numpy() if r.masks is not None else None
            for i in range(len(xyxy)):
                out.append(Instance(self.names[cls[i]], float(conf[i]), tuple(map(float, xyxy[i])),
                                    None if masks is None else masks[i] > 0.5))
        return Prediction(instances=out)
