"""Engines: each yields row dicts (None for skipped images) in any order; both run :class:`Worker`."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from typing import Iterator

from fetal_detect.batch.inputs import Item
from fetal_detect.batch.worker import BatchConfig, Worker
from fetal_detect.errors import FetalDetectError

ENGINES = ("local", "ray")
_WORKER: Worker | None = None
START_METHOD = "forkserver"
PRELOAD = ("fetal_detect.pipeline.hc", "ultralytics")


def _pool_init(cfg: BatchConfig) -> None:
    global _WORKER
    _WORKER = Worker(cfg)


def _pool_call(item: Item) -> dict | None:
    return _WORKER(item.path, item.pixel_size_mm)


def run_local(items: list[Item], cfg: BatchConfig, workers: int) -> Iterator[dict | None]:
    """A process pool on this machine (``workers=0``: in this process, for debugging)."""
    if workers <= 0:
        w = Worker(cfg)
        for it in items:
            yield w(it.path, it.pixel_size_mm)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # forkserver: a clean server process (no torch threads) imports the pipeline once; workers fork from it
    ctx = mp.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload(list(PRELOAD))
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init, initargs=(cfg,))
    todo, pending = iter(items), set()
    try:
        while True:  # a bounded window of submitted images, so a million-image list is not queued at once
            while len(pending) < 4 * workers and (it := next(todo, None)) is not None:
                pending.add(pool.submit(_pool_call, it))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
    except BrokenProcessPool:
        raise FetalDetectError("a batch worker process died (out of memory, a crash in a decoder, or a script "
                               "that calls run_batch without `if __name__ == '__main__':`); the rows so far are "
                               "saved, re-run the same command to resume") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class _RayWorker:
    """Ray Data actor: one :class:`Worker` per actor; rows travel as JSON strings (no schema guessing)."""

    def __init__(self, cfg: BatchConfig):
        self.worker = Worker(cfg)

    def __call__(self, batch: dict) -> dict:
        rows = []
        for text in batch["item"]:
            it = json.loads(text)
            rows.append(json.dumps(self.worker(it["path"], it["pixel_size_mm"])))
        return {"row": rows}


def run_ray(items: list[Item], cfg: BatchConfig, workers: int | None,
            address: str | None = None) -> Iterator[dict | None]:
    """Ray Data: ``map_batches`` over an actor pool of ``workers`` (models loaded in each actor's ``__init__``).

    With ``address`` an existing cluster is joined (paths must be readable on every node); otherwise
    a local Ray starts with ``num_cpus=workers`` and is shut down at the end. ``workers=None``: one
    actor per CPU of the cluster.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise FetalDetectError("--engine ray needs Ray: pip install 'fetal-detect[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, _node_ip_address="127.0.0.1", **kw)
    workers = max(int(workers or ray.cluster_resources().get("CPU", 1)), 1)
    for name in ("ray", "ray.data"):  # our progress bar and summary say what matters
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours is on the driver
        ctx.execution_options.preserve_order = False
        ds = ray.data.from_items([{"item": json.dumps(asdict(it))} for it in items])
        ds = ds.map_batches(_RayWorker, fn_constructor_args=(cfg,), batch_size=1, num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=workers))
        for rec in ds.iter_rows():
            yield json.loads(rec["row"])
    finally:
        if started:
            ray.shutdown()
