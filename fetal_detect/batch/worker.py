"""The per-image function both engines run: :class:`Worker` (models loaded once) -> one row dict."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fetal_detect import __version__
from fetal_detect.batch.inputs import file_sha256
from fetal_detect.errors import FetalDetectError

TIMING = ("processing_ms",)  # columns that differ between runs of the same images


@dataclass
class BatchConfig:
    """Everything a worker needs; picklable, so it travels to pool processes and Ray actors."""

    task: str = "auto"
    weights: dict = field(default_factory=dict)  # model task (e.g. "hc-seg") -> .pt / .onnx path
    pixel_size_mm: float | None = None  # --pixel-size: for images with no CSV value; wins over DICOM and ruler
    overlays: str | None = None
    skip_hashes: frozenset = frozenset()
    threads: int = 1  # torch/onnxruntime threads per worker
    backend: str = "auto"  # runtime.BACKEND_CHOICES: auto = a verified INT8 ONNX when there is one
    strict_plane: bool = False  # NT: refuse a doubtful plane instead of flagging it


class Worker:
    """Loads the models once; ``worker(path, pixel_size_mm)`` -> one row (None: hash already done).

    The row is :meth:`fetal_detect.result.Result.row` of the same :class:`~fetal_detect.result.Result` the
    CLI prints and the API returns. Never raises: a bad image is a row with ``status="error"``; a model
    that cannot load makes every call return ``{"__fatal__": message}``, which the driver turns into one
    error for the whole batch.
    """

    def __init__(self, cfg: BatchConfig):
        self.cfg = cfg
        self.fatal = None
        self.models: dict = {}
        try:
            _limit_threads(cfg.threads)
            from fetal_detect.pipeline.analyze import Analyzer

            self.analyzer = Analyzer(cfg.weights, backend=cfg.backend)
            self.models = self._load_models()
        except FetalDetectError as e:
            self.fatal = str(e)
        except Exception as e:  # noqa: BLE001  (a worker must report, not die)
            self.fatal = f"cannot start a worker: {type(e).__name__}: {e}"

    def _load_models(self) -> dict:
        """Load (and warm up) what ``task`` needs now, so a missing model fails before the first image.

        ``auto`` with a plane classifier loads the measurers it routes to on first use.
        """
        from fetal_detect import measurers
        from fetal_detect.pipeline.analyze import models_of, predictor_info

        a, models = self.analyzer, {}
        classifier = a.plane_classifier() if self.cfg.task == measurers.AUTO else None
        if classifier is not None:
            models["plane-cls"] = predictor_info(classifier)
            _warm_up(classifier)
        else:
            name = measurers.default_measurer() if self.cfg.task == measurers.AUTO else self.cfg.task
            measurer = a.measurer(name)
            models.update(models_of(measurer, measurers.get_measurer(name)))
            _warm_up(getattr(measurer, "predictor", None))
        return models

    def __call__(self, path: str, pixel_size_mm: float | None = None) -> dict | None:
        if self.fatal:
            return {"__fatal__": self.fatal}
        from fetal_detect.result import Result

        t0 = time.perf_counter()
        sha = file_sha256(path)
        if sha is not None and sha in self.cfg.skip_hashes:
            return None
        result = Result(status="error", requested=self.cfg.task, version=__version__)
        try:
            result = self._analyze(path, pixel_size_mm, result, sha)
        except FetalDetectError as e:
            result.status, result.reason = "error", str(e)
        except Exception as e:  # noqa: BLE001  (never stop the batch on one image)
            result.status, result.reason = "error", f"{Path(path).name}: {type(e).__name__}: {e}"
        result.extra.update(path=str(path), sha256=sha)
        result.models = result.models or dict(self.models)
        result.processing_ms = round((time.perf_counter() - t0) * 1000, 1)
        return result.row()

    def _analyze(self, path: str, pixel_size_mm: float | None, failed, sha: str | None):
        """The image's :class:`Result`; ``failed`` keeps the pixel size when the analysis itself then fails;
        ``sha`` (the file's SHA-256, hashed once per image) names its overlay."""
        from fetal_detect.io import load_image
        from fetal_detect.measure.calibration import calibrate_image
        from fetal_detect.pipeline.analyze import call_options

        loaded = load_image(path)
        user, how = (pixel_size_mm, "CSV pixel_size_mm") if pixel_size_mm is not None else (self.cfg.pixel_size_mm,
                                                                                               "--pixel-size")
        cal = calibrate_image(loaded, user, user_detail=how)
        failed.calibrate(cal)
        try:
            result = self.analyzer.analyze(loaded.image, task=self.cfg.task, calibration=cal,
                                           options=call_options(self.cfg.strict_plane))
        except FetalDetectError as e:  # a bad request for this image: name the file in the message
            raise FetalDetectError(f"{Path(path).name}: {e}") from None
        if self.cfg.overlays:
            from fetal_detect.report import draw_overlay, write_image

            dest = Path(self.cfg.overlays) / f"{Path(path).stem}-{(sha or 'nohash')[:8]}.png"
            result.extra["overlay_file"] = str(write_image(dest, draw_overlay(
                loaded.image, result.overlay, result.measurements, result.units)))
        return result


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
