"""The Roboflow API key and client: every call goes through :func:`_client_call`, which redacts the key
from messages, log records and the client's own output, and turns client errors into one line."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path

from fetal_detect.data.roboflow_ref import RoboflowRef
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)


def resolve_api_key(explicit: str | None = None, workspace: str | None = None) -> str:
    """``--api-key``, else ``ROBOFLOW_API_KEY``, else the Roboflow config file (per workspace)."""
    if explicit:
        return explicit
    if os.environ.get("ROBOFLOW_API_KEY"):
        return os.environ["ROBOFLOW_API_KEY"]
    try:
        from roboflow.config import load_roboflow_api_key

        key = load_roboflow_api_key(workspace)
    except Exception:  # an unreadable config file is the same as none
        key = None
    if not key:
        raise FetalDetectError("no Roboflow API key: set ROBOFLOW_API_KEY, run `roboflow login`, or pass --api-key")
    return key


class _Redactor(logging.Filter):
    """Replaces the API key in text, log records and client output with ``***``."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def __call__(self, text) -> str:
        text = str(text)
        return text.replace(self.secret, "***") if self.secret else text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self(record.getMessage())
        record.args = ()
        return True


class _ClientOutput(io.TextIOBase):
    """Stands in for stdout while the client runs: its chatter becomes redacted debug log lines."""

    def __init__(self, redact: _Redactor):
        self.redact = redact

    def write(self, s):
        for line in str(s).replace("\r", "\n").splitlines():
            if line.strip():
                log.debug("roboflow: %s", self.redact(line.strip()))
        return len(s)


def _one_line(text: str, limit: int = 240) -> str:
    text = str(text).strip()
    try:  # Roboflow answers {"error": {"message": ...}} or {"error": "..."}
        body = json.loads(text)
        err = body.get("error", body) if isinstance(body, dict) else body
        text = str(err.get("message", err) if isinstance(err, dict) else err)
    except (ValueError, AttributeError):
        pass
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


@contextlib.contextmanager


def _client_call(key: str, what: str):
    """Run client code with its stdout chatter sent to the debug log, logs and errors redacted, errors as one line."""
    redact = _Redactor(key)
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.addFilter(redact)
    try:
        with contextlib.redirect_stdout(_ClientOutput(redact)):
            yield redact
    except FetalDetectError as e:
        raise FetalDetectError(f"{what}: {redact(e)}", getattr(e, "status", 400)) from None
    except Exception as e:
        import requests

        if isinstance(e, requests.exceptions.ChunkedEncodingError):
            msg = f"{what}: the connection closed early (truncated transfer)"
        elif isinstance(e, requests.ConnectionError):
            msg = f"cannot reach the Roboflow API at {_api_url()} ({type(e).__name__})"
        elif isinstance(e, requests.Timeout):
            msg = f"the Roboflow API at {_api_url()} timed out"
        else:
            msg = f"{what}: {_one_line(redact(e)) or type(e).__name__}"
        raise FetalDetectError(redact(msg)) from None
    finally:
        for h in handlers:
            h.removeFilter(redact)


def _api_url() -> str:
    return getattr(sys.modules.get("roboflow.config"), "API_URL", os.environ.get("API_URL", "https://api.roboflow.com"))


def _roboflow():
    """The ``roboflow`` package with its URL constants re-read from the environment.

    The client binds ``API_URL`` at import time; ``refresh_region_urls`` is its own way to re-resolve
    them in a running process, so a changed ``API_URL`` (tests, a self-hosted mirror) is honoured.
    """
    try:
        import roboflow
        from roboflow import config
    except ImportError:
        raise FetalDetectError("the 'roboflow' package is not installed (pip install roboflow)") from None
    if hasattr(config, "refresh_region_urls"):
        config.refresh_region_urls()
    return roboflow


def open_project(ref: RoboflowRef, key: str):
    """The client's project object for ``ref``; a wrong key is a one-line error without the key."""
    rf_pkg = _roboflow()
    with _client_call(key, f"Roboflow rejected the API key at {_api_url()} (check ROBOFLOW_API_KEY or --api-key)"):
        rf = rf_pkg.Roboflow(api_key=key)
        if getattr(rf, "onboarding", False) or not hasattr(rf, "current_workspace"):
            raise FetalDetectError("the key is not a Roboflow API key")
    with _client_call(key, f"Roboflow {ref.workspace}/{ref.project}"):
        return rf.workspace(ref.workspace).project(ref.project)


def open_version(ref: RoboflowRef, key: str):
    """(project, version) client objects for ``ref``."""
    project = open_project(ref, key)
    with _client_call(key, f"Roboflow {ref.slug}"):
        return project, project.version(ref.version)

VERSION_KEYS = ("workspace", "project", "version", "format", "id", "created", "images", "splits",
                "preprocessing", "augmentation")  # what identifies a version's content (compared on re-sync)


def _version_meta(project, version, ref: RoboflowRef) -> dict:
    """Roboflow metadata for the manifest: the version (immutable once generated) and its project.

    Only :data:`VERSION_KEYS` decide whether a cached copy is current; the project's class counts
    change with every annotation made after the version and are kept for information only.
    """
    meta = {**{k: getattr(ref, k) for k in ("workspace", "project", "version", "format")},
            **{k: getattr(version, k, None) for k in ("id", "created", "images", "splits", "preprocessing",
                                                      "augmentation")},
            "project_info": {k: getattr(project, k, None) for k in ("name", "type", "classes")}}
    return json.loads(json.dumps(meta, default=str))


def _same_version(a: dict | None, b: dict) -> bool:
    return bool(a) and all(a.get(k) == b.get(k) for k in VERSION_KEYS)


def _export_link(version, ref: RoboflowRef, key: str) -> str:
    from roboflow.adapters import rfapi

    with _client_call(key, f"Roboflow export of {ref.slug} ({ref.format})"):
        if ref.format not in (getattr(version, "exports", None) or []):
            version.export(ref.format)  # the client asks Roboflow to generate it and waits
        info = rfapi.get_version_export(key, ref.workspace, ref.project, str(ref.version), ref.format)
        if info.get("ready") is False or not isinstance(info.get("export"), dict) or not info["export"].get("link"):
            raise FetalDetectError("the export is not ready; try again in a minute")
        return info["export"]["link"]


def download(link: str, dest: Path, key: str, timeout_s: float = 60.0) -> int:
    """Stream ``link`` to ``dest`` with the client's HTTP helper; refuse HTTP errors and short bodies. Returns bytes."""
    from roboflow.util import http

    with _client_call(key, "dataset download failed"):
        r = http.get(link, stream=True, timeout=timeout_s)
        try:
            if r.status_code != 200:
                raise FetalDetectError(f"HTTP {r.status_code} from {_host(link)}")
            expected = r.headers.get("content-length")
            n = 0
            with open(dest, "xb") as f:
                for chunk in r.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
                    n += len(chunk)
        finally:
            r.close()
    if expected is not None and int(expected) != n:
        raise FetalDetectError(f"dataset download truncated: {n} of {expected} bytes from {_host(link)}")
    return n


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or "?"
