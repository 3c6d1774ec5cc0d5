"""Batch analysis of whole archives: one row per image, resumable, on a process pool or Ray Data.

``run_batch(INPUT, out)`` reads a folder (images and DICOM, recursively), a glob, or a CSV with a
``path`` column (and optionally ``pixel_size_mm``), runs :class:`fetal_detect.pipeline.analyze.Analyzer`
on every image and writes one row per image (``path, sha256, plane, task, hc_mm, bpd_mm, ...,
quality, status, error, models, version, processing_ms``) to Parquet or CSV.

Both engines run the same per-image function, :meth:`Worker.__call__` (path + pixel size -> row),
with one :class:`Worker` (so one set of loaded models) per process: ``local`` in a
``multiprocessing`` pool initializer, ``ray`` in a Ray Data actor's ``__init__``.

Resume: each finished row is appended at once to a JSON-lines journal in ``<out>.parts/``; on start
the hashes already in ``<out>`` and in the journals are skipped, so a killed run loses only the
rows in flight. At the end journals and the previous output are consolidated into ``<out>``
(written to a temporary file, then renamed) and the journals are removed. Bad files become rows
with ``status="error"`` and a one-line message; they never stop the batch.
"""
from __future__ import annotations

import csv
import functools
import glob
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError
from fetal_detect.io import parse_pixel_size_mm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
ENGINES = ("local", "ray")
FORMATS = ("parquet", "csv")
HEAD = ("path", "sha256", "plane", "plane_confidence", "task")
TAIL = ("quality", "status", "error", "pixel_size_mm", "pixel_size_source", "units", "models", "version",
        "processing_ms")
KNOWN_MEASUREMENTS = ("hc_mm", "bpd_mm", "ofd_mm", "ga_weeks", "hc_uncalibrated_mm", "hc_px", "bpd_px", "ofd_px",
                      "nt_mm", "nt_px")
# per task, result fields that are always columns of its rows (empty when absent; lists joined by ';')
RESULT_COLUMNS = {"nt": ("nt_mm", "nt_px", "plane_ok", "missing", "plane_score", "nt_box_source")}
TEXT_COLUMNS = ("missing", "nt_box_source")
KIND_MODEL = {"auto": "hc-seg", "hc": "hc-seg", "nt": "nt-det", "cns": "cns-det"}  # bare --weights goes here
TIMING = ("processing_ms",)  # columns that differ between runs of the same images


@dataclass(frozen=True)
class Item:
    """One image to analyse; ``pixel_size_mm`` from the input CSV (None: ``--pixel-size``, DICOM, ruler)."""

    path: str
    pixel_size_mm: float | None = None


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


# ----------------------------------------------------------------------------------------------
# inputs


def collect_inputs(src: str | Path) -> list[Item]:
    """A folder (recursive), a glob, a CSV with ``path`` [+ ``pixel_size_mm``], or one file -> items."""
    text = str(src)
    p = Path(text)
    if p.is_dir():
        items = [Item(str(f)) for f in _walk(p)]
    elif p.is_file() and p.suffix.lower() == ".csv":
        items = read_input_csv(p)
    elif p.is_file():
        items = [Item(str(p))]
    elif any(c in text for c in "*?["):
        items = [Item(f) for f in sorted(glob.glob(text, recursive=True)) if Path(f).is_file()]
    else:
        raise FetalDetectError(f"{text}: no such file, folder or glob")
    if not items:
        raise FetalDetectError(f"{text}: no images found (PNG, JPEG, BMP, TIFF or DICOM)")
    return items


def _walk(folder: Path) -> Iterator[Path]:
    """Image files by suffix, plus suffix-less or unknown files that are DICOM (sniffed ``DICM``)."""
    from fetal_detect.io import is_regular_file, sniff_format

    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            f = Path(root) / name
            if name.startswith(".") or name.upper() == "DICOMDIR" or not is_regular_file(f):
                continue  # FIFOs, devices (a symlink to /dev/zero) and sockets would hang the batch
            if f.suffix.lower() in IMAGE_SUFFIXES:
                yield f
            elif f.suffix.lower() not in {".csv", ".json", ".txt", ".md", ".parquet", ".jsonl", ".yaml"}:
                try:
                    with open(f, "rb") as fh:
                        if sniff_format(fh.read(132)) == "dicom":
                            yield f
                except OSError:
                    continue


def read_input_csv(path: Path) -> list[Item]:
    """CSV with a ``path`` column (relative paths are relative to the CSV's folder), optional ``pixel_size_mm``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise FetalDetectError(f"{path}: the CSV needs a 'path' column (has {reader.fieldnames})")
        items = []
        for i, row in enumerate(reader, start=2):
            p = Path(row["path"].strip())
            if not p.is_absolute():
                p = path.parent / p
            px = parse_pixel_size_mm(row.get("pixel_size_mm"), f"{path}:{i}: pixel_size_mm")
            items.append(Item(str(p), px))
    return items



def file_sha256(path: str | Path) -> str | None:
    """Hex SHA-256 of a regular file's bytes (None when it cannot be read, or is a FIFO or a device)."""
    from fetal_detect.io import regular_file_sha256

    return regular_file_sha256(path)


# ----------------------------------------------------------------------------------------------
# the per-image function, shared by both engines


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
        from fetal_detect.measure.calibration import calibrate

        path = row["path"]
        loaded = load_image(path)
        user, how = (pixel_size_mm, "CSV pixel_size_mm") if pixel_size_mm is not None else (self.cfg.pixel_size_mm,
                                                                                               "--pixel-size")
        cal = calibrate(loaded, user, user_detail=how)
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


# ----------------------------------------------------------------------------------------------
# engines: each yields row dicts (None for skipped images) in any order


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


# ----------------------------------------------------------------------------------------------
# output: journal while running, one file at the end


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def output_format(out: Path, fmt: str | None) -> str:
    fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "parquet")
    if fmt not in FORMATS:
        raise FetalDetectError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    return fmt


class Journal:
    """Append-only JSON lines, flushed after every row: a kill loses only rows not yet returned."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rows-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        self.f = open(self.path, "a", encoding="utf-8")
        self.n = 0

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        self.n += 1

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        if not self.n:  # nothing written (all skipped, or stopped before the first row)
            self.path.unlink()
            try:  # only when empty: journals of an earlier, killed run stay for the resume
                self.path.parent.rmdir()
            except OSError:
                pass


def read_rows(out: Path, fmt: str) -> list[dict]:
    """Rows already in ``out`` and in its journals (a half-written last line is ignored)."""
    rows: list[dict] = []
    if out.exists():
        import pandas as pd

        try:
            df = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out, dtype={"sha256": str})
        except Exception as e:  # noqa: BLE001
            raise FetalDetectError(f"{out}: cannot read the existing output to resume ({type(e).__name__}); "
                                   f"move it away or pick another --out") from None
        rows = [{k: _none_if_nan(v) for k, v in r.items()} for r in df.to_dict("records")]
    pdir = parts_dir(out)
    for j in sorted(pdir.glob("*.jsonl")) if pdir.is_dir() else []:
        for line in j.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written when the run was killed
                continue
    return rows


def _none_if_nan(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


def consolidate(rows: list[dict], out: Path, fmt: str) -> int:
    """Deduplicate (last row per path + hash wins), sort by path, write ``out`` atomically. Returns rows."""
    import pandas as pd

    last = {(r.get("path"), r.get("sha256")): r for r in rows}
    rows = sorted(last.values(), key=lambda r: (str(r.get("path")), str(r.get("sha256"))))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    meas = [k for k in KNOWN_MEASUREMENTS if k in keys or k in ("hc_mm", "bpd_mm", "ofd_mm", "ga_weeks")]
    meas += sorted(k for k in keys if k not in meas and k not in HEAD and k not in TAIL and k != "overlay")
    cols = [*HEAD, *meas, *TAIL] + (["overlay"] if "overlay" in keys else [])
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    for c in [*meas, "plane_confidence", "quality", "pixel_size_mm", "processing_ms"]:
        if c in TEXT_COLUMNS:
            df[c] = df[c].astype("string")
        elif c == "plane_ok":
            df[c] = df[c].astype("boolean")
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("path", "sha256", "plane", "task", "status", "error", "pixel_size_source", "units", "models",
              "version"):
        df[c] = df[c].astype("string")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return len(df)


# ----------------------------------------------------------------------------------------------
# the batch


def parse_weights(task: str, weights: Iterable[str] | dict | None) -> dict:
    """``["PATH", "nt-seg=PATH"]`` -> ``{model task: path}``; a bare PATH goes to its sidecar's task or the default."""
    from fetal_detect.runtime import read_sidecar

    if isinstance(weights, dict):
        return dict(weights)
    out: dict = {}
    for w in weights or []:
        name, sep, path = str(w).partition("=")
        if not sep or Path(w).exists():
            name, path = read_sidecar(Path(w)).get("task") or KIND_MODEL[task], w
        if not Path(path).exists():
            raise FetalDetectError(f"{path}: weights file not found")
        out[name] = str(Path(path).resolve())
    return out


def run_batch(src: str | Path, out: str | Path, task: str = "auto", engine: str = "local", workers: int | None = None,
              fmt: str | None = None, weights=None, overlays: str | Path | None = None,
              pixel_size_mm: float | None = None, address: str | None = None, retry_errors: bool = False,
              progress: bool = True, strict_plane: bool = False) -> dict:
    """Analyse every image of ``src`` into ``out``; returns a summary (counts, seconds, images/s)."""
    from fetal_detect.pipeline.analyze import TASKS

    if task not in TASKS:
        raise FetalDetectError(f"--task must be one of {', '.join(TASKS)}, got '{task}'")
    if engine not in ENGINES:
        raise FetalDetectError(f"--engine must be one of {', '.join(ENGINES)}, got '{engine}'")
    out = Path(out)
    fmt = output_format(out, fmt)
    items = collect_inputs(src)
    if workers is None and engine == "local":
        workers = os.cpu_count() or 1
    done = read_rows(out, fmt)
    skip = frozenset(r["sha256"] for r in done if r.get("sha256") and (r.get("status") == "ok" or not retry_errors))
    cfg = BatchConfig(task=task, weights=parse_weights(task, weights), pixel_size_mm=pixel_size_mm,
                      overlays=str(overlays) if overlays else None, skip_hashes=skip, strict_plane=strict_plane)
    rows = run_local(items, cfg, workers) if engine == "local" else run_ray(items, cfg, workers, address)
    counts = {"new": 0, "skipped": 0, "ok": 0, "error": 0}
    t0, t_first = time.perf_counter(), None
    journal = Journal(parts_dir(out))
    bar = _progress(len(items), engine, progress)
    try:
        for row in rows:
            bar.update(1)
            if row is None:
                counts["skipped"] += 1
                continue
            if "__fatal__" in row:
                raise FetalDetectError(row["__fatal__"])
            journal.write(row)
            t_first = t_first or time.perf_counter()
            counts["new"] += 1
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    finally:
        bar.close()
        journal.close()
        if hasattr(rows, "close"):
            rows.close()  # stops the pool / Ray on an error or Ctrl-C
    seconds = time.perf_counter() - t0
    total = consolidate(read_rows(out, fmt), out, fmt)
    _remove_parts(parts_dir(out))
    return {"out": str(out), "format": fmt, "engine": engine, "workers": workers, "inputs": len(items), **counts,
            "rows": total, "seconds": round(seconds, 2),
            "first_row_s": round(t_first - t0, 2) if t_first else None,  # pool/cluster start + model loading
            "images_per_s": round(counts["new"] / seconds, 3) if seconds > 0 and counts["new"] else None}


def _progress(total: int, engine: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"batch ({engine})", unit="img", disable=not enabled, dynamic_ncols=True)


def _remove_parts(folder: Path) -> None:
    for j in folder.glob("*.jsonl"):
        j.unlink()
    try:
        folder.rmdir()
    except OSError:  # someone else's file in there: leave it
        pass
