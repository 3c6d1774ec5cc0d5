"""The analysis worker pool of the web service: ``workers`` threads, each with its own Analyzer.

Models load once, in the background (:meth:`WorkerPool.start`); at most ``workers + queue`` jobs are
admitted and none while the estimated queued work (frames x pixels at the measured speed) passes
``max_wait_s`` (:class:`Busy`: 503 with ``Retry-After``). Each job carries a :class:`JobContext` with its
deadline and a cancel flag set when its client disconnects. Used by :mod:`fetal_detect.serve.app`.
"""
from __future__ import annotations

import asyncio
import logging
import math
import queue as queue_mod
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from fetal_detect import measurers
from fetal_detect.errors import FetalDetectError

log = logging.getLogger("fetal_detect.serve")


class Busy(FetalDetectError):
    """The worker pool is full or the models are not loaded yet: 503 with ``Retry-After`` seconds."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, status=503)
        self.retry_after_s = retry_after_s


class JobContext:
    """What a running analysis may consult: ``check()`` raises once the client left or the deadline passed;
    ``set_cost(frames x pixels)`` tells the pool how much work the job is (for admission and Retry-After)."""

    def __init__(self, deadline_s: float):
        self.deadline_s, self.started = deadline_s, None
        self.cancelled = threading.Event()
        self.cost_px: int | None = None

    def set_cost(self, cost_px: int) -> None:
        self.cost_px = int(cost_px)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise FetalDetectError("the client disconnected: analysis stopped", status=499)
        if self.started is not None and time.perf_counter() - self.started > self.deadline_s:
            raise FetalDetectError(f"the analysis took over the {self.deadline_s:g} s per-request limit; "
                                   f"send a shorter cine or a single frame", status=413)


class WorkerPool:
    """``workers`` threads, each holding its own Analyzer, with at most ``workers + queue`` jobs admitted
    and none while the estimated queued work per worker is over ``max_wait_s``."""

    def __init__(self, make_analyzer: Callable[[], object], workers: int = 2, queue: int = 8,
                 job_deadline_s: float = 60, max_wait_s: float = 60):
        if workers < 1 or queue < 0:
            raise FetalDetectError(f"workers must be >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers, self.capacity = workers, workers + queue
        self.job_deadline_s, self.max_wait_s = job_deadline_s, max_wait_s
        self._make = make_analyzer
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="fetal-detect-worker")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._analyzers: queue_mod.Queue = queue_mod.Queue()
        self._lock = threading.Lock()
        self._jobs: set[JobContext] = set()
        self.in_flight, self.mean_job_s, self.s_per_px = 0, 1.0, None
        self.ready, self.error, self.models = threading.Event(), None, {}
        self.load_s: float | None = None

    def start(self) -> None:
        """Load the models in the background so ``/health`` answers at once and ``/ready`` tells when done."""
        threading.Thread(target=self._load, name="fetal-detect-load", daemon=True).start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            for _ in range(self.workers):
                analyzer = self._make()
                self.models = preload(analyzer)
                warm_up(analyzer)
                self._analyzers.put(analyzer)
            self.load_s = round(time.perf_counter() - t0, 2)
            self.ready.set()
            log.info("models loaded in %.1f s: %s", self.load_s, ", ".join(self.models) or "none")
        except FetalDetectError as e:
            self.error = str(e)
            log.error("models not loaded: %s", e)
        except Exception as e:  # a broken checkpoint must not kill the process: /ready says why
            self.error = f"{type(e).__name__}: {e}"
            log.exception("models not loaded")

    def _job_s(self, ctx: JobContext) -> float:
        """Estimated seconds of a job: its cost at the measured speed, else the mean job time."""
        if ctx.cost_px and self.s_per_px:
            left = ctx.cost_px * self.s_per_px
            if ctx.started is not None:
                left -= time.perf_counter() - ctx.started
            return max(left, 0.05)
        return self.mean_job_s

    def queued_work_s(self) -> float:
        with self._lock:
            return sum(self._job_s(c) for c in self._jobs)

    def retry_after_s(self) -> int:
        """Seconds until a worker is likely free: the queued work split over the workers."""
        return int(min(600, max(1, math.ceil(self.queued_work_s() / self.workers))))

    async def run(self, fn: Callable, *args, ctx: JobContext | None = None):
        """Run ``fn(analyzer, *args, ctx=ctx)`` on a worker; :class:`Busy` at once when full or not ready.

        Cancelling the awaiting task (client gone) sets ``ctx.cancelled``: a queued job never starts,
        a running one stops at its next ``ctx.check()``.
        """
        if not self.ready.is_set():
            raise Busy(f"models are not loaded{': ' + self.error if self.error else ' yet'}", 5)
        ctx = ctx or JobContext(self.job_deadline_s)
        wait_s = self.queued_work_s() / self.workers
        if wait_s > self.max_wait_s:
            raise Busy(f"busy: about {wait_s:.0f} s of analyses queued, retry later", self.retry_after_s())
        if not self._slots.acquire(blocking=False):
            raise Busy(f"busy: {self.capacity} analyses running or queued, retry later", self.retry_after_s())
        with self._lock:
            self.in_flight += 1
            self._jobs.add(ctx)
        try:
            fut = self._executor.submit(self._job, fn, args, ctx)
        except BaseException:
            self._release(ctx)
            raise
        fut.add_done_callback(lambda _: self._release(ctx))  # released when the work ends, even if the client left
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise

    def _release(self, ctx: JobContext) -> None:
        with self._lock:
            self.in_flight -= 1
            self._jobs.discard(ctx)
        self._slots.release()

    def _job(self, fn, args, ctx: JobContext):
        ctx.check()  # the client may have left while the job was queued
        analyzer = self._analyzers.get()
        ctx.started = t0 = time.perf_counter()
        try:
            return fn(analyzer, *args, ctx=ctx)
        finally:
            self._analyzers.put(analyzer)
            dt = time.perf_counter() - t0
            with self._lock:
                self.mean_job_s = 0.8 * self.mean_job_s + 0.2 * dt
                if ctx.cost_px:
                    rate = dt / ctx.cost_px
                    self.s_per_px = rate if self.s_per_px is None else 0.8 * self.s_per_px + 0.2 * rate

    def shutdown(self) -> None:
        with self._lock:
            for ctx in self._jobs:
                ctx.cancelled.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


def preload(analyzer) -> dict:
    """Load every model the analyzer can build: the plane classifier when there is one, the default
    measurement (must load), the other rows of the measurer table when their weights exist."""
    from fetal_detect.pipeline.analyze import models_of, predictor_info

    models = {}
    classifier = analyzer.plane_classifier() if hasattr(analyzer, "plane_classifier") else None
    if classifier is not None:
        models["plane-cls"] = predictor_info(classifier)
    for name in measurers.names():
        try:
            m = analyzer.measurer(name)
        except Exception as e:  # only the default measurement is required; the others load when present
            if name == measurers.default_measurer():
                raise
            log.info("%s measurer not loaded: %s", name, e)
            continue
        models.update(models_of(m, measurers.get_measurer(name)))
    return models


def warm_up(analyzer) -> None:
    """One throw-away analysis so the first real request does not pay for model fusing and set-up."""
    import numpy as np

    try:
        analyzer.analyze(np.zeros((64, 64), np.uint8), None, "auto")
    except FetalDetectError:
        pass  # "nothing found" on a black frame is expected


def default_analyzer_factory(weights: dict | None, backend: str = "auto") -> Callable[[], object]:
    def make():
        from fetal_detect.pipeline.analyze import Analyzer

        return Analyzer(weights, backend=backend)

    return make
