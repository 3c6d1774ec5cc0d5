"""The web service: ``POST /api/v1/analyze``, ``/health``, ``/ready``, ``/measurers``, offline API docs and the page at ``/``.

``create_app(...)`` builds the FastAPI app (tests inject the model); ``fetal-detect serve`` runs it under
uvicorn. Models load once, in the background at start-up, one :class:`~fetal_detect.pipeline.analyze.Analyzer`
per worker thread (Ultralytics models are not thread-safe). At most ``workers + queue`` analyses are
admitted at a time, and none while the estimated queued work (frames x pixels at the measured speed)
passes ``max_wait_s``; beyond that the answer is 503 with an honest ``Retry-After``. Each job has a
deadline and stops when its client disconnects. Every error is a JSON body
``{"status": "error", "error": MESSAGE, "code": HTTP_STATUS}``; user errors are 4xx, never 500.
The worker pool (``WorkerPool``, ``JobContext``, ``Busy``; re-exported here) is in
:mod:`fetal_detect.serve.pool`; guards (Host, cross-site posts, per-client connections, API key, body
size and time) in :mod:`fetal_detect.serve.guard`; the uvicorn server with its connection timeouts in
:mod:`.server`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import warnings
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fetal_detect import __version__, measurers
from fetal_detect.errors import FetalDetectError
from fetal_detect.io import MAX_FRAMES, MAX_PIXELS
from fetal_detect.serve.guard import API_KEY_ENV, DEFAULT_ALLOWED_HOSTS, ApiGuard, ServiceGuard, error_response
from fetal_detect.serve.pool import (Busy, JobContext, WorkerPool, default_analyzer_factory,  # noqa: F401 (re-exported)
                                     preload, warm_up)

log = logging.getLogger("fetal_detect.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {  # the pages may load nothing from elsewhere (no CDN), and images only from data:/blob: URLs
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small form fields around the file
ANALYZE_FORM = {  # documented by hand: the endpoint parses the form itself to enforce the size limit first
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "PNG, JPEG, BMP, TIFF or DICOM (still or multi-frame cine); sniffed, not trusted"},
            "task": {"type": "string", "enum": list(measurers.choices()), "default": "auto",
                     "description": "auto: classify the plane, run what the measurer table routes it to; or one "
                                    "measurement (GET /measurers lists them)"},
            "pixel_size_mm": {"type": "number", "description": "mm per pixel; wins over the DICOM calibration and the on-screen ruler"},
            "include_image": {"type": "boolean", "default": False,
                              "description": "add the analysed frame as a PNG data URL (frame_png)"},
            "overlay": {"type": "boolean", "default": False,
                        "description": "add a server-drawn overlay as a PNG data URL (overlay_png)"},
            "strict_plane": {"type": "boolean", "default": False,
                             "description": "NT: refuse a doubtful mid-sagittal plane (status refused) instead of "
                                            "measuring it with plane_ok false"}}}}}},
    "responses": {"200": {"description": "the result schema (fetal_detect.result.Result): status, reason, plane, "
                                         "measurements (mm), units, quality, calibration, overlay primitives, "
                                         "models; plus image and image_quality"},
                  "400": {"description": "bad or corrupt file, bad field"}, "401": {"description": "API key"},
                  "413": {"description": "too large (bytes, pixels or frames)"},
                  "415": {"description": "unsupported format"},
                  "503": {"description": "busy (Retry-After) or models not loaded"}},
}


def create_app(weights: dict | None = None, max_upload_mb: float = 20, max_pixels: int = MAX_PIXELS,
               workers: int = 2, queue: int = 8, api_key: str | None = None, save_dir: str | Path | None = None,
               max_frames: int = MAX_FRAMES, analyzer_factory: Callable[[], object] | None = None,
               allowed_hosts=DEFAULT_ALLOWED_HOSTS, allowed_origins=(), max_client_connections: int = 32,
               job_deadline_s: float = 60, max_wait_s: float = 60, body_timeout_s: float = 120,
               body_idle_s: float = 15, save_max_files: int | None = None, backend: str = "auto"):
    """Build the app. ``weights`` maps task -> file (``{"hc-seg": "best.pt"}``; None: the shipped ones).

    ``max_upload_mb`` caps the upload (413), ``max_pixels`` one frame (decompression bombs, 413),
    ``max_frames`` a cine; ``workers`` analysis threads plus ``queue`` waiting jobs before 503, and no new
    job while over ``max_wait_s`` of work is queued; ``job_deadline_s`` per analysis (413 after);
    ``api_key`` (default ``$FETAL_DETECT_API_KEY``) is then required on ``/api/*`` as ``X-API-Key`` or
    ``Authorization: Bearer``; ``allowed_hosts`` for the Host header (``"*"``: any), ``allowed_origins``
    that may post cross-site; ``max_client_connections`` per client address (0: no cap);
    ``body_timeout_s``/``body_idle_s`` for reading an upload (408); ``save_dir`` keeps each analysed frame
    (PNG, no DICOM header) and its JSON, owner-only, the newest ``save_max_files`` pairs when given;
    nothing is kept otherwise. ``analyzer_factory`` replaces ``Analyzer(weights, backend=backend)`` (tests
    inject stubs); ``backend``: ``runtime.BACKEND_CHOICES`` (auto: a verified INT8 ONNX when there is one).
    """
    from contextlib import asynccontextmanager

    from fetal_detect.serve.analysis import analyze_upload, parse_pixel_size, public_paths
    from fetal_detect.serve.store import save_result

    logging.getLogger("pydicom").setLevel(logging.ERROR)  # its warnings may quote tag values
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # no warnings that quote values
    api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    save_dir = Path(save_dir) if save_dir else None
    pool = WorkerPool(analyzer_factory or default_analyzer_factory(weights, backend), workers, queue,
                      job_deadline_s=job_deadline_s, max_wait_s=max_wait_s)

    @asynccontextmanager
    async def lifespan(app):
        pool.start()
        yield
        pool.shutdown()

    app = FastAPI(title="fetal-detect", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Fetal ultrasound biometry (HC/BPD/OFD, NT, CNS) from an image or DICOM upload.")
    app.state.pool, app.state.api_key = pool, api_key
    app.state.limits = {"max_upload_bytes": max_bytes, "max_pixels": max_pixels, "max_frames": max_frames,
                        "workers": workers, "queue": queue, "job_deadline_s": job_deadline_s,
                        "max_wait_s": max_wait_s, "body_timeout_s": body_timeout_s}
    error = error_response

    @app.exception_handler(FetalDetectError)
    async def _user_error(request, exc: FetalDetectError):
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Busy) else None
        return error(exc.status, str(exc), headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request, exc):
        log.info("client disconnected during %s %s (its analysis, if any, stopped)", request.method,
                 request.url.path)
        return Response(status_code=499)  # nobody reads it

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return error(400, "invalid request: " + "; ".join(str(e.get("msg")) for e in exc.errors())[:300])

    @app.exception_handler(Exception)
    async def _internal_error(request, exc):
        log.error("internal error on %s: %s", request.url.path, type(exc).__name__)
        return error(500, "internal error (see the server log)")

    app.add_middleware(ApiGuard, api_key=api_key, max_body=max_bytes + FORM_OVERHEAD_BYTES,
                       max_upload_mb=max_upload_mb, body_timeout_s=body_timeout_s, body_idle_s=body_idle_s)
    app.add_middleware(ServiceGuard, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins,
                       max_client_connections=max_client_connections)

    @app.get("/health", tags=["service"], summary="Liveness: the process answers")
    async def health():
        return {"status": "alive", "version": __version__}

    @app.get("/ready", tags=["service"], summary="Readiness: models loaded (503 until then)")
    async def ready():
        body = {"ready": pool.ready.is_set(), "models": pool.models, "load_s": pool.load_s,
                "version": __version__, "limits": app.state.limits}
        if pool.error:
            body["error"] = pool.error
        return JSONResponse(public_paths(body), 200 if body["ready"] else 503)

    @app.post("/api/v1/analyze", tags=["analysis"], openapi_extra=ANALYZE_FORM,
              summary="Upload an image or DICOM; get plane, measurements (mm), detections and quality")
    async def analyze(request: Request):
        async with request.form(max_files=1, max_fields=8, max_part_size=64 * 1024) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise FetalDetectError("no file: send the image as multipart form field 'file'")
            data = await _read_limited(upload, max_bytes, max_upload_mb)
            task = str(form.get("task") or "auto").strip().lower()[:40]
            px = parse_pixel_size(form.get("pixel_size_mm"))
            flags = {k: _flag(form.get(k)) for k in ("include_image", "overlay", "strict_plane")}
        ctx = JobContext(job_deadline_s)
        job = asyncio.ensure_future(pool.run(analyze_upload, data, task, px, max_bytes, max_pixels, max_frames,
                                             flags["include_image"], flags["overlay"], flags["strict_plane"],
                                             ctx=ctx))
        del data
        resp, frame = await _unless_disconnected(request, job, ctx)
        if save_dir is not None:
            resp["saved_as"] = await asyncio.to_thread(save_result, save_dir, frame, resp, save_max_files)
        return JSONResponse(resp)

    @app.get("/measurers", tags=["service"], summary="The measurements this server offers (the measurer table; no key needed)")
    async def measurer_table():
        return {"choices": list(measurers.choices()), "measurers": measurers.describe()}

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC_DIR / "docs.html", headers=PAGE_HEADERS)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _unless_disconnected(request: Request, job: asyncio.Future, ctx: JobContext, poll_s: float = 0.5):
    """The job's result; if the client disconnects first, the job is cancelled (it stops at its next check)."""
    while True:
        done, _ = await asyncio.wait({job}, timeout=poll_s)
        if done:
            return job.result()
        if await request.is_disconnected():
            ctx.cancelled.set()
            job.cancel()
            raise ClientDisconnect()  # logged once, as one line, by the handler


async def _read_limited(upload, max_bytes: int, max_upload_mb: float) -> bytes:
    """Read the uploaded part, refusing (413) as soon as it passes ``max_bytes``."""
    chunks, total = [], 0
    while chunk := await upload.read(1024 * 1024):
        total += len(chunk)
        if total > max_bytes:
            raise FetalDetectError(f"upload is over the {max_upload_mb:g} MB limit", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _flag(v) -> bool:
    return str(v or "").strip().lower() in ("1", "true", "yes", "on")
