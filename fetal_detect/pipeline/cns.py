"""CNS pipeline (trans-ventricular plane): structure detection -> per-structure boxes and sizes.

Reports, per structure class of the model (Brain, CSP, LV, CHOROID_PLEXUS, MIDLINE_FALX), the most
confident box with its width/height in px (and mm when ``pixel_size_mm`` is known), and a plane check:
a trans-ventricular plane should show the CSP and the lateral ventricle (``required``).
Box sizes are detections, not calipers: they are not a validated ventricular (atrial) width.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fetal_detect import __version__
from fetal_detect.runtime import Prediction, load_predictor

REQUIRED = ("CSP", "LV")  # what makes a trans-ventricular plane usable for CNS biometry


class CNSMeasurer:
    """cns-det model once loaded; ``__call__(image, pixel_size_mm) -> dict`` per image."""

    task = "cns-det"

    def __init__(self, weights: str | Path | None = None, predictor=None, conf: float = 0.25):
        self.predictor = predictor or load_predictor(self.task, weights, conf=conf)

    @property
    def model_info(self) -> dict:
        return {"task": self.task, "weights": str(self.predictor.weights), "backend": self.predictor.backend,
                "version": __version__}

    def from_prediction(self, pred: Prediction, pixel_size_mm: float | None) -> dict:
        structures = {}
        for inst in sorted(pred.instances, key=lambda i: -i.confidence):
            if inst.name in structures:
                continue
            x1, y1, x2, y2 = inst.box_xyxy
            s = {**inst.as_dict(), "width_px": round(x2 - x1, 1), "height_px": round(y2 - y1, 1)}
            if pixel_size_mm:
                s.update(width_mm=round((x2 - x1) * pixel_size_mm, 2), height_mm=round((y2 - y1) * pixel_size_mm, 2))
            structures[inst.name] = s
        missing = [n for n in REQUIRED if n not in structures]
        conf = [structures[n]["confidence"] for n in REQUIRED if n in structures]
        return {"structures": structures, "n_detections": len(pred.instances),
                "plane_check": {"required": list(REQUIRED), "missing": missing, "ok": not missing},
                "confidence": round(float(np.mean(conf)), 4) if conf else 0.0,
                "detections": [i.as_dict() for i in pred.instances], "pixel_size_mm": pixel_size_mm}

    def __call__(self, image: np.ndarray, pixel_size_mm: float | None) -> dict:
        t0 = time.perf_counter()
        pred = self.predictor.predict(image)
        out = self.from_prediction(pred, pixel_size_mm)
        out["model_ms"] = round(pred.model_ms, 1)
        out["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out
