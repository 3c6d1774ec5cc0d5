"""HC pipeline: skull segmentation -> robust ellipse -> HC/BPD/OFD (mm), calibrated, with GA."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.hc import HCCalibration, measure_hc
from fetal_detect.runtime import Prediction, load_predictor


class HCMeasurer:
    """Skull segmentation + ellipse biometry. Loads the model once; ``__call__`` per image."""

    task = "hc-seg"

    def __init__(self, weights: str | Path | None = None, predictor=None):
        self.predictor = predictor or load_predictor(self.task, weights, conf=0.1)  # a skull is always expected
        cal = self.predictor.meta.get("calibration") if hasattr(self.predictor, "meta") else None
        self.calibration = HCCalibration(**cal) if cal else HCCalibration()

    @property
    def model_info(self) -> dict:
        return {"task": self.task, "weights": str(self.predictor.weights), "backend": self.predictor.backend,
                "version": __version__}

    def from_prediction(self, pred: Prediction, pixel_size_mm: float | None, shape: tuple[int, int]) -> dict:
        inst = pred.best()
        if inst is None or inst.mask is None or not inst.mask.any():
            raise FetalDetectError("no skull found in the image", status=422)
        mask = inst.mask_at(shape)
        out = measure_hc(mask, pixel_size_mm, self.calibration, model_confidence=inst.confidence)
        out["mask"] = mask
        return out

    def __call__(self, image: np.ndarray, pixel_size_mm: float | None) -> dict:
        t0 = time.perf_counter()
        pred = self.predictor.predict(image)
        out = self.from_prediction(pred, pixel_size_mm, image.shape[:2])
        out["model_ms"] = round(pred.model_ms, 1)
        out["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out
