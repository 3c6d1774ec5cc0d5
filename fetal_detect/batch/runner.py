"""``run_batch``: inputs -> engine -> journal -> one output file, resumable."""
from __future__ import annotations

import os
import time
from pathlib import Path

from fetal_detect.batch.engines import ENGINES, run_local, run_ray
from fetal_detect.batch.inputs import collect_inputs
from fetal_detect.batch.output import Journal, _remove_parts, consolidate, output_format, parts_dir, read_rows
from fetal_detect.batch.worker import BatchConfig
from fetal_detect.errors import FetalDetectError
from fetal_detect.result import STATUSES

def run_batch(src: str | Path, out: str | Path, task: str = "auto", engine: str = "local", workers: int | None = None,
              fmt: str | None = None, weights=None, overlays: str | Path | None = None,
              pixel_size_mm: float | None = None, address: str | None = None, retry_errors: bool = False,
              progress: bool = True, backend: str = "auto", strict_plane: bool = False) -> dict:
    """Analyse every image of ``src`` into ``out``; returns a summary (counts, seconds, images/s)."""
    from fetal_detect.pipeline.analyze import TASKS, parse_weights

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
    cfg = BatchConfig(task=task, weights=parse_weights(weights, task), pixel_size_mm=pixel_size_mm,
                      overlays=str(overlays) if overlays else None, skip_hashes=skip, backend=backend,
                      strict_plane=strict_plane)
    rows = run_local(items, cfg, workers) if engine == "local" else run_ray(items, cfg, workers, address)
    counts = {"new": 0, "skipped": 0, **{s: 0 for s in STATUSES}}
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
            counts[row["status"]] += 1
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
