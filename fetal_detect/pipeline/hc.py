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

    def __init__(self, weights: str | Path | None = None, predictor=None, tta: bool | None = None):
        self.predictor = predictor or load_predictor(self.task, weights, conf=0.1)  # a skull is always expected
        meta = getattr(self.predictor, "meta", None) or {}
        cal = meta.get("calibration")
        self.calibration = HCCalibration(**cal) if cal else HCCalibration()
        # mirror test-time augmentation: a second model pass on the left-right mirrored image (sidecar "tta")
        self.tta = bool(meta.get("tta", False)) if tta is None else bool(tta)

    @property
    def model_info(self) -> dict:
        return {"task": self.task, "weights": str(self.predictor.weights), "backend": self.predictor.backend,
                "version": __version__}

    def from_prediction(self, pred: Prediction, pixel_size_mm: float | None, shape: tuple[int, int],
                        image: np.ndarray | None = None, mirrored: Prediction | None = None) -> dict:
        """Measure from the model's output. ``image`` (the input) adds the scan-sector border to the cuts
        left out of the ellipse fit and the rim check; ``mirrored`` is the prediction on the left-right
        mirrored image (test-time augmentation): its mask, mirrored back, is fitted too and averaged."""
        inst = pred.best()
        if inst is None or inst.mask is None or not inst.mask.any():
            raise FetalDetectError("no skull found in the image", status=422)
        mask = inst.mask_at(shape)
        other = mirrored.best() if mirrored is not None else None
        more = [other.mask_at(shape)[:, ::-1]] if other is not None and other.mask is not None and other.mask.any() else []
        out = measure_hc(mask, pixel_size_mm, self.calibration, model_confidence=inst.confidence,
                         image_gray=image, more_masks=more)
        out["tta"] = "mirror" if more else "none"
        out["mask"] = mask
        return out

    def __call__(self, image: np.ndarray, pixel_size_mm: float | None) -> dict:
        t0 = time.perf_counter()
        pred = self.predictor.predict(image)
        mirrored = self.predictor.predict(np.ascontiguousarray(image[:, ::-1])) if self.tta else None
        out = self.from_prediction(pred, pixel_size_mm, image.shape[:2], image, mirrored)
        out["model_ms"] = round(pred.model_ms + (mirrored.model_ms if mirrored is not None else 0.0), 1)
        out["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out


def calibrate_on_training_split(weights: Path, prepared) -> HCCalibration:
    """Fit the HC bias line of a freshly trained ``.pt`` on the *training* split of the dataset it was trained on."""
    from fetal_detect.measure.hc_scoring import calibrate, split_items
    from fetal_detect.runtime import TorchPredictor
    from fetal_detect.tasks import get_task

    measurer = HCMeasurer(predictor=TorchPredictor(get_task("hc-seg"), weights))
    return calibrate(split_items(prepared, "train"), measurer, source=f"{prepared.manifest['dataset']} train split")
