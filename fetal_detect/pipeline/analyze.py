"""``analyze``: one image in, one JSON report out (plane, measurements, detections, quality).

This is the single entry point the CLI ``analyze``, the web service and the batch runner call.
``task="auto"`` classifies the plane first (when a plane classifier is available) and routes to the
right measurement; ``hc`` / ``nt`` / ``cns`` force one. Models load once per :class:`Analyzer`.
"""
from __future__ import annotations

import time

import numpy as np

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError
from fetal_detect.pipeline import public

TASKS = ("auto", "hc", "nt", "cns")


class Analyzer:
    """Holds the loaded models; ``analyze(image, pixel_size_mm, task)`` returns a JSON-ready dict."""

    def __init__(self, weights: dict[str, str] | None = None):
        self.weights = weights or {}
        self._measurers: dict = {}

    def measurer(self, kind: str):
        if kind not in self._measurers:
            if kind == "hc":
                from fetal_detect.pipeline.hc import HCMeasurer

                self._measurers[kind] = HCMeasurer(self.weights.get("hc-seg"))
            else:
                raise FetalDetectError(f"task '{kind}' is not available in this build", status=400)
        return self._measurers[kind]

    def analyze(self, image: np.ndarray, pixel_size_mm: float | None = None, task: str = "auto") -> dict:
        if task not in TASKS:
            raise FetalDetectError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
        t0 = time.perf_counter()
        kind = "hc" if task == "auto" else task
        m = self.measurer(kind)
        res = m(image, pixel_size_mm)
        report = {"status": "ok", "task": kind, "plane": None, "plane_confidence": None,
                  "measurements": {k: v for k, v in res.items() if k.endswith(("_mm", "_px", "_weeks"))},
                  "result": public(res), "models": {kind: m.model_info}, "version": __version__}
        report["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return report
