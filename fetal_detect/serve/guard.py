"""ASGI guards in front of the app: Host, cross-site posts, per-client connections, API key, body size and time.

- :class:`ServiceGuard` (every path): the ``Host`` header must be an allowed host (DNS rebinding); a
  ``POST`` whose ``Sec-Fetch-Site`` or ``Origin`` says another site is refused (a cross-site form post
  needs no CORS preflight); a client holding more than ``max_client_connections`` open connections
  gets 503 on everything but ``/health`` and ``/ready`` (counted by :mod:`fetal_detect.serve.server`).
- :class:`ApiGuard` (``/api/*``): the API key, the body size (Content-Length before reading and counted
  while reading) and the body time (``body_timeout_s`` in all, ``body_idle_s`` between chunks: 408).
"""
from __future__ import annotations

import asyncio
import hmac

from fastapi.responses import JSONResponse

from fetal_detect.errors import FetalDetectError

API_KEY_ENV = "FETAL_DETECT_API_KEY"
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/health", "/ready")  # liveness and readiness stay outside the per-client cap
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def error_response(status: int, message: str, headers: dict | None = None):
    """The one JSON error body of the service (message cut to 300 characters, server paths reduced)."""
    from fetal_detect.serve.analysis import public_text

    message = public_text(str(message))
    if len(message) > 300:
        message = message[:300] + "..."
    return JSONResponse({"status": "error", "error": message, "code": status}, status, headers=headers)


def _headers(scope) -> dict:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def host_name(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` -> the lower-case name without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed) -> bool:
    name = host_name(host)
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class ServiceGuard:
    def __init__(self, app, allowed_hosts=DEFAULT_ALLOWED_HOSTS, allowed_origins=(), max_client_connections=32):
        self.app, self.allowed_hosts = app, tuple(allowed_hosts)
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.max_client_connections = max_client_connections

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        refusal = self.refusal(scope, headers)
        if refusal:
            return await error_response(*refusal)(scope, receive, send)
        return await self.app(scope, receive, send)

    def refusal(self, scope, headers: dict) -> tuple | None:
        host = headers.get("host", "")
        if not host_allowed(host, self.allowed_hosts):
            return 400, "Host header not allowed (see --allowed-hosts)"
        if scope["method"] in UNSAFE_METHODS:
            site = headers.get("sec-fetch-site", "")
            origin = headers.get("origin", "").rstrip("/").lower()
            if site in ("cross-site", "same-site") and origin not in self.allowed_origins:
                return 403, f"cross-site request refused (Sec-Fetch-Site: {site[:20]})"
            if origin and origin not in self.allowed_origins and origin.split("://", 1)[-1] != host.strip().lower():
                return 403, "cross-origin request refused (Origin is not this server)"
        if self.max_client_connections and scope["path"] not in OPEN_PATHS:
            from fetal_detect.serve.server import client_connections

            peer = (scope.get("client") or ("?", 0))[0]
            n = client_connections(peer)
            if n > self.max_client_connections:
                return 503, f"too many open connections from this client ({n})", {"Retry-After": "10"}
        return None


class ApiGuard:
    """The API key, and the body size and time limits on ``/api/*``."""

    def __init__(self, app, api_key: str | None, max_body: int, max_upload_mb: float,
                 body_timeout_s: float = 120, body_idle_s: float = 15):
        self.app, self.api_key, self.max_body, self.max_upload_mb = app, api_key, max_body, max_upload_mb
        self.body_timeout_s, self.body_idle_s = body_timeout_s, body_idle_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        if self.api_key and not key_ok(headers, self.api_key):
            return await error_response(401, f"missing or wrong API key (send X-API-Key; the server has "
                                             f"{API_KEY_ENV} set)", {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        length = headers.get("content-length", "")
        too_big = f"upload is over the {self.max_upload_mb:g} MB limit"
        if length.isdigit() and int(length) > self.max_body:
            return await error_response(413, too_big, {"Connection": "close"})(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        state = {"seen": 0, "done": False}

        async def guarded():
            if state["done"]:  # after the body: disconnect polling passes straight through
                return await receive()
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(left, self.body_idle_s)))
            except asyncio.TimeoutError:
                what = f"{self.body_timeout_s:g} s in all" if left <= self.body_idle_s else \
                    f"{self.body_idle_s:g} s without data"
                raise FetalDetectError(f"upload too slow ({what}); send the file in one go", status=408) from None
            state["seen"] += len(message.get("body", b""))
            state["done"] = message.get("type") != "http.request" or not message.get("more_body", False)
            if state["seen"] > self.max_body:
                raise FetalDetectError(too_big, status=413)
            return message

        return await self.app(scope, guarded, send)


def key_ok(headers: dict, api_key: str) -> bool:
    given = headers.get("x-api-key") or ""
    auth = headers.get("authorization") or ""
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), api_key.encode())
