"""The web service: ``POST /api/v1/analyze``, ``/health``, ``/ready``, offline API docs and the page at ``/``.

``create_app(...)`` builds the FastAPI app (tests inject the model); ``fetal-detect serve`` runs it under
uvicorn. Models load once, in the background at start-up, one :class:`~fetal_detect.pipeline.analyze.Analyzer`
per worker thread (Ultralytics models are not thread-safe). At most ``workers + queue`` analyses are
admitted at a time; beyond that the answer is 503 with ``Retry-After``. Every error is a JSON body
``{"status": "error", "error": MESSAGE, "code": HTTP_STATUS}``; user errors are 4xx, never 500.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import queue as queue_mod
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError
from fetal_detect.io import MAX_PIXELS

log = logging.getLogger("fetal_detect.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"
API_KEY_ENV = "FETAL_DETECT_API_KEY"
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
            "task": {"type": "string", "enum": ["auto", "hc", "nt", "cns"], "default": "auto"},
            "pixel_size_mm": {"type": "number", "description": "mm per pixel; wins over the DICOM calibration and the on-screen ruler"},
            "include_image": {"type": "boolean", "default": False,
                              "description": "add the analysed frame as a PNG data URL (frame_png)"},
            "overlay": {"type": "boolean", "default": False,
                        "description": "add a server-drawn overlay as a PNG data URL (overlay_png)"}}}}}},
    "responses": {"200": {"description": "the report: status, task, plane, measurements (mm), units, detections, "
                                         "overlay primitives, image_quality, image, model, processing_ms"},
                  "400": {"description": "bad or corrupt file, bad field"}, "401": {"description": "API key"},
                  "413": {"description": "too large (bytes, pixels or frames)"},
                  "415": {"description": "unsupported format"},
                  "503": {"description": "busy (Retry-After) or models not loaded"}},
}


class Busy(FetalDetectError):
    """The worker pool is full or the models are not loaded yet: 503 with ``Retry-After`` seconds."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, status=503)
        self.retry_after_s = retry_after_s


class WorkerPool:
    """``workers`` threads, each holding its own Analyzer, with at most ``workers + queue`` jobs admitted."""

    def __init__(self, make_analyzer: Callable[[], object], workers: int = 2, queue: int = 8):
        if workers < 1 or queue < 0:
            raise FetalDetectError(f"workers must be >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers, self.capacity = workers, workers + queue
        self._make = make_analyzer
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="fetal-detect-worker")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._analyzers: queue_mod.Queue = queue_mod.Queue()
        self._lock = threading.Lock()
        self.in_flight, self.mean_job_s = 0, 1.0
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

    def retry_after_s(self) -> int:
        return int(min(60, max(1, math.ceil(self.mean_job_s * max(self.in_flight, 1) / self.workers))))

    async def run(self, fn: Callable, *args):
        """Run ``fn(analyzer, *args)`` on a worker; :class:`Busy` at once when full or not ready."""
        if not self.ready.is_set():
            raise Busy(f"models are not loaded{': ' + self.error if self.error else ' yet'}", 5)
        if not self._slots.acquire(blocking=False):
            raise Busy(f"busy: {self.capacity} analyses running or queued, retry later", self.retry_after_s())
        with self._lock:
            self.in_flight += 1
        try:
            fut = self._executor.submit(self._job, fn, args)
        except BaseException:
            self._release()
            raise
        fut.add_done_callback(lambda _: self._release())  # released when the work ends, even if the client left
        return await asyncio.wrap_future(fut)

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1
        self._slots.release()

    def _job(self, fn, args):
        analyzer = self._analyzers.get()
        t0 = time.perf_counter()
        try:
            return fn(analyzer, *args)
        finally:
            self._analyzers.put(analyzer)
            with self._lock:
                self.mean_job_s = 0.8 * self.mean_job_s + 0.2 * (time.perf_counter() - t0)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def preload(analyzer) -> dict:
    """Load every model the analyzer can build: the plane classifier when there is one, HC (must load),
    the other measurers when their weights exist."""
    from fetal_detect.serve.analysis import model_info

    models = {}
    classifier = analyzer.plane_classifier() if hasattr(analyzer, "plane_classifier") else None
    if classifier is not None:
        models["plane-cls"] = model_info("plane-cls", classifier)
    for kind in ("hc", "nt", "cns"):
        try:
            m = analyzer.measurer(kind)
        except Exception as e:  # only HC is required; the others load when their weights are there
            if kind == "hc":
                raise
            log.info("%s measurer not loaded: %s", kind, e)
            continue
        models[kind] = model_info(kind, m)
    return models


def warm_up(analyzer) -> None:
    """One throw-away analysis so the first real request does not pay for model fusing and set-up."""
    import numpy as np

    try:
        analyzer.analyze(np.zeros((64, 64), np.uint8), None, "auto")
    except FetalDetectError:
        pass  # "nothing found" on a black frame is expected


def default_analyzer_factory(weights: dict | None) -> Callable[[], object]:
    def make():
        from fetal_detect.pipeline.analyze import Analyzer

        return Analyzer(weights)

    return make


class ApiGuard:
    """ASGI middleware on ``/api/*``: the API key, and the body size (from Content-Length before reading,
    and counted while reading, so a chunked upload cannot fill the disk with a spooled form)."""

    def __init__(self, app, api_key: str | None, max_body: int, max_upload_mb: float):
        self.app, self.api_key, self.max_body, self.max_upload_mb = app, api_key, max_body, max_upload_mb

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key and not _key_ok(headers, self.api_key):
            return await _error(401, f"missing or wrong API key (send X-API-Key; the server has {API_KEY_ENV} set)",
                                {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        length = headers.get("content-length", "")
        too_big = f"upload is over the {self.max_upload_mb:g} MB limit"
        if length.isdigit() and int(length) > self.max_body:
            return await _error(413, too_big, {"Connection": "close"})(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise FetalDetectError(too_big, status=413)
            return message

        return await self.app(scope, counted, send)


def _error(status: int, message: str, headers: dict | None = None):
    """The one JSON error body of the service."""
    return JSONResponse({"status": "error", "error": message, "code": status}, status, headers=headers)


def create_app(weights: dict | None = None, max_upload_mb: float = 20, max_pixels: int = MAX_PIXELS,
               workers: int = 2, queue: int = 8, api_key: str | None = None, save_dir: str | Path | None = None,
               max_frames: int = 300, analyzer_factory: Callable[[], object] | None = None):
    """Build the app. ``weights`` maps task -> file (``{"hc-seg": "best.pt"}``; None: the shipped ones).

    ``max_upload_mb`` caps the upload (413), ``max_pixels`` one frame (decompression bombs, 413),
    ``workers`` analysis threads plus ``queue`` waiting jobs before 503; ``api_key`` (default
    ``$FETAL_DETECT_API_KEY``) is then required on ``/api/*`` as ``X-API-Key`` or ``Authorization: Bearer``;
    ``save_dir`` keeps each analysed frame (PNG, no DICOM header) and its JSON; nothing is kept otherwise.
    ``analyzer_factory`` replaces ``Analyzer(weights)`` (tests inject stubs).
    """
    from contextlib import asynccontextmanager

    from fetal_detect.serve.analysis import analyze_upload, parse_pixel_size

    logging.getLogger("pydicom").setLevel(logging.ERROR)  # its warnings may quote tag values
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # no warnings that quote values
    api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    save_dir = Path(save_dir) if save_dir else None
    pool = WorkerPool(analyzer_factory or default_analyzer_factory(weights), workers, queue)

    @asynccontextmanager
    async def lifespan(app):
        pool.start()
        yield
        pool.shutdown()

    app = FastAPI(title="fetal-detect", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Fetal ultrasound biometry (HC/BPD/OFD, NT, CNS) from an image or DICOM upload.")
    app.state.pool, app.state.api_key = pool, api_key
    app.state.limits = {"max_upload_bytes": max_bytes, "max_pixels": max_pixels, "max_frames": max_frames,
                        "workers": workers, "queue": queue}

    error = _error

    @app.exception_handler(FetalDetectError)
    async def _user_error(request, exc: FetalDetectError):
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Busy) else None
        return error(exc.status, str(exc), headers)

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
                       max_upload_mb=max_upload_mb)

    @app.get("/health", tags=["service"], summary="Liveness: the process answers")
    async def health():
        return {"status": "alive", "version": __version__}

    @app.get("/ready", tags=["service"], summary="Readiness: models loaded (503 until then)")
    async def ready():
        body = {"ready": pool.ready.is_set(), "models": {k: _public(v) for k, v in pool.models.items()},
                "load_s": pool.load_s, "version": __version__, "limits": app.state.limits}
        if pool.error:
            body["error"] = pool.error
        return JSONResponse(body, 200 if body["ready"] else 503)

    @app.post("/api/v1/analyze", tags=["analysis"], openapi_extra=ANALYZE_FORM,
              summary="Upload an image or DICOM; get plane, measurements (mm), detections and quality")
    async def analyze(request: Request):
        async with request.form(max_files=1, max_fields=8, max_part_size=64 * 1024) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise FetalDetectError("no file: send the image as multipart form field 'file'")
            data = await _read_limited(upload, max_bytes, max_upload_mb)
            task = str(form.get("task") or "auto").strip().lower()
            px = parse_pixel_size(form.get("pixel_size_mm"))
            flags = {k: _flag(form.get(k)) for k in ("include_image", "overlay")}
        resp, frame = await pool.run(analyze_upload, data, task, px, max_bytes, max_pixels, max_frames,
                                     flags["include_image"], flags["overlay"])
        if save_dir is not None:
            resp["saved_as"] = _save(save_dir, frame, resp)
        return JSONResponse(resp)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC_DIR / "docs.html", headers=PAGE_HEADERS)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


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


def _key_ok(headers: dict, api_key: str) -> bool:
    given = headers.get("x-api-key") or ""
    auth = headers.get("authorization") or ""
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), api_key.encode())


def _public(info: dict) -> dict:
    from fetal_detect.serve.analysis import _public_model

    return _public_model(info)


def _save(save_dir: Path, frame, resp: dict) -> str:
    """Keep the analysed frame as PNG (pixels only, no DICOM header) and the response as JSON."""
    from fetal_detect.report import write_image, write_json

    stem = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    write_image(save_dir / f"{stem}.png", frame)
    write_json(save_dir / f"{stem}.json", {k: v for k, v in resp.items() if not k.endswith("_png")})
    return stem
