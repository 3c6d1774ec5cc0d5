"""``serve``: the REST API and the web page under uvicorn (models load once, at start-up)."""
import os

from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime import BACKEND_CHOICES

ALLOWED_HOSTS_ENV = "FETAL_DETECT_ALLOWED_HOSTS"


def register(sub):
    p = sub.add_parser("serve", help="web service: REST /api/v1/analyze and a page at / (offline)",
                       description="Start the web service (FastAPI + uvicorn). See docs/serve.md (limits, "
                                   "threat model, reverse-proxy settings).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--weights", action="append", default=[], metavar="[TASK=]FILE",
                   help="model per task, e.g. hc-seg=weights/hc-seg.pt (repeatable; default: shipped weights)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto (default): a parity-checked INT8 ONNX model when there is one, else PyTorch")
    p.add_argument("--workers", type=int, default=2, help="analysis threads, one model copy each (default 2)")
    p.add_argument("--queue", type=int, default=8, help="jobs waiting for a worker before 503 (default 8)")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest upload in MB (default 20)")
    p.add_argument("--max-pixels", type=int, default=None, help="largest frame in pixels (default 40,000,000)")
    p.add_argument("--job-deadline", type=float, default=60, metavar="S",
                   help="seconds one analysis may run before it is stopped with 413 (default 60)")
    p.add_argument("--allowed-hosts", metavar="H1,H2",
                   help=f"Host header values accepted (DNS rebinding; '*' = any; env {ALLOWED_HOSTS_ENV}); default "
                        "localhost, 127.0.0.1, ::1 and --host; any host when --host is 0.0.0.0 (set it there)")
    p.add_argument("--allowed-origins", metavar="URL,...", default="",
                   help="other web origins allowed to POST (default none: cross-site posts get 403)")
    p.add_argument("--max-client-connections", type=int, default=32, metavar="N",
                   help="open connections per client address before its API requests get 503 (/health and "
                        "/ready stay open; 0 = no cap; raise it behind a reverse proxy; default 32)")
    p.add_argument("--header-timeout", type=float, default=10, metavar="S",
                   help="seconds a connection has to send its request headers before it is closed (default 10)")
    p.add_argument("--save-dir", help="keep each analysed frame (PNG) and its JSON here, owner-only; nothing is kept otherwise")
    p.add_argument("--save-max-files", type=int, default=None, metavar="N",
                   help="with --save-dir: keep only the newest N results")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def allowed_hosts(host: str, given: str | None) -> list[str]:
    """The Host header values to accept: given ones, else localhost + the bound address (any for 0.0.0.0/::)."""
    from fetal_detect.serve.guard import DEFAULT_ALLOWED_HOSTS

    given = given or os.environ.get(ALLOWED_HOSTS_ENV)
    if given:  # loopback names stay allowed (the container HEALTHCHECK uses them; rebinding needs other names)
        return list(dict.fromkeys([*DEFAULT_ALLOWED_HOSTS, *(h.strip() for h in given.split(",") if h.strip())]))
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return list(dict.fromkeys([*DEFAULT_ALLOWED_HOSTS, host]))


def run(args) -> int:
    from fetal_detect.io import MAX_PIXELS
    from fetal_detect.pipeline.analyze import parse_weights
    from fetal_detect.serve.app import API_KEY_ENV, create_app
    from fetal_detect.serve.server import make_server

    if not (0 < args.port < 65536):
        raise FetalDetectError(f"--port must be 1-65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise FetalDetectError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    for flag, value in (("--job-deadline", args.job_deadline), ("--header-timeout", args.header_timeout)):
        if not value > 0:
            raise FetalDetectError(f"{flag} must be > 0 s, got {value}")
    hosts = allowed_hosts(args.host, args.allowed_hosts)
    app = create_app(parse_weights(args.weights) or None, backend=args.backend, max_upload_mb=args.max_upload_mb,
                     max_pixels=args.max_pixels or MAX_PIXELS, workers=args.workers, queue=args.queue,
                     save_dir=args.save_dir, save_max_files=args.save_max_files, allowed_hosts=hosts,
                     allowed_origins=[o.strip() for o in args.allowed_origins.split(",") if o.strip()],
                     max_client_connections=args.max_client_connections, job_deadline_s=args.job_deadline)
    key = "required" if os.environ.get(API_KEY_ENV) else "off"
    print(f"fetal-detect serve: http://{args.host}:{args.port}/  (API docs /docs, API key {key})", flush=True)
    if hosts == ["*"]:
        print("fetal-detect serve: any Host header is accepted (bound to all interfaces): set --allowed-hosts "
              "to this server's names", flush=True)
    make_server(app, args.host, args.port, args.log_level, header_timeout_s=args.header_timeout).run()
    return 0
