"""Trans-ventricular biometry from the ``cns-seg`` masks: lateral-ventricle atrial width (Vp) and head size.

- **Vp** from the most confident LV mask: :func:`fetal_detect.measure.ventricle.atrial_width` (widest chord
  perpendicular to the ventricle's long axis, inner-to-inner; normal < 10 mm).
- **Brain-outline HC, BPD, OFD** from the most confident Brain mask: the same robust ellipse fit as HC
  (:func:`fetal_detect.measure.hc.measure_hc`, no calibration line). The ``cns-seg`` Brain label is the
  annotated brain outline of the trans-ventricular set, not the HC18 outer-skull convention, so these are
  named ``brain_hc_mm`` etc. and are not interchangeable with ``hc_mm``.

A missing structure leaves its numbers out (with a note); when neither is found the answer is
"nothing found" (422). Added with one module (this one, plus its geometry in ``measure/ventricle.py``)
and one row of the measurer table: see docs/architecture.md.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.hc import measure_hc
from fetal_detect.measure.ventricle import atrial_width
from fetal_detect.result import Caliper
from fetal_detect.runtime import Prediction, load_predictor


class TVMeasurer:
    """``cns-seg`` loaded once; ``__call__(image, pixel_size_mm) -> dict`` per image."""

    def __init__(self, weights: str | Path | None = None, predictor=None, conf: float = 0.25):
        self.predictor = predictor or load_predictor("cns-seg", weights, conf=conf)

    def from_prediction(self, pred: Prediction, pixel_size_mm: float | None, shape: tuple[int, ...]) -> dict:
        lv, brain = pred.best("LV"), pred.best("Brain")
        out: dict = {"pixel_size_mm": pixel_size_mm, "units": "mm" if pixel_size_mm else "px", "notes": []}
        used = []
        vp = atrial_width(lv.mask_at(shape), pixel_size_mm) if lv is not None and lv.mask is not None else None
        if vp is None:
            out["notes"].append("no lateral ventricle (LV) mask: no Vp")
        else:
            p1, p2 = vp.pop("calipers")
            out.update(vp)
            out["calipers"] = [Caliper("vp", tuple(p1), tuple(p2), vp["vp_px"], vp.get("vp_mm"))]
            used.append(lv.confidence)
        head = None
        if brain is not None and brain.mask is not None:
            try:
                head = measure_hc(brain.mask_at(shape), pixel_size_mm, model_confidence=brain.confidence)
            except FetalDetectError as e:
                out["notes"].append(f"brain outline: {e}")
        if head is None:
            out["notes"].append("no brain outline (Brain) mask: no HC/BPD/OFD")
        else:
            unit = "mm" if pixel_size_mm else "px"
            out.update({f"brain_{k}_{unit}": head[f"{k}_{unit}"] for k in ("hc", "bpd", "ofd")})
            out["ellipse"] = head["ellipse"]
            used.append(head["confidence"])
        if not used:
            raise FetalDetectError("no lateral ventricle or brain outline found by cns-seg", status=422)
        out["confidence"] = round(float(np.mean(used)), 4)
        return out

    def __call__(self, image: np.ndarray, pixel_size_mm: float | None) -> dict:
        t0 = time.perf_counter()
        pred = self.predictor.predict(image)
        out = self.from_prediction(pred, pixel_size_mm, image.shape)
        out["model_ms"] = round(pred.model_ms, 1)
        out["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out
