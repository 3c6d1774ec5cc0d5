"""A bounded load test on 127.0.0.1: N uploads at concurrency C through uvicorn, zero 5xx, p50/p95 reported."""
import json
import os
from pathlib import Path

import cv2

from fetal_detect import settings
from fetal_detect.data.phantom import make_hc
from fetal_detect.serve.app import create_app
from fetal_detect.serve.testing import load_test, serving

N = int(os.environ.get("FETAL_DETECT_LOAD_N", 200))
CONCURRENCY = int(os.environ.get("FETAL_DETECT_LOAD_CONCURRENCY", 8))
BUDGET_S = float(os.environ.get("FETAL_DETECT_LOAD_BUDGET_S", 90))


def test_load_has_no_server_errors_and_reports_latency(tiny_hc_model):
    head = make_hc(5, size=(320, 240))
    upload = cv2.imencode(".png", head.image)[1].tobytes()
    app = create_app({"hc-seg": str(tiny_hc_model)}, workers=2, queue=CONCURRENCY)  # room for every client
    with serving(app) as url:
        stats = load_test(url + "/api/v1/analyze", upload, n=N, concurrency=CONCURRENCY, budget_s=BUDGET_S,
                          data={"pixel_size_mm": str(head.pixel_size_mm)})
    out = Path(os.environ.get("FETAL_DETECT_LOADTEST_JSON", settings.HOME / "runs" / "serve" / "loadtest.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=2) + "\n")
    print(f"load test: {stats['requests']} requests at concurrency {CONCURRENCY}: p50 {stats['p50_ms']} ms, "
          f"p95 {stats['p95_ms']} ms, {stats['rps']} req/s, status {stats['status_counts']} -> {out}")
    assert not [c for c in stats["status_counts"] if c == "error" or c.startswith("5")], stats
    assert stats["status_counts"].get("200", 0) == stats["requests"] >= min(N, 20)


def test_idle_and_slow_clients_leave_health_and_uploads_working(tiny_hc_model):
    from fetal_detect.serve.testing import clients_probe

    head = make_hc(6, size=(320, 240))
    upload = cv2.imencode(".png", head.image)[1].tobytes()
    app = create_app({"hc-seg": str(tiny_hc_model)}, workers=2, queue=8, max_client_connections=128)
    with serving(app, header_timeout_s=5) as url:
        stats = clients_probe(url, upload, idle=80, slow=8, data={"pixel_size_mm": str(head.pixel_size_mm)})
    out = Path(os.environ.get("FETAL_DETECT_CLIENTS_JSON", settings.HOME / "runs" / "serve" / "clients.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=2) + "\n")
    print(f"80 idle + 8 slow clients: /health max {stats['health_max_ms']} ms, upload {stats['upload_status']} "
          f"in {stats['upload_ms']} ms, idle socket closed after {stats['idle_closed_after_s']} s -> {out}")
    assert stats["health_status"] == {"200": 10} and stats["health_max_ms"] < 2000
    assert stats["upload_status"] == "200" and stats["idle_closed_after_s"] is not None
