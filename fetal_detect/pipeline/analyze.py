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
PLANE_ROUTES = {"trans-thalamic": "hc", "trans-ventricular": "cns", "mid-sagittal": "nt", "other": None}
"""plane-cls class -> measurement (None: no standard plane, nothing is measured)."""


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
            elif kind == "nt":
                from fetal_detect.pipeline.nt import NTMeasurer

                self._measurers[kind] = NTMeasurer(self.weights.get("nt-det"), self.weights.get("nt-seg"))
            elif kind == "cns":
                from fetal_detect.pipeline.cns import CNSMeasurer

                self._measurers[kind] = CNSMeasurer(self.weights.get("cns-det"), seg_weights=self.weights.get("cns-seg"))
            else:
                raise FetalDetectError(f"task '{kind}' is not available in this build", status=400)
        return self._measurers[kind]

    def plane_classifier(self):
        """The plane-cls predictor (given in ``weights`` or shipped), or None when there is none."""
        if "plane-cls" not in self._measurers:
            from fetal_detect.runtime import load_predictor
            from fetal_detect.tasks import get_task

            t = get_task("plane-cls")
            given = self.weights.get("plane-cls")
            shipped = t.weights.exists() or t.weights.with_suffix(".onnx").exists()
            self._measurers["plane-cls"] = load_predictor(t, given) if given or shipped else None
        return self._measurers["plane-cls"]

    def analyze(self, image: np.ndarray, pixel_size_mm: float | None = None, task: str = "auto",
                strict_plane: bool = False) -> dict:
        """``strict_plane``: an NT on a doubtful plane is refused (``unsuitable_plane``) instead of flagged."""
        if task not in TASKS:
            raise FetalDetectError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
        t0 = time.perf_counter()
        plane, plane_conf, models = None, None, {}
        kind = task
        if task == "auto":
            classifier = self.plane_classifier()
            if classifier is None:  # no plane model: the HC pipeline, as before plane-cls existed
                kind = "hc"
            else:
                plane, plane_conf = classifier.predict(image).top_class
                plane_conf = round(float(plane_conf), 4)
                models["plane-cls"] = {"task": "plane-cls", "weights": str(classifier.weights),
                                       "backend": classifier.backend}
                kind = PLANE_ROUTES.get(plane)
        if kind is None:
            report = {"status": "no_standard_plane", "task": None, "plane": plane, "plane_confidence": plane_conf,
                      "measurements": {}, "result": {}, "models": models, "version": __version__}
            report["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            return report
        m = self.measurer(kind)
        res = m(image, pixel_size_mm, **({"strict_plane": strict_plane} if kind == "nt" else {}))
        report = {"status": res.get("status", "ok"), "task": kind, "plane": plane, "plane_confidence": plane_conf,
                  "measurements": {k: v for k, v in res.items() if k.endswith(("_mm", "_px", "_weeks"))},
                  "result": public(res), "models": {**models, kind: m.model_info}, "version": __version__}
        report["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return report


def draw_result(image: np.ndarray, task: str | None, result: dict) -> np.ndarray | None:
    """The overlay of one measurement, as the measurer draws it: HC ellipse, NT calipers and band, else
    the detected boxes; None when there is nothing to draw."""
    from fetal_detect.report import draw_boxes, draw_hc

    if task == "nt" and result.get("calipers"):
        from fetal_detect.pipeline.nt import draw_nt

        return draw_nt(image, result)
    if "ellipse" in result:
        return draw_hc(image, result)
    dets = result.get("detections") or result.get("instances") or list((result.get("structures") or {}).values())
    return draw_boxes(image, dets) if dets else None
