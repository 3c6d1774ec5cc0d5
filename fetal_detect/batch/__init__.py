"""Batch analysis of whole archives: one row per image, resumable, on a process pool or Ray Data.

``run_batch(INPUT, out)`` reads a folder (images and DICOM, recursively), a glob, or a CSV with a
``path`` column (and optionally ``pixel_size_mm``), runs :class:`fetal_detect.pipeline.analyze.Analyzer`
on every image and writes one row per image, :meth:`fetal_detect.result.Result.row` (``path, sha256, plane,
plane_confidence, measurers``, the measurer table's columns ``hc_mm, bpd_mm, ..., nt_mm, ...``, then
``quality, status, reason, pixel_size_mm, pixel_size_source, pixel_size_detail, models, version, processing_ms``) to Parquet or CSV.

Both engines run the same per-image function, :meth:`Worker.__call__` (path + pixel size -> row),
with one :class:`Worker` (so one set of loaded models) per process: ``local`` in a
``multiprocessing`` pool initializer, ``ray`` in a Ray Data actor's ``__init__``.

Resume: each finished row is appended at once to a JSON-lines journal in ``<out>.parts/``; on start
the hashes already in ``<out>`` and in the journals are skipped, so a killed run loses only the
rows in flight. At the end journals and the previous output are consolidated into ``<out>``
(written to a temporary file, then renamed) and the journals are removed. Bad files become rows
with ``status="error"`` and a one-line message; they never stop the batch.
"""
from fetal_detect.batch.engines import ENGINES, run_local, run_ray
from fetal_detect.batch.inputs import IMAGE_SUFFIXES, Item, collect_inputs, file_sha256, read_input_csv
from fetal_detect.batch.output import FORMATS, consolidate, read_rows
from fetal_detect.batch.runner import run_batch
from fetal_detect.batch.worker import TIMING, BatchConfig, Worker

__all__ = ["ENGINES", "FORMATS", "IMAGE_SUFFIXES", "TIMING", "BatchConfig", "Item", "Worker", "collect_inputs",
           "consolidate", "file_sha256", "read_input_csv", "read_rows", "run_batch", "run_local", "run_ray"]
