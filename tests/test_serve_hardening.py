"""Service hardening: hostile uploads, idle and slow clients, SIGTERM, path leaks, Host/Origin, save-dir, logs."""
import json
import logging
import os
import socket
import stat
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import hostile as H
from fetal_detect import settings
from fetal_detect.data.phantom import make_hc
from fetal_detect.serve.app import JobContext, WorkerPool, create_app
from fetal_detect.serve.testing import OracleAnalyzer, serving

LOCAL = "http://127.0.0.1"


def png(image) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def post(client, body: bytes, **form):
    return client.post("/api/v1/analyze", files={"file": ("x.dcm", body)}, data=form)


@pytest.fixture(scope="module")
def head():
    return make_hc(11, pixel_size_mm=0.2, size=(320, 240))


@pytest.fixture(scope="module")
def client(head):
    app = create_app(workers=1, queue=4, analyzer_factory=lambda: OracleAnalyzer([(head.image, head.mask)]))
    with TestClient(app, base_url=LOCAL) as c:
        while c.get("/ready").status_code != 200:
            time.sleep(0.05)
        yield c


def test_deflated_bomb_and_lying_dimensions_get_4xx(client):
    for body, status in [(H.deflated_bomb(200), 413),
                         (H.encapsulated_dicom([H.jpeg_sof_only(12000, 12000)], 64, 64), 413),
                         (H.encapsulated_dicom([H.jpeg(np.zeros((256, 256), np.uint8))], 64, 64), 400)]:
        r = post(client, body)
        assert r.status_code == status and r.json()["status"] == "error", r.text


def test_png_then_html_is_4xx_and_nothing_is_installed(client, monkeypatch, caplog):
    import subprocess

    import ultralytics.utils.checks
    import ultralytics.utils.patches  # noqa: F401

    calls = []
    monkeypatch.setattr(ultralytics.utils.checks, "check_requirements", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: calls.append(a))
    caplog.set_level(logging.DEBUG)
    r = post(client, H.PNG_THEN_HTML)
    assert 400 <= r.status_code < 500 and not calls
    assert "AutoUpdate" not in caplog.text and "pi-heif" not in caplog.text


def test_no_absolute_server_path_in_ready_answers_or_errors(head):
    abs_weights = str(settings.WEIGHTS_DIR / "nt" / "nt-det.pt")
    elsewhere = "/srv/secret/checkout/weights/nt-seg.pt"

    class Leaky(OracleAnalyzer):
        def analyze(self, image, pixel_size_mm=None, task="auto", **kw):
            result = super().analyze(image, pixel_size_mm, task, **kw)
            result.models = {"nt-det": {"weights": abs_weights}, "nt-seg": {"weights": elsewhere}}
            result.reason = f"model {elsewhere} used"
            return result

    app = create_app(workers=1, queue=1, analyzer_factory=lambda: Leaky([(head.image, head.mask)]))
    with TestClient(app, base_url=LOCAL) as c:
        while c.get("/ready").status_code != 200:
            time.sleep(0.05)
        texts = [c.get("/ready").text, post(c, png(head.image), pixel_size_mm="0.2").text]
    for text in texts:
        assert str(settings.HOME) not in text and "/srv/secret" not in text, text
    assert '"nt-det": {"weights": "nt/nt-det.pt"}' in json.dumps(json.loads(texts[1])["models"])


def test_host_header_and_cross_site_posts_are_refused(client, head):
    assert client.get("/health", headers={"Host": "evil.example"}).status_code == 400
    body = png(head.image)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        r = client.post("/api/v1/analyze", files={"file": ("x.png", body)}, headers=headers)
        assert r.status_code == 403, (headers, r.text)
    ok = client.post("/api/v1/analyze", files={"file": ("x.png", body)}, data={"pixel_size_mm": "0.2"},
                     headers={"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200


def test_echoed_values_are_cut_and_pixel_sizes_bounded(client, head):
    r = post(client, png(head.image), task="x" * 60_000)
    assert r.status_code == 400 and len(r.json()["error"]) < 400
    for bad in ("1e308", "1_0", "\u0661"):
        assert post(client, png(head.image), pixel_size_mm=bad).status_code == 400


def test_inline_images_are_bounded(client, head, monkeypatch):
    from fetal_detect.serve import analysis

    monkeypatch.setattr(analysis, "MAX_INLINE_PNG_BYTES", 1000)
    rep = post(client, png(head.image), pixel_size_mm="0.2", include_image="1", overlay="1").json()
    assert rep["status"] == "ok" and "frame_png" not in rep and rep["images_omitted"] == ["frame_png", "overlay_png"]


def test_saved_results_are_owner_only_and_pruned(head, tmp_path):
    app = create_app(save_dir=tmp_path / "kept", save_max_files=2,
                     analyzer_factory=lambda: OracleAnalyzer([(head.image, head.mask)]))
    with TestClient(app, base_url=LOCAL) as c:
        while c.get("/ready").status_code != 200:
            time.sleep(0.05)
        stems = [post(c, png(head.image), pixel_size_mm="0.2").json()["saved_as"] for _ in range(3)]
    files = sorted(p.name for p in (tmp_path / "kept").iterdir())
    assert len(files) == 4 and stems[0] + ".json" not in files
    for f in (tmp_path / "kept").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_retry_after_follows_the_queued_work():
    pool = WorkerPool(lambda: None, workers=2, queue=8)
    pool.s_per_px = 1e-6  # 1 s per megapixel-frame
    for cost in (64e6, 64e6):
        ctx = JobContext(60)
        ctx.set_cost(cost)
        pool._jobs.add(ctx)
    assert pool.retry_after_s() == 64  # 128 s of work on 2 workers


def test_job_deadline_and_frame_count_before_decoding(head):
    class Slow(OracleAnalyzer):
        def analyze(self, *a, **k):
            time.sleep(0.3)
            return super().analyze(*a, **k)

    app = create_app(workers=1, queue=1, max_frames=3, job_deadline_s=0.5,
                     analyzer_factory=lambda: Slow([(head.image, head.mask)]))
    frames = [H.jpeg(head.image)] * 4
    with TestClient(app, base_url=LOCAL) as c:
        while c.get("/ready").status_code != 200:
            time.sleep(0.05)
        too_many = post(c, H.encapsulated_dicom(frames, 240, 320))
        slow = post(c, H.encapsulated_dicom(frames[:3], 240, 320))
    assert too_many.status_code == 413 and "4 frames" in too_many.json()["error"]
    assert slow.status_code == 413 and "per-request limit" in slow.json()["error"]


def test_query_string_secrets_are_redacted_in_the_access_log():
    from fetal_detect.serve.server import RedactSecrets

    rec = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:5", "POST", "/api/v1/analyze?api_key=s3cret&task=hc", "1.1", 401), None)
    RedactSecrets().filter(rec)
    assert "s3cret" not in rec.getMessage() and "task=hc" in rec.getMessage()


def _open_idle(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


@pytest.mark.timeout(120)
def test_idle_connections_do_not_take_health_down_and_are_closed(head):
    app = create_app(workers=1, queue=1, max_client_connections=20,
                     analyzer_factory=lambda: OracleAnalyzer([(head.image, head.mask)]))
    with serving(app, header_timeout_s=2) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = _open_idle(port, 80)
        try:
            t = time.perf_counter()
            r = httpx.get(url + "/health", timeout=2)
            assert r.status_code == 200 and time.perf_counter() - t < 2
            busy = httpx.post(url + "/api/v1/analyze", files={"file": ("x.png", png(head.image))}, timeout=5)
            assert busy.status_code == 503 and "connections" in busy.json()["error"]
            idle[0].settimeout(6)
            assert idle[0].recv(10) == b""  # closed by the header timeout
        finally:
            for s in idle:
                s.close()


@pytest.mark.timeout(120)
def test_shutdown_does_not_wait_for_a_trickling_upload(head):
    app = create_app(workers=1, queue=1, body_idle_s=1, body_timeout_s=3,
                     analyzer_factory=lambda: OracleAnalyzer([(head.image, head.mask)]))
    with serving(app, graceful_shutdown_s=2) as url:
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /api/v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        stop = threading.Event()

        def trickle():
            while not stop.is_set():
                try:
                    s.sendall(b"1\r\nx\r\n")
                except OSError:
                    return
                time.sleep(0.5)

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(1)
        t0 = time.perf_counter()
        serving.server.should_exit = True  # what SIGTERM does
        answer = s.recv(4096)
    stopped_s = time.perf_counter() - t0
    stop.set()
    s.close()
    assert stopped_s < 8, stopped_s
    assert b"408" in answer.split(b"\r\n")[0] or answer == b""


@pytest.mark.timeout(120)
def test_client_disconnect_cancels_the_job_and_logs_one_line(head, caplog):
    seen = []

    class Slow(OracleAnalyzer):
        def analyze(self, *a, **k):
            seen.append(1)
            time.sleep(0.4)
            return super().analyze(*a, **k)

    app = create_app(workers=1, queue=1, analyzer_factory=lambda: Slow([(head.image, head.mask)]))
    body = H.encapsulated_dicom([H.jpeg(head.image)] * 20, 240, 320)
    caplog.set_level(logging.INFO)
    with serving(app) as url:
        seen.clear()
        req = httpx.Request("POST", url + "/api/v1/analyze", files={"file": ("x.dcm", body)})
        raw = b"POST /api/v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
            k.encode() + b": " + v.encode() + b"\r\n" for k, v in req.headers.items() if k.lower() != "host") \
            + b"\r\n" + req.read()
        s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        s.sendall(raw)
        while not seen:
            time.sleep(0.05)
        s.close()
        time.sleep(3)
        frames_done = len(seen)
    assert frames_done < 10, frames_done
    assert "client disconnected" in caplog.text and "Traceback" not in caplog.text
