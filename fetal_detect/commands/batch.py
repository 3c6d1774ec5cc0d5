"""``batch INPUT --out results.parquet``: analyse a whole folder / glob / CSV, one row per image.

Resumable (re-running skips images whose SHA-256 is already in the output), on a local process
pool (default) or Ray Data (``--engine ray``). See :mod:`fetal_detect.batch` and docs/batch.md.
"""
from fetal_detect.batch import ENGINES, FORMATS
from fetal_detect.commands.analyze import add_common, routing_help


def register(sub):
    p = sub.add_parser("batch", help="analyse a folder, glob or CSV of images into one Parquet/CSV table",
                       description="One row per image: the result schema as a table row (path, sha256, plane, "
                                   "measurers, the measurer table's columns in mm, quality, status, reason, pixel size "
                                   "and its source, models, version, processing_ms). Re-running resumes.")
    p.add_argument("input", help="a folder (images and DICOM, recursive), a glob ('scans/**/*.png'), "
                                 "or a CSV with a 'path' column and an optional 'pixel_size_mm' column")
    p.add_argument("--out", required=True, help="output table (.parquet or .csv)")
    add_common(p, routing_help())
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="local: process pool on this machine; ray: Ray Data (pip install 'fetal-detect[ray]')")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes / Ray actors (default: CPU count; 0 = in this process, local only)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default=None,
                   help="output format (default: from the --out suffix, else parquet)")
    p.add_argument("--pixel-size", dest="pixel_size", metavar="MM",
                   help="mm per pixel for images with no CSV value (wins over DICOM and the on-screen ruler); "
                        "without either: DICOM calibration, else the ruler, else px")
    p.add_argument("--overlays", metavar="DIR", help="also write an overlay PNG per measured image here")
    p.add_argument("--address", help="join this Ray cluster (e.g. 'auto' or 'ray://head:10001') instead of "
                                     "starting a local one")
    p.add_argument("--retry-errors", action="store_true", help="re-run images whose earlier row is an error")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from fetal_detect.batch import run_batch
    from fetal_detect.commands import print_json
    from fetal_detect.commands.measure import positive_mm

    summary = run_batch(args.input, args.out, task=args.task, engine=args.engine, workers=args.workers, fmt=args.fmt,
                        weights=args.weights, overlays=args.overlays,
                        pixel_size_mm=positive_mm(args.pixel_size) if args.pixel_size else None,
                        address=args.address, retry_errors=args.retry_errors, progress=args.progress,
                        backend=args.backend, strict_plane=args.strict_plane)
    print_json(summary)
    return 0
