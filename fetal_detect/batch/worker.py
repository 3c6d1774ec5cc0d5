"""The per-image function both engines run: :class:`Worker` (models loaded once) -> one row dict."""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fetal_detect import __version__
from fetal_detect.batch.inputs import file_sha256
from fetal_detect.errors import FetalDetectError

HEAD = ("path", "sha256", "plane", "plane_confidence", "task")
TAIL = ("quality", "status", "error", "pixel_size_mm", "pixel_size_source", "units", "models", "version",
        "processing_ms")
KNOWN_MEASUREMENTS = ("hc_mm", "bpd_mm", "ofd_mm", "ga_weeks", "hc_uncalibrated_mm", "hc_px", "bpd_px", "ofd_px",
                      "nt_mm", "nt_px")
# per task, result fields that are always columns of its rows (empty when absent; lists joined by ';')
RESULT_COLUMNS = {"nt": ("nt_mm", "nt_px", "plane_ok", "missing", "plane_score", "nt_box_source")}
TEXT_COLUMNS = ("missing", "nt_box_source")
TIMING = ("processing_ms",)  # columns that differ between runs of the same images


@dataclass
class BatchConfig:
    """Everything a worker needs; picklable, so it travels to pool processes and Ray actors."""

    task: str = "auto"
    weights: dict = field(default_factory=dict)  # model task (e.g. "hc-seg") -> .pt / .onnx path
    pixel_size_mm: float | None = None  # --pixel-size: for images with no CSV value; wins over DICOM and ruler
    overlays: str | None = None
    strict_plane: bool = False  # NT: refuse a doubtful plane instead of flagging it
    skip_hashes: frozenset = frozenset()
    threads: int = 1  # torch/onnxruntime threads per worker


class Worker:
    """Loads the models once; ``worker(path, pixel_size_mm)`` -> one row dict (None: hash already done).

    Never raises: a bad image is a row with ``status="error"``; a model that cannot load makes every
    call return ``{"__fatal__": message}``, which the driver turns into one error for the whole batch.
    """

    def __init__(self, cfg: BatchConfig):
        self.cfg = cfg
        self.fatal = None
        self.models = ""
        try:
            _limit_threads(cfg.threads)
            from fetal_detect.pipeline.analyze import Analyzer

            self.analyzer = Analyzer(cfg.weights)
            self.models = models_string(self._load_models())
        except FetalDetectError as e:
            self.fatal = str(e)
        except Exception as e:  # noqa: BLE001  (a worker must report, not die)
            self.fatal = f"cannot start a worker: {type(e).__name__}: {e}"

    def _load_models(self) -> dict:
        """Load (and warm up) what ``task`` needs now, so a missing model fails before the first image.

        ``auto`` with a plane classifier loads the measurers it routes to on first use.
        """
        a, models = self.analyzer, {}
        classifier = a.plane_classifier() if self.cfg.task == "auto" and hasattr(a, "plane_classifier") else None
        if classifier is not None:
            models["plane-cls"] = {"task": "plane-cls", "weights": str(classifier.weights),
                                   "backend": classifier.backend}
            _warm_up(classifier)
        else:
            kind = "hc" if self.cfg.task == "auto" else self.cfg.task
            measurer = a.measurer(kind)
            models[kind] = measurer.model_info
            _warm_up(getattr(measurer, "predictor", None))
        return models

    def __call__(self, path: str, pixel_size_mm: float | None = None) -> dict | None:
        if self.fatal:
            return {"__fatal__": self.fatal}
        t0 = time.perf_counter()
        sha = file_sha256(path)
        if sha is not None and sha in self.cfg.skip_hashes:
            return None
        row = {"path": str(path), "sha256": sha, "plane": None, "plane_confidence": None,
               "task": None if self.cfg.task == "auto" else self.cfg.task}
        try:
            row.update(status=self._analyze(row, pixel_size_mm), error=None)
        except FetalDetectError as e:
            row.update(status="error", error=str(e))
        except Exception as e:  # noqa: BLE001  (never stop the batch on one image)
            row.update(status="error", error=f"{Path(path).name}: {type(e).__name__}: {e}")
        row.setdefault("models", self.models)
        row["version"] = __version__
        row["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return row

    def _analyze(self, row: dict, pixel_size_mm: float | None) -> str:
        """Fill ``row`` in place (so the pixel size is kept even when the analysis then fails); the status."""
        from fetal_detect.io import load_image
        from fetal_detect.measure.calibration import calibrate_image

        path = row["path"]
        loaded = load_image(path)
        user, how = (pixel_size_mm, "CSV pixel_size_mm") if pixel_size_mm is not None else (self.cfg.pixel_size_mm,
                                                                                               "--pixel-size")
        cal = calibrate_image(loaded, user, user_detail=how)
        px = cal.pixel_size_mm
        row.update(pixel_size_mm=px, pixel_size_source=cal.source)
        try:
            report = self.analyzer.analyze(loaded.image, px, self.cfg.task, strict_plane=self.cfg.strict_plane)
        except FetalDetectError as e:  # e.g. "no skull found": name the file in the message
            raise FetalDetectError(f"{Path(path).name}: {e}") from None
        result = report.get("result", {})
        meas = {k: v for k, v in report.get("measurements", {}).items()
                if k != "pixel_size_mm" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        q = report.get("quality", result.get("confidence"))
        if isinstance(q, dict):
            q = q.get("score")
        row.update(plane=report.get("plane"), plane_confidence=report.get("plane_confidence"),
                   task=report.get("task"), **meas, quality=q,
                   units=result.get("units"), models=models_string(report.get("models")) or self.models)
        for k in RESULT_COLUMNS.get(report.get("task"), ()):
            v = row.get(k, result.get(k))
            row[k] = ";".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        if self.cfg.overlays:
            row["overlay"] = self._overlay(loaded.image, report.get("task"), result, path, row["sha256"],
                                           cal.ruler if cal.source == "ruler" else None)
        return report.get("status", "ok")

    def _overlay(self, image, task: str | None, result: dict, path: str, row_sha: str | None,
                 ruler: dict | None = None) -> str | None:
        from fetal_detect.pipeline.analyze import draw_result
        from fetal_detect.report import write_image

        img = draw_result(image, task, result)
        if img is None:
            return None
        if ruler:
            from fetal_detect.measure.ruler import draw_ruler

            img = draw_ruler(img, ruler)
        dest = Path(self.cfg.overlays) / f"{Path(path).stem}-{(row_sha or 'nohash')[:8]}.png"
        return str(write_image(dest, img))


def models_string(models: dict | None) -> str:
    """``{"hc": model_info}`` -> ``"hc-seg=best.pt@1a2b3c4d5e6f/torch"`` (file, content hash, back-end)."""
    parts = []
    for info in (models or {}).values():
        w = str(info.get("weights", ""))
        parts.append(f"{info.get('task')}={Path(w).name}@{_weights_sha(w)[:12]}/{info.get('backend')}")
    return ";".join(sorted(parts))


@functools.lru_cache(maxsize=16)
def _weights_sha(path: str) -> str:
    return (file_sha256(path) or "") if path else ""


def _warm_up(predictor) -> None:
    """One prediction on a blank frame, so the first real image does not pay the lazy set-up."""
    import numpy as np

    if predictor is not None:
        predictor.predict(np.zeros((64, 64), np.uint8))


def _limit_threads(n: int) -> None:
    """One worker = ``n`` threads: processes, not threads, give the parallelism."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # an ONNX-only install
        pass
