"""The REST API through FastAPI's test client: reports, DICOM calibration and cine, limits, key, pool."""
import io
import json
import logging
import threading
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fetal_detect.data.phantom import make_blank, make_hc
from fetal_detect.serve.app import STATIC_DIR, create_app
from fetal_detect.serve.testing import OracleAnalyzer

LOCAL = "http://127.0.0.1"  # the Host the service accepts by default (TrustedHost)
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-90210", "PatientBirthDate": "19870402",
           "InstitutionName": "St Nowhere Hospital"}


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def dicom(frames: list[np.ndarray], pixel_spacing_mm: float | None = None, region_cm: float | None = None) -> bytes:
    """A small ultrasound DICOM (one or more 8-bit frames) with patient tags that must never leak."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1" if len(frames) > 1 else "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    for tag, value in PATIENT.items():
        setattr(ds, tag, value)
    ds.Modality, ds.SOPClassUID, ds.SOPInstanceUID = "US", meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    if pixel_spacing_mm:
        ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    if region_cm:
        region = Dataset()
        region.RegionSpatialFormat, region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 1, 3, 3
        region.PhysicalDeltaX = region.PhysicalDeltaY = region_cm
        ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = np.stack(frames).astype(np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def wait_ready(client: TestClient, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = client.get("/ready")
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503 and "error" not in r.json(), r.text
        time.sleep(0.05)
    raise TimeoutError("models not loaded")


@pytest.fixture(scope="module")
def head():
    return make_hc(11, pixel_size_mm=0.2, size=(320, 240))


@pytest.fixture(scope="module")
def oracle_client(head):
    """The real pipeline after the model, with the phantom's exact skull mask as the 'model' output."""
    soft = cv2.GaussianBlur(head.image, (9, 9), 3) // 2  # the same head, blurred and darker: a worse frame
    pairs = [(head.image, head.mask), (soft, head.mask)]
    app = create_app(workers=1, queue=2, max_frames=4, analyzer_factory=lambda: OracleAnalyzer(pairs))
    with TestClient(app, base_url=LOCAL) as client:
        wait_ready(client)
        client.soft = soft
        yield client


def post(client, body: bytes, name: str = "x.png", **form):
    return client.post("/api/v1/analyze", files={"file": (name, body)}, data=form)


def test_health_and_ready_report_loaded_models(oracle_client):
    assert oracle_client.get("/health").json()["status"] == "alive"
    ready = oracle_client.get("/ready").json()
    assert ready["ready"] is True and ready["models"]["hc-seg"]["backend"] == "oracle"


def test_analyze_returns_measurements_in_mm_with_report_fields(oracle_client, head):
    r = post(oracle_client, png(head.image), pixel_size_mm="0.2", overlay="true", include_image="1")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["status"] == "ok" and rep["requested"] == "auto" and rep["measurers"] == ["hc"]  # no plane-cls: HC
    for key in ("plane", "plane_confidence", "plane_evidence", "reason", "quality", "overlay", "image_quality",
                "processing_ms", "models", "version", "results"):
        assert key in rep
    m = rep["measurements"]
    assert m["hc_mm"] == pytest.approx(head.truth["hc_mm"], rel=0.02)
    assert {"bpd_mm", "ofd_mm"} <= set(m) and rep["units"]["hc_mm"] == "mm"
    assert rep["overlay"]["ellipse"]["a"] > 0
    assert rep["pixel_size_source"] == "user" and rep["models"]["hc-seg"]["backend"] == "oracle"
    assert {c["name"] for c in rep["overlay"]["calipers"]} == {"bpd", "ofd"}
    bpd = next(c for c in rep["overlay"]["calipers"] if c["name"] == "bpd")
    assert bpd["length_mm"] == m["bpd_mm"]  # the drawn caliper is the reported number
    assert rep["overlay_png"].startswith("data:image/png;base64,") and rep["frame_png"].startswith("data:image/png")


def test_content_is_sniffed_not_trusted_from_the_extension(oracle_client, head):
    r = post(oracle_client, png(head.image), name="scan.dcm", pixel_size_mm="0.2")
    assert r.status_code == 200 and r.json()["image"]["format"] == "png"


@pytest.mark.parametrize("body, status", [
    (b"", 400),                                           # empty
    (b"%PDF-1.7 not an image" * 20, 415),                 # unsupported
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 400),           # corrupt PNG
    (b"\xff\xd8\xff\xe0" + b"\x13" * 200, 400),           # corrupt JPEG
    (b"\0" * 128 + b"DICM" + b"\x02\x00" * 40, 400),      # corrupt DICOM
])
def test_bad_files_answer_4xx_json_never_500(oracle_client, body, status):
    r = post(oracle_client, body, name="image.png")
    assert r.status_code == status, r.text
    assert r.json()["status"] == "error" and r.json()["error"].startswith("upload:")


def test_bad_fields_answer_400(oracle_client, head):
    assert post(oracle_client, png(head.image), task="liver").status_code == 400
    assert post(oracle_client, png(head.image), pixel_size_mm="-1").status_code == 400
    assert post(oracle_client, png(head.image), pixel_size_mm="abc").status_code == 400
    assert oracle_client.post("/api/v1/analyze", data={"task": "hc"}).status_code == 400  # no file


def test_nothing_found_is_a_clean_answer(oracle_client):
    r = post(oracle_client, png(make_blank(3, size=(160, 120)).image))
    assert r.status_code == 200 and r.json()["status"] == "no_finding" and r.json()["measurements"] == {}


def test_dicom_pixel_spacing_gives_mm(oracle_client, head):
    rep = post(oracle_client, dicom([head.image], pixel_spacing_mm=0.2), name="a.dcm").json()
    assert rep["pixel_size_source"] == "dicom" and rep["pixel_size_mm"] == pytest.approx(0.2)
    assert rep["measurements"]["hc_mm"] == pytest.approx(head.truth["hc_mm"], rel=0.02)


def test_dicom_ultrasound_region_calibration_gives_mm(oracle_client, head):
    rep = post(oracle_client, dicom([head.image], region_cm=0.02), name="b.dcm").json()
    assert rep["pixel_size_source"] == "dicom"
    assert rep["pixel_size_detail"].startswith("DICOM SequenceOfUltrasoundRegions")
    assert rep["pixel_size_mm"] == pytest.approx(0.2)
    assert rep["measurements"]["hc_mm"] == pytest.approx(head.truth["hc_mm"], rel=0.02)


def test_cine_returns_the_best_frame(oracle_client, head):
    blank = make_blank(5, size=(320, 240)).image
    rep = post(oracle_client, dicom([blank, oracle_client.soft, head.image], pixel_spacing_mm=0.2)).json()
    assert rep["status"] == "ok" and rep["image"]["frames"] == 3 and rep["image"]["frame_index"] == 2
    assert [f["status"] for f in rep["frames"]] == ["no_finding", "ok", "ok"]
    assert rep["frames"][2]["frame_score"] > rep["frames"][1]["frame_score"]


def test_cine_over_the_frame_limit_is_413(oracle_client, head):
    assert post(oracle_client, dicom([head.image] * 5, pixel_spacing_mm=0.2)).status_code == 413


def test_patient_tags_never_in_responses_or_logs(oracle_client, head, caplog):
    caplog.set_level(logging.DEBUG)
    texts = [post(oracle_client, dicom([head.image], 0.2), name="Doe_Jane.dcm").text,
             post(oracle_client, dicom([head.image], 0.2)[:-500], name="Doe_Jane.dcm").text]  # truncated
    texts.append(caplog.text)
    for text in texts:
        for value in (*PATIENT.values(), "Doe", "Jane"):
            assert value not in text


def test_upload_over_the_size_limit_is_413_even_when_chunked(head):
    app = create_app(max_upload_mb=0.05, analyzer_factory=lambda: OracleAnalyzer([]))
    noise = np.random.default_rng(0).integers(0, 255, (500, 500), np.uint8)
    big, over = png(noise), png(noise[:300, :300])  # ~250 kB: refused from Content-Length; ~90 kB: while read
    with TestClient(app, base_url=LOCAL) as client:
        assert post(client, big).status_code == 413 and post(client, over).status_code == 413
        chunked = client.post("/api/v1/analyze", content=iter([b"--x\r\n", big]),
                              headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert chunked.status_code == 413 and chunked.json()["status"] == "error"


def test_too_many_pixels_is_413(head):
    app = create_app(max_pixels=10_000, analyzer_factory=lambda: OracleAnalyzer([]))
    with TestClient(app, base_url=LOCAL) as client:
        wait_ready(client)
        r = post(client, png(head.image))
        cine = post(client, dicom([np.zeros((50, 50), np.uint8)] * 20))  # 2,500 px a frame, 50,000 in all
    assert r.status_code == 413 and "pixel limit" in r.json()["error"]
    assert cine.status_code == 413 and "cine limit" in cine.json()["error"]


def test_api_key_required_on_api_when_set(head):
    app = create_app(api_key="s3cret", analyzer_factory=lambda: OracleAnalyzer([]))
    with TestClient(app, base_url=LOCAL) as client:
        wait_ready(client)
        assert client.get("/health").status_code == 200
        assert post(client, png(head.image)).status_code == 401
        assert client.post("/api/v1/analyze", files={"file": ("x.png", png(head.image))},
                           headers={"X-API-Key": "wrong"}).status_code == 401
        for h in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            assert client.post("/api/v1/analyze", files={"file": ("x.png", png(head.image))}, headers=h).status_code == 200


def test_full_worker_pool_answers_503_with_retry_after(head):
    gate = threading.Event()
    gate.set()  # open for the warm-up analysis at start-up

    class Slow(OracleAnalyzer):
        def analyze(self, *args, **kwargs):
            gate.wait(30)
            return super().analyze(*args, **kwargs)

    app = create_app(workers=1, queue=0, analyzer_factory=lambda: Slow([(head.image, head.mask)]))
    with TestClient(app, base_url=LOCAL) as client:
        wait_ready(client)
        gate.clear()  # now hold the only worker
        first = {}
        t = threading.Thread(target=lambda: first.update(r=post(client, png(head.image), pixel_size_mm="0.2")))
        t.start()
        while app.state.pool.in_flight < 1:
            time.sleep(0.01)
        busy = post(client, png(head.image))
        gate.set()
        t.join(30)
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1 and busy.json()["status"] == "error"
    assert first["r"].status_code == 200


def test_uploads_are_kept_only_with_save_dir(head, tmp_path):
    app = create_app(save_dir=tmp_path / "kept", analyzer_factory=lambda: OracleAnalyzer([(head.image, head.mask)]))
    with TestClient(app, base_url=LOCAL) as client:
        wait_ready(client)
        rep = post(client, dicom([head.image], 0.2)).json()
    files = sorted(p.name for p in (tmp_path / "kept").iterdir())
    assert files == [f"{rep['saved_as']}.json", f"{rep['saved_as']}.png"]  # pixels as PNG: no DICOM header kept
    assert json.loads((tmp_path / "kept" / files[0]).read_text())["measurements"]["hc_mm"] > 0


def test_docs_and_page_are_offline(oracle_client):
    spec = oracle_client.get("/openapi.json").json()
    assert "/api/v1/analyze" in spec["paths"] and "multipart/form-data" in json.dumps(spec)
    for path in ("/", "/docs"):
        r = oracle_client.get(path)
        assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    for f in STATIC_DIR.iterdir():  # no CDN: nothing in the page loads from another host
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


def test_tiny_model_answers_cleanly(tiny_hc_model, head):
    app = create_app({"hc-seg": str(tiny_hc_model)}, workers=1, queue=2)
    with TestClient(app, base_url=LOCAL) as client:
        ready = wait_ready(client)
        r = post(client, png(head.image), pixel_size_mm="0.2")
    assert ready["models"]["hc-seg"]["weights"] == tiny_hc_model.name
    assert r.status_code == 200 and r.json()["status"] in ("ok", "no_finding")  # a 1-epoch model may find nothing
    assert r.json()["models"]["hc-seg"]["weights"] == tiny_hc_model.name


def test_serve_command_rejects_bad_options_in_one_line(capsys):
    from fetal_detect.cli import main

    assert main(["serve", "--weights", "no-equals-sign"]) == 2
    assert main(["serve", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.count("fetal-detect: error:") == 2 and "Traceback" not in err


def test_the_measurer_table_is_the_api_task_enum_and_the_page_list(oracle_client):
    from fetal_detect import measurers

    body = oracle_client.get("/measurers").json()
    assert body["choices"] == list(measurers.choices()) == ["auto", *measurers.names()]
    assert [m["name"] for m in body["measurers"]] == list(measurers.names())
    form = oracle_client.get("/openapi.json").json()["paths"]["/api/v1/analyze"]["post"]["requestBody"]
    assert form["content"]["multipart/form-data"]["schema"]["properties"]["task"]["enum"] == body["choices"]
