"""uvicorn with connection guards, so idle or slow clients cannot take liveness down.

uvicorn's ``limit_concurrency`` counts idle connections (56 idle sockets made every answer, ``/health``
too, a plain-text 503) and a connection that never sends a request line is kept forever. Here instead:

- no ``limit_concurrency``; the analysis pool does admission (503 + Retry-After) and idle sockets cost
  an event-loop entry only, so ``/health`` keeps answering;
- ``header_timeout_s``: a connection must send complete request headers within this time of opening
  (and of its previous response), else it is closed: idle and slowloris sockets are dropped;
- open connections are counted per client address (:func:`client_connections`), which
  :class:`~fetal_detect.serve.guard.ServiceGuard` uses to answer 503 to a client over its cap, except on
  ``/health`` and ``/ready``; beyond ``max_connections`` in all, new sockets are closed at once;
- ``timeout_graceful_shutdown``: on SIGTERM, requests still running after it are cancelled;
- the access log never shows query-string secrets (``api_key=...``, ``token=...``).
"""
from __future__ import annotations

import logging
import re
from collections import Counter

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

_CONNECTIONS: Counter = Counter()
HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 500
_SECRET_PARAM = re.compile(r"(?i)([?&][^=&#]*(?:key|token|secret|password|auth)[^=&#]*=)[^&#\s]*")


def client_connections(peer: str) -> int:
    """Open connections from ``peer`` (IP address) to this process."""
    return _CONNECTIONS.get(peer, 0)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a header timeout and per-client connection counting."""

    header_timeout_s = HEADER_TIMEOUT_S
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else "?"
        self._header_timer = None
        _CONNECTIONS[self._peer] += 1
        if len(self.connections) > self.max_connections:
            self.logger.warning("over %d open connections: closing a new one", self.max_connections)
            transport.close()
            return
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()  # no complete request headers in time: idle or slowloris

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_header_timer()  # a request is in: the body has its own deadline (ApiGuard)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this keep-alive connection gets the same time
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        peer = getattr(self, "_peer", None)
        if peer is not None:
            _CONNECTIONS[peer] -= 1
            if _CONNECTIONS[peer] <= 0:
                del _CONNECTIONS[peer]
            self._peer = None
        super().connection_lost(exc)


class RedactSecrets(logging.Filter):
    """Access-log filter: query parameters named like key/token/secret/password/auth lose their values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SECRET_PARAM.sub(r"\1REDACTED", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _SECRET_PARAM.sub(r"\1REDACTED", record.msg)
        return True


def make_server(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                header_timeout_s: float = HEADER_TIMEOUT_S, keep_alive_s: float = 5,
                graceful_shutdown_s: int = 10, max_connections: int = MAX_CONNECTIONS) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the guards above (``server.run()`` serves until SIGTERM/SIGINT)."""
    protocol = type("FetalDetectH11", (GuardedH11Protocol,),
                    {"header_timeout_s": header_timeout_s, "max_connections": max_connections})
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol,
                            timeout_keep_alive=keep_alive_s, timeout_graceful_shutdown=graceful_shutdown_s,
                            server_header=False, limit_concurrency=None)
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    return uvicorn.Server(config)
