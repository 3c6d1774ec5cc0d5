"""A local fake of the Roboflow REST API on 127.0.0.1 for the sync/push tests.

It answers the calls the ``roboflow`` client makes (key check, workspace, project with versions,
version, export link, zip download, image upload, annotation upload) for the versions put in
``FakeRoboflow.versions``. Exports are zipped on the fly from a folder: the real Roboflow export
in ``../shared/data/cns_roboflow`` when present, else a tiny generated YOLOv8 export. Helpers make
the broken variants (truncated zip, traversal/absolute/symlink entries, wrong class names).
"""
from __future__ import annotations

import io
import json
import re
import shutil
import stat
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

CNS_NAMES = ["CHOROID_PLEXUS", "CSP", "MIDLINE_FALX"]
CNS_REF = ("fozan-azhar-kjmti", "ultrasound-fetal-brain-image-detection", 2)


@dataclass
class FakeVersion:
    """One served version: the zip bytes and how the server misbehaves (HTTP status, declared length)."""

    zip_bytes: bytes
    names: list[str]
    images: int
    created: float = 1_700_000_000.0
    export_status: int = 200  # status of GET /ws/project/N/format
    download_status: int = 200  # status of the export link
    content_length: int | None = None  # declared length of the download (None: the real length)


@dataclass
class FakeRoboflow:
    api_key: str
    versions: dict = field(default_factory=dict)  # (workspace, project, version) -> FakeVersion
    uploads: list = field(default_factory=list)
    annotations: list = field(default_factory=list)
    requests: list = field(default_factory=list)  # (method, path) without the query
    url: str = ""

    def start(self) -> "FakeRoboflow":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request handling -----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        u = urlsplit(h.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        parts = [p for p in u.path.split("/") if p]
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        self.requests.append((method, u.path))
        if parts[:1] == ["download"]:
            return self._download(h, tuple(parts[1:4]))
        if q.get("api_key") != self.api_key:
            return self._json(h, 401, {"error": {"message": "This API key does not exist (or has been revoked).",
                                                 "status": 401}})
        if method == "POST" and not parts:
            return self._json(h, 200, {"workspace": CNS_REF[0]})
        if method == "POST" and parts[0] == "dataset" and parts[2] == "upload":
            name = re.search(rb'name="name"\r\n\r\n([^\r]*)', body)
            self.uploads.append({"project": parts[1], "name": name.group(1).decode() if name else None,
                                 "query": q, "bytes": len(body)})
            return self._json(h, 200, {"success": True, "id": f"img{len(self.uploads)}"})
        if method == "POST" and parts[0] == "dataset" and parts[2] == "annotate":
            self.annotations.append({"project": parts[1], "image_id": parts[3], "query": q,
                                     "body": json.loads(body or b"{}")})
            return self._json(h, 200, {"success": True})
        if len(parts) == 1:
            projects = [f"{w}/{p}" for w, p, _ in self.versions if w == parts[0]]
            return self._json(h, 200, {"workspace": {"name": parts[0], "url": parts[0], "projects": projects,
                                                     "members": []}})
        ws, proj = parts[0], parts[1]
        mine = {v: fv for (w, p, v), fv in self.versions.items() if (w, p) == (ws, proj)}
        if not mine:
            return self._json(h, 404, {"error": {"message": f"Unsupported request. `GET /{ws}/{proj}` does not "
                                                            "exist or cannot be loaded due to missing permissions."}})
        if len(parts) == 2:
            return self._json(h, 200, {"project": self._project(ws, proj, mine),
                                       "versions": [self._version(ws, proj, v, fv) for v, fv in sorted(mine.items())]})
        fv = mine.get(int(parts[2])) if parts[2].isdigit() else None
        if fv is None:
            return self._json(h, 404, {"error": {"message": f"version {parts[2]} not found"}})
        if len(parts) == 3:
            return self._json(h, 200, {"version": {**self._version(ws, proj, int(parts[2]), fv),
                                                   "generating": False, "progress": 1.0}})
        if fv.export_status != 200:
            return self._json(h, fv.export_status, {"error": {"message": f"export failed ({fv.export_status})"}})
        link = f"{self.url}/download/{ws}/{proj}/{parts[2]}/{parts[3]}.zip?token=signed-xyz"
        return self._json(h, 200, {"export": {"link": link, "format": parts[3]}})

    def _download(self, h, key) -> None:
        fv = self.versions.get((key[0], key[1], int(key[2]))) if len(key) == 3 and key[2].isdigit() else None
        if fv is None or fv.download_status != 200:
            return self._json(h, fv.download_status if fv else 404, {"error": "no such export"})
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(fv.content_length or len(fv.zip_bytes)))
        h.end_headers()
        try:
            h.wfile.write(fv.zip_bytes)
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True

    @staticmethod
    def _json(h, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _project(ws, proj, mine) -> dict:
        last = mine[max(mine)]
        return {"id": f"{ws}/{proj}", "name": proj.replace("-", " "), "annotation": "structures",
                "classes": {n: 1 for n in last.names}, "colors": {}, "created": 1_690_000_000,
                "updated": 1_700_000_000, "images": last.images, "public": True, "unannotated": 0,
                "splits": {"train": last.images}, "type": "object-detection", "versions": len(mine)}

    @staticmethod
    def _version(ws, proj, v, fv) -> dict:
        return {"id": f"{ws}/{proj}/{v}", "name": f"v{v}", "created": fv.created, "images": fv.images,
                "splits": {"train": fv.images}, "augmentation": {}, "preprocessing": {"auto-orient": True},
                "exports": ["yolov8"]}


# ---------------------------------------------------------------------------------------------
# exports and broken variants


def make_tiny_export(folder: Path, names=CNS_NAMES, n: int = 12, seed: int = 0) -> Path:
    """A small Roboflow-style YOLOv8 export (data.yaml, train/valid/test) with distinct noise images."""
    import cv2

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (folder / "data.yaml").write_text(f"train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
                                      f"nc: {len(names)}\nnames: {list(names)}\n")
    for i in range(n):
        split = "valid" if i % 6 == 4 else "test" if i % 6 == 5 else "train"
        stem = f"{i:03d}_HC_png.rf.{rng.integers(1 << 62):016x}"
        for sub in ("images", "labels"):
            (folder / split / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / split / "images" / f"{stem}.jpg"), rng.integers(0, 255, (48, 64), dtype=np.uint8))
        lines = [f"{k} {0.3 + 0.2 * k:.4f} 0.5 0.2 0.3" for k in range(len(names)) if (i + k) % 2 == 0 or k == 1]
        (folder / split / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return folder


def source_export(tmp: Path) -> Path:
    """The real export in ../shared/data/cns_roboflow when present, else a generated tiny one."""
    from fetal_detect import settings

    real = Path(settings.SHARED_DATA) / "cns_roboflow"
    if (real / "data.yaml").exists():
        return real
    return make_tiny_export(Path(tmp) / "tiny_cns")


def copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def count_images(folder: Path) -> int:
    return sum(1 for s in ("train", "valid", "test") for _ in (Path(folder) / s / "images").glob("*")
               if (Path(folder) / s / "images").is_dir())


def zip_folder(folder: Path, replace: dict | None = None) -> bytes:
    """Zip a folder's files at the archive root (like a Roboflow export); ``replace`` swaps file contents."""
    buf = io.BytesIO()
    folder = Path(folder)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(folder).as_posix()
                zf.writestr(rel, (replace or {}).get(rel, p.read_bytes()))
    return buf.getvalue()


def with_entry(zip_bytes: bytes, name: str, data: bytes = b"pwned\n", symlink: bool = False) -> bytes:
    """A copy of the zip with one more entry (a symlink entry stores its target as data)."""
    buf = io.BytesIO(zip_bytes)
    with zipfile.ZipFile(buf, "a") as zf:
        info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data)
    return buf.getvalue()


def truncated(zip_bytes: bytes, keep: float = 0.6) -> bytes:
    return zip_bytes[: int(len(zip_bytes) * keep)]


def fake_version(folder: Path, created: float = 1_700_000_000.0, **kw) -> FakeVersion:
    import yaml

    names = yaml.safe_load((Path(folder) / "data.yaml").read_text())["names"]
    return FakeVersion(zip_folder(folder), list(names), count_images(folder), created, **kw)


# ---------------------------------------------------------------------------------------------
# pytest fixtures (imported by the test modules)


TEST_KEY = "sekret-Key-4f9a2c7e1b"


@pytest.fixture(scope="module")
def good_export(tmp_path_factory) -> Path:
    return source_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def fake_api(good_export):
    """The fake API serving the cns_roboflow export as the pinned version (reset for each test)."""
    fake = FakeRoboflow(api_key=TEST_KEY).start()
    fake.good = fake_version(good_export)
    yield fake
    fake.stop()


@pytest.fixture
def rf(fake_api, monkeypatch, tmp_path):
    """Point the roboflow client at the fake (``API_URL``) and the cache at a fresh folder."""
    from fetal_detect import settings

    fake_api.versions.clear()
    fake_api.versions[CNS_REF] = fake_api.good
    fake_api.uploads.clear()
    fake_api.annotations.clear()
    monkeypatch.setenv("API_URL", fake_api.url)
    monkeypatch.setenv("ROBOFLOW_API_KEY", TEST_KEY)
    monkeypatch.setenv("ROBOFLOW_CONFIG_DIR", str(tmp_path / "no-roboflow-config.json"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(settings, "CACHE_DIR", tmp_path / "cache")
    return fake_api


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    """(exit code, stdout JSON or None, stderr) of ``fetal-detect ARGV`` run in-process."""
    from fetal_detect.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err
