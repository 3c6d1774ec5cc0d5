"""CNS pipeline (trans-ventricular plane): structure detection -> per-structure boxes and sizes.

Reports, per structure class of the model (Brain, CSP, LV, CHOROID_PLEXUS, MIDLINE_FALX), the most
confident box with its width/height in px (and mm when ``pixel_size_mm`` is known), and a plane check:
a trans-ventricular plane should show the CSP and the lateral ventricle (``required``).
When a ``cns-seg`` model is available (``weights/cns-seg.pt``) the report adds ``masks``: per class
(Brain, CSP, LV) the most confident mask's area in px^2 (and mm^2).
Box sizes and areas are model outputs, not calipers: they are not a validated ventricular (atrial) width.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fetal_detect import __version__
from fetal_detect.runtime import Prediction, load_predictor, optional_predictor

REQUIRED = ("CSP", "LV")  # what makes a trans-ventricular plane usable for CNS biometry


class CNSMeasurer:
    """cns-det model once loaded; ``__call__(image, pixel_size_mm) -> dict`` per image."""

    task = "cns-det"

    def __init__(self, weights: str | Path | None = None, predictor=None, conf: float = 0.25,
                 seg_weights: str | Path | None = None, seg_predictor=None, use_seg: bool = True):
        self.predictor = predictor or load_predictor(self.task, weights, conf=conf)
        self.seg_predictor = seg_predictor
        if use_seg and seg_predictor is None:
            self.seg_predictor = optional_predictor("cns-seg", seg_weights)

    @property
    def model_info(self) -> dict:
        info = {"task": self.task, "weights": str(self.predictor.weights), "backend": self.predictor.backend,
                "version": __version__}
        if self.seg_predictor is not None:
            info["cns-seg"] = {"weights": str(self.seg_predictor.weights), "backend": self.seg_predictor.backend}
        return info

    @staticmethod
    def mask_areas(seg_pred: Prediction, shape: tuple[int, ...], pixel_size_mm: float | None) -> dict:
        """Per class, the most confident mask: ``area_px`` (and ``area_mm2``) at the image size ``shape``."""
        out = {}
        for inst in sorted(seg_pred.instances, key=lambda i: -i.confidence):
            m = inst.mask_at(shape)
            if inst.name in out or m is None:
                continue
            area_px = int(m.astype(bool).sum())
            out[inst.name] = {"confidence": round(float(inst.confidence), 4), "area_px": area_px}
            if pixel_size_mm:
                out[inst.name]["area_mm2"] = round(area_px * pixel_size_mm ** 2, 2)
        return out

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
        if self.seg_predictor is not None:
            seg = self.seg_predictor.predict(image)
            out["masks"] = self.mask_areas(seg, image.shape, pixel_size_mm)
            out["model_ms"] = round(pred.model_ms + seg.model_ms, 1)
        out["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out
