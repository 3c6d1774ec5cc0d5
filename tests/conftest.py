"""Test set-up: outputs in a temporary runs/ folder, the network off, tiny phantom models shared.

Tests never read the shipped ``weights/``: every model a test uses is trained by the test set-up,
so results do not depend on which models happen to be shipped.
"""
import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

_RUNS = Path(tempfile.mkdtemp(prefix="fetal-detect-tests-"))
atexit.register(shutil.rmtree, _RUNS, ignore_errors=True)
os.environ["FETAL_DETECT_RUNS"] = str(_RUNS)
os.environ["FETAL_DETECT_CACHE"] = str(_RUNS / "datasets")
os.environ["FETAL_DETECT_WEIGHTS"] = str(_RUNS / "weights")  # hermetic: shipped models never change a test
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ["YOLO_CONFIG_DIR"] = str(_RUNS / ".ultralytics")

import fetal_detect  # noqa: E402,F401  (offline Ultralytics set-up before anything imports it)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = str(address[0])
    return host in ("localhost", "::1") or host.startswith("127.")


def _guard_connect(self, address):
    if not _is_local(address):
        raise OSError(f"network blocked in tests: connect to {address}")
    return _real_connect(self, address)


def _guard_connect_ex(self, address):
    if not _is_local(address):
        raise OSError(f"network blocked in tests: connect to {address}")
    return _real_connect_ex(self, address)


def _guard_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_local((host,)):
        raise socket.gaierror(f"network blocked in tests: lookup of {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Every test runs with sockets limited to loopback: nothing may download at run time."""
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _guard_connect)
    mp.setattr(socket.socket, "connect_ex", _guard_connect_ex)
    mp.setattr(socket, "getaddrinfo", _guard_getaddrinfo)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def runs_dir() -> Path:
    return _RUNS


@pytest.fixture(scope="session")
def tiny_hc_model(no_network) -> Path:
    """A 1-epoch hc-seg model on a tiny phantom set (shared by every test that needs a model)."""
    from fetal_detect.engine.train import train

    res = train("hc-seg", data="phantom-hc", epochs=1, imgsz=128, batch=8, workers=0, name="tiny",
                extra={"plots": False})
    return res.weights
