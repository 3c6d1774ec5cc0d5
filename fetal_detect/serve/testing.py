"""Checking a service without a trained model: a mask oracle, a local server thread, a bounded load test.

- :class:`OracleAnalyzer`: the real :class:`~fetal_detect.pipeline.analyze.Analyzer` and HC measurer with
  the model replaced by :class:`MaskOracle`, which "segments" exactly the images it was given masks
  for (phantoms with known truth), so everything after the model is checked against exact numbers.
- :func:`serving`: uvicorn in a thread on 127.0.0.1 and a free port.
- :func:`load_test`: N uploads at concurrency C against a loopback URL, bounded in count and time,
  -> status counts and latency percentiles (ms).
"""
from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from fetal_detect.pipeline.analyze import Analyzer
from fetal_detect.runtime import Instance, Prediction


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


class MaskOracle:
    """Predictor stand-in: returns the known skull mask for registered images, nothing for others."""

    backend, weights, meta = "oracle", Path("mask-oracle"), {}

    def __init__(self, masks: dict[str, np.ndarray]):
        self.masks = masks

    def predict(self, image: np.ndarray) -> Prediction:
        mask = self.masks.get(image_key(image))
        if mask is None:
            return Prediction()
        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
        return Prediction([Instance("skull", 0.95, box, mask.astype(bool))])


class OracleAnalyzer(Analyzer):
    """The real analyzer with the HC model replaced by a :class:`MaskOracle` over ``(image, mask)`` pairs."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]]):
        super().__init__(None)
        self.oracle = MaskOracle({image_key(im): m for im, m in pairs})

    def measurer(self, name: str, **options):
        if name == "hc":
            from fetal_detect.pipeline.hc import HCMeasurer

            return self._measurers.setdefault("hc", HCMeasurer(predictor=self.oracle))
        return super().measurer(name, **options)


@contextmanager
def serving(app, host: str = "127.0.0.1", ready_timeout_s: float = 120, **server_kw):
    """Run ``app`` under the service's uvicorn server (:func:`~fetal_detect.serve.server.make_server`, so
    with its connection guards) in a daemon thread on a free port; yields the base URL; stops on exit.

    Waits for ``/ready`` (models loaded) before yielding; the server object is ``serving.server``.
    """
    import socket

    import httpx

    from fetal_detect.serve.server import make_server

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    server = make_server(app, host, 0, "warning", **server_kw)
    serving.server = server
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://{host}:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if server.started:
                try:
                    if httpx.get(url + "/ready", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped during start-up")
            time.sleep(0.1)
        else:
            raise TimeoutError(f"{url} not ready after {ready_timeout_s:.0f} s")
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def load_test(url: str, upload: bytes, n: int = 200, concurrency: int = 8, budget_s: float = 120,
              data: dict | None = None, headers: dict | None = None, filename: str = "load.png") -> dict:
    """POST ``upload`` to ``url`` ``n`` times from ``concurrency`` threads; stop issuing after ``budget_s``.

    Only loopback URLs are accepted. Returns ``requests, status_counts, p50_ms, p95_ms, max_ms, wall_s,
    rps`` and ``stopped_by_budget``; transport errors count under status ``"error"``.
    """
    import httpx

    host = urlparse(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise ValueError(f"load_test only hits loopback addresses, got {host}")
    lock, latencies, counts = threading.Lock(), [], {}
    issued = 0
    t0 = time.perf_counter()
    deadline = t0 + budget_s

    def worker():
        nonlocal issued
        with httpx.Client(timeout=max(budget_s, 10)) as client:
            while True:
                with lock:
                    if issued >= n or time.perf_counter() > deadline:
                        return
                    issued += 1
                t = time.perf_counter()
                try:
                    code = client.post(url, files={"file": (filename, upload)}, data=data or {},
                                       headers=headers or {}).status_code
                except httpx.HTTPError:
                    code = "error"
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    latencies.append(ms)
                    counts[code] = counts.get(code, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {"url": url, "n": n, "concurrency": concurrency, "requests": len(latencies),
            "status_counts": {str(k): v for k, v in sorted(counts.items(), key=str)},
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "max_ms": round(float(lat.max()), 1), "wall_s": round(wall, 2),
            "rps": round(len(latencies) / wall, 2) if wall > 0 else None,
            "stopped_by_budget": len(latencies) < n}


def _loopback(url: str) -> tuple[str, int]:
    u = urlparse(url)
    host = u.hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise ValueError(f"client probes only hit loopback addresses, got {host}")
    return host, u.port or 80


def clients_probe(url: str, upload: bytes, idle: int = 80, slow: int = 8, probes: int = 10,
                  data: dict | None = None, budget_s: float = 60) -> dict:
    """/health and one upload's latency while ``idle`` TCP connections sit silent and ``slow`` clients
    trickle a request body (one byte every 0.5 s), on a loopback URL, bounded by ``budget_s``.

    -> ``{"idle", "slow", "health_ms": [...], "health_status": {...}, "upload_status", "upload_ms",
    "idle_closed_after_s"}`` (the last: when the server closed the first idle socket, None if not in time).
    """
    import socket

    import httpx

    host, port = _loopback(url)
    t_start = time.perf_counter()
    socks = [socket.create_connection((host, port), timeout=5) for _ in range(idle)]
    stop = threading.Event()

    def trickle():
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"POST /api/v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                      b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")
            while not stop.is_set():
                s.sendall(b"x")
                time.sleep(0.5)
        except OSError:
            return

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(slow)]
    for t in threads:
        t.start()
    health_ms, health_status = [], {}
    try:
        time.sleep(0.5)
        for _ in range(probes):
            t = time.perf_counter()
            try:
                code = str(httpx.get(url + "/health", timeout=5).status_code)
            except httpx.HTTPError:
                code = "error"
            health_ms.append(round((time.perf_counter() - t) * 1000, 1))
            health_status[code] = health_status.get(code, 0) + 1
        t = time.perf_counter()
        try:
            up = str(httpx.post(url + "/api/v1/analyze", files={"file": ("probe.png", upload)}, data=data or {},
                                timeout=30).status_code)
        except httpx.HTTPError:
            up = "error"
        upload_ms = round((time.perf_counter() - t) * 1000, 1)
        closed_after = None
        socks[0].settimeout(max(1.0, budget_s - (time.perf_counter() - t_start)))
        try:
            if socks[0].recv(1) == b"":
                closed_after = round(time.perf_counter() - t_start, 1)
        except OSError:
            pass
    finally:
        stop.set()
        for s in socks:
            s.close()
    return {"idle": idle, "slow": slow, "health_ms": health_ms, "health_status": health_status,
            "health_max_ms": max(health_ms), "upload_status": up, "upload_ms": upload_ms,
            "idle_closed_after_s": closed_after}
