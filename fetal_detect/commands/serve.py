"""``serve``: the REST API and the web page under uvicorn (models load once, at start-up)."""
import os

from fetal_detect.errors import FetalDetectError


def register(sub):
    p = sub.add_parser("serve", help="web service: REST /api/v1/analyze and a page at / (offline)",
                       description="Start the web service (FastAPI + uvicorn). See docs/serve.md.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--weights", action="append", default=[], metavar="TASK=FILE",
                   help="model per task, e.g. hc-seg=weights/hc-seg.pt (repeatable; default: shipped weights)")
    p.add_argument("--workers", type=int, default=2, help="analysis threads, one model copy each (default 2)")
    p.add_argument("--queue", type=int, default=8, help="jobs waiting for a worker before 503 (default 8)")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload in MB (default 20)")
    p.add_argument("--max-pixels", type=int, default=None, help="largest frame in pixels (default 40,000,000)")
    p.add_argument("--save-dir", help="keep each analysed frame (PNG) and its JSON here; nothing is kept otherwise")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def parse_weights(items: list[str]) -> dict | None:
    out = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise FetalDetectError(f"--weights must be TASK=FILE (e.g. hc-seg=weights/hc-seg.pt), got '{item}'")
        out[task] = path
    return out or None


def run(args) -> int:
    import uvicorn

    from fetal_detect.io import MAX_PIXELS
    from fetal_detect.serve.app import API_KEY_ENV, create_app

    if not (0 < args.port < 65536):
        raise FetalDetectError(f"--port must be 1-65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise FetalDetectError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    app = create_app(parse_weights(args.weights), max_upload_mb=args.max_upload_mb,
                     max_pixels=args.max_pixels or MAX_PIXELS, workers=args.workers, queue=args.queue,
                     save_dir=args.save_dir)
    key = "required" if os.environ.get(API_KEY_ENV) else "off"
    print(f"fetal-detect serve: http://{args.host}:{args.port}/  (API docs /docs, API key {key})", flush=True)
    # connections beyond what the pool can admit are refused by uvicorn itself (503) before any body is read
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                limit_concurrency=4 * (args.workers + args.queue) + 16, timeout_keep_alive=5, server_header=False)
    return 0
