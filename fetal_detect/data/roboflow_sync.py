"""Roboflow sync: pinned dataset versions in a local cache, validated on import, and uploads back.

``sync(ref)`` asks the ``roboflow`` package's own client (which honours its ``API_URL`` setting) for
a version and its export link, then downloads, checks and unpacks the zip with its own code: the
client's ``Version.download`` uses ``ZipFile.extract`` (which silently rewrites ``..`` and absolute
names), writes straight into the target folder and does not check the HTTP status or the length.
Here a bad archive is refused as a whole: it is unpacked into ``.vN.partial-*`` next to the cache
folder, validated, then renamed to ``vN`` in one step; any failure removes the partial folder and
leaves an existing ``vN`` as it was.

Cache layout: ``$FETAL_DETECT_CACHE/roboflow/<workspace>/<project>/v<N>/`` (default
``runs/datasets/roboflow/...``) holding the export as Roboflow made it plus ``manifest.json``
(sha256 per file, images and boxes per class and split, Roboflow metadata, the validation report).

The API key comes from ``--api-key``, ``ROBOFLOW_API_KEY`` or the Roboflow config file
(``~/.config/roboflow/config.json`` or ``$ROBOFLOW_CONFIG_DIR``); it is never printed or logged:
every message, log record and client output passing through :func:`_client_call` is redacted.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "valid", "test")
MANIFEST = "manifest.json"
MAX_ENTRIES = 500_000
MAX_UNPACKED_BYTES = int(os.environ.get("FETAL_DETECT_ROBOFLOW_MAX_BYTES", 50 * 1024**3))
MAX_RATIO = 200  # a member unpacking to > 200x its compressed size is treated as a zip bomb
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
PROBLEM_KINDS = {  # kind -> what a curator reads in the report
    "class_names": "class names differ from datasets.yaml",
    "unknown_class_ids": "class ids outside the export's names",
    "labels_out_of_range": "label coordinates outside [0, 1]",
    "malformed_labels": "label lines that are not YOLO boxes/polygons",
    "images_without_labels": "images without a label file",
    "labels_without_images": "label files without an image",
    "duplicates_across_splits": "identical images (sha256) in more than one split",
}


@dataclass(frozen=True)
class RoboflowRef:
    """A pinned Roboflow dataset version: ``workspace/project`` version ``version`` in ``format``."""

    workspace: str
    project: str
    version: int
    format: str = "yolov8"

    def __post_init__(self):
        for what in ("workspace", "project", "format"):
            value = str(getattr(self, what))
            if not _SLUG.match(value) or ".." in value:
                raise FetalDetectError(f"Roboflow {what} '{value}' is not a valid slug (letters, digits, - _ .)")
        try:
            v = int(self.version)
        except (TypeError, ValueError):
            raise FetalDetectError(f"Roboflow version '{self.version}' is not a whole number") from None
        if v < 1:
            raise FetalDetectError(f"Roboflow version {v} must be 1 or more")
        object.__setattr__(self, "version", v)

    @classmethod
    def from_block(cls, block: dict) -> "RoboflowRef":
        """From a ``datasets.yaml`` ``roboflow: {workspace, project, version, format}`` block."""
        missing = [k for k in ("workspace", "project", "version") if not block.get(k)]
        if missing:
            raise FetalDetectError(f"roboflow block {block} lacks {', '.join(missing)}")
        return cls(str(block["workspace"]), str(block["project"]), block["version"], str(block.get("format", "yolov8")))

    @property
    def slug(self) -> str:
        return f"{self.workspace}/{self.project}/{self.version}"

    def with_version(self, version: int) -> "RoboflowRef":
        return RoboflowRef(self.workspace, self.project, version, self.format)


def cache_root() -> Path:
    """Where synced versions live: ``$FETAL_DETECT_CACHE/roboflow`` (default ``runs/datasets/roboflow``)."""
    return Path(settings.CACHE_DIR) / "roboflow"


def version_dir(ref: RoboflowRef) -> Path:
    return cache_root() / ref.workspace / ref.project / f"v{ref.version}"


def resolve_ref(name: str | None = None, workspace: str | None = None, project: str | None = None,
                version: int | None = None, format: str | None = None):
    """(ref, entry) from a ``datasets.yaml`` name with a ``roboflow`` block, flags overriding it, or flags alone."""
    entry, block = None, {}
    if name:
        from fetal_detect.data.registry import get_entry

        entry = get_entry(name)
        block = entry.source.get("roboflow") or entry.options.get("roboflow") or {}
        if not block and not (workspace and project and version):
            raise FetalDetectError(f"dataset '{entry.name}' has no roboflow block in {settings.DATASETS_YAML.name} "
                                   "(add source: {roboflow: {workspace, project, version, format}} or pass "
                                   "--workspace/--project/--version)")
    ws, pj, vn = workspace or block.get("workspace"), project or block.get("project"), version or block.get("version")
    if not (ws and pj and vn):
        raise FetalDetectError("give a datasets.yaml NAME with a roboflow block, or --workspace, --project and --version")
    return RoboflowRef(str(ws), str(pj), vn, str(format or block.get("format") or "yolov8")), entry


def synced_root(ref: RoboflowRef | dict) -> Path | None:
    """The cache folder of a synced version (a ref or a ``roboflow`` block), or None when not synced."""
    d = version_dir(ref if isinstance(ref, RoboflowRef) else RoboflowRef.from_block(ref))
    return d if (d / MANIFEST).exists() else None


# ---------------------------------------------------------------------------------------------
# the key and the client


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


# ---------------------------------------------------------------------------------------------
# download and safe unpacking


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


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if not name or "\x00" in name:
        return "empty name or NUL byte"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        return "'..' in the path"
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "symlink" if stat.S_ISLNK(mode) else "special file"
    return None


def safe_unpack(zip_path: Path, dest: Path) -> list[str]:
    """Unpack a zip into the empty folder ``dest``, refusing the whole archive on any unsafe member.

    Refused: unreadable/truncated archives (central directory or CRC), ``..``, absolute or drive
    paths, symlinks and special files, duplicate names, and archives that would unpack to more than
    ``MAX_UNPACKED_BYTES`` or ``MAX_RATIO`` x their size. Returns the member names written.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FetalDetectError(f"{zip_path.name}: not a readable zip archive (truncated download?): {e}") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise FetalDetectError(f"{zip_path.name}: the archive is empty")
        if len(infos) > MAX_ENTRIES:
            raise FetalDetectError(f"{zip_path.name}: {len(infos)} entries, more than {MAX_ENTRIES}")
        seen, total = set(), 0
        for info in infos:
            why = _unsafe_reason(info)
            if why:
                raise FetalDetectError(f"{zip_path.name}: refused the whole archive: entry {info.filename!r} ({why})")
            key = PurePosixPath(info.filename.replace("\\", "/")).as_posix().lower()
            if key in seen:
                raise FetalDetectError(f"{zip_path.name}: refused the whole archive: duplicate entry {info.filename!r}")
            seen.add(key)
            total += info.file_size
            if info.file_size > MAX_RATIO * max(info.compress_size, 1024):
                raise FetalDetectError(f"{zip_path.name}: entry {info.filename!r} expands {info.file_size} bytes "
                                       "from far less (zip bomb?)")
        if total > MAX_UNPACKED_BYTES:
            raise FetalDetectError(f"{zip_path.name}: unpacks to {total} bytes, more than {MAX_UNPACKED_BYTES}")
        root = dest.resolve()
        written = []
        for info in infos:
            target = (root / info.filename.replace("\\", "/")).resolve()
            if target != root and root not in target.parents:  # belt and braces after the name checks
                raise FetalDetectError(f"{zip_path.name}: entry {info.filename!r} leaves the target folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "xb") as out:  # "x": never follow or replace a file
                    n = 0
                    while block := src.read(1 << 20):
                        n += len(block)
                        if n > info.file_size:
                            raise FetalDetectError(f"{zip_path.name}: entry {info.filename!r} is longer than declared")
                        out.write(block)
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
                raise FetalDetectError(f"{zip_path.name}: entry {info.filename!r} is corrupt "
                                       f"(truncated download?): {e}") from None
            written.append(info.filename)
    return written


def _export_root(unpacked: Path) -> Path:
    """The folder holding ``data.yaml`` (Roboflow zips have it at the top; accept one wrapping folder)."""
    if (unpacked / "data.yaml").exists():
        return unpacked
    subs = [d for d in unpacked.iterdir() if d.is_dir()]
    if len(subs) == 1 and (subs[0] / "data.yaml").exists():
        return subs[0]
    raise FetalDetectError("the export has no data.yaml: not a YOLOv8 export")


# ---------------------------------------------------------------------------------------------
# validation and the manifest


def _export_names(root: Path) -> list[str]:
    try:
        meta = yaml.safe_load((root / "data.yaml").read_text()) or {}
    except yaml.YAMLError as e:
        raise FetalDetectError(f"{root / 'data.yaml'}: not valid YAML ({str(e).splitlines()[0]})") from None
    names = meta.get("names") or []
    return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def _kind_of(problem: str) -> str:
    """Sort a :func:`~fetal_detect.data.converters.yolo.parse_label_file` message into a report kind."""
    if "no label file" in problem:
        return "images_without_labels"
    if "class id" in problem:
        return "unknown_class_ids"
    if "outside [0, 1]" in problem:
        return "labels_out_of_range"
    return "malformed_labels"


def _files(root: Path) -> dict[str, str]:
    from fetal_detect.data.registry import file_sha256

    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def inspect_export(root: Path, files: dict[str, str], expected_names: list[str] | None = None,
                   remap: dict | None = None) -> tuple[dict, dict, dict]:
    """(counts, images, problems) of an unpacked YOLOv8 export.

    counts: ``{split: {"images": n, "boxes": {class: n}}}``; images: ``{split: {name: sha256}}``;
    problems: ``{kind: [message, ...]}`` with kinds from :data:`PROBLEM_KINDS`.
    """
    from fetal_detect.data.converters import IMAGE_SUFFIXES
    from fetal_detect.data.converters.yolo import parse_label_file

    names = _export_names(root)
    problems: dict[str, list[str]] = defaultdict(list)
    if expected_names:
        mapped = [(remap or {}).get(n, n) for n in names]
        missing, extra = [n for n in expected_names if n not in mapped], [n for n in mapped if n not in expected_names]
        if missing or extra:
            problems["class_names"].append(f"data.yaml names {names} vs datasets.yaml {list(expected_names)}: "
                                           f"missing {missing}, unexpected {extra}")
    counts, images = {}, {}
    for split in SPLIT_FOLDERS:
        img_dir, lbl_dir = root / split / "images", root / split / "labels"
        if not img_dir.is_dir():
            continue
        boxes: Counter = Counter()
        imgs = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for img in imgs:
            found, _, msgs = parse_label_file(lbl_dir / f"{img.stem}.txt", names, "detect")
            boxes.update(n for n, *_ in found)
            for m in msgs:
                problems[_kind_of(m)].append(f"{split}/{m}")
        stems = {p.stem for p in imgs}
        for lbl in sorted(lbl_dir.glob("*.txt")) if lbl_dir.is_dir() else []:
            if lbl.stem not in stems:
                problems["labels_without_images"].append(f"{split}/{lbl.name}")
        images[split] = {p.name: files[f"{split}/images/{p.name}"] for p in imgs}
        counts[split] = {"images": len(imgs), "boxes": dict(sorted(boxes.items()))}
    if not counts:
        raise FetalDetectError("the export has no train/valid/test images folders")
    where: dict[str, list[str]] = defaultdict(list)
    for split, imgs in images.items():
        for name, sha in imgs.items():
            where[sha].append(f"{split}/{name}")
    for sha, places in where.items():
        if len({p.split("/")[0] for p in places}) > 1:
            problems["duplicates_across_splits"].append(" == ".join(places))
    return counts, images, dict(problems)


def problem_summary(problems: dict) -> dict:
    """``{kind: {"count": n, "what": ..., "examples": [first 5]}}`` for the JSON report."""
    return {k: {"count": len(v), "what": PROBLEM_KINDS.get(k, k), "examples": v[:5]} for k, v in problems.items()}


# ---------------------------------------------------------------------------------------------
# sync


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _clean_stale(parent: Path, version: int) -> None:
    """Tidy up after a killed sync of this version (its process is gone): remove its partial folder,
    and put back a previous version it had renamed aside if the new one never took its place."""
    vdir = parent / f"v{version}"
    for d in sorted(parent.glob(f".v{version}.*-*")):
        m = re.match(rf"\.v{version}\.(partial|old)-(\d+)", d.name)
        if not m or _pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not vdir.exists():
            d.rename(vdir)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _cache_intact(vdir: Path, manifest: dict) -> bool:
    try:
        return _files(vdir) == manifest.get("files")
    except OSError:
        return False


def sync(ref: RoboflowRef, api_key: str | None = None, entry=None, strict: bool = False,
         force: bool = False) -> dict:
    """Download ``ref`` into its cache folder (no-op when the pinned version is there and unchanged).

    Returns a JSON-able result: path, status (``synced`` | ``unchanged``), counts, problems.
    ``strict`` turns any validation problem into an error (and nothing is installed).
    """
    if not ref.format.startswith("yolo"):
        raise FetalDetectError(f"Roboflow format '{ref.format}': only YOLO exports (yolov5, yolov8, yolov11, ...) "
                               "are validated and read by the registry")
    key = resolve_api_key(api_key, ref.workspace)
    vdir = version_dir(ref)
    if vdir.parent.is_dir():
        _clean_stale(vdir.parent, ref.version)
    project, version = open_version(ref, key)
    meta = _version_meta(project, version, ref)
    old = json.loads((vdir / MANIFEST).read_text()) if (vdir / MANIFEST).exists() else None
    if old and not force and _same_version(old.get("roboflow"), meta) and _cache_intact(vdir, old) \
            and not (strict and old.get("problems")):
        return _result(vdir, old, "unchanged")
    link = _export_link(version, ref, key)
    vdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".v{ref.version}.partial-{os.getpid()}-", dir=vdir.parent))
    try:
        t0 = time.time()
        size = download(link, staging / "export.zip", key)
        (staging / "unpacked").mkdir()
        safe_unpack(staging / "export.zip", staging / "unpacked")
        root = _export_root(staging / "unpacked")
        files = _files(root)
        expected = (entry.source_names or entry.names) if entry is not None else None
        counts, images, problems = inspect_export(root, files, expected, entry.remap if entry else None)
        _report(ref, problems)
        if strict and problems:
            kinds = ", ".join(f"{len(v)} {PROBLEM_KINDS.get(k, k)}" for k, v in problems.items())
            raise FetalDetectError(f"Roboflow {ref.slug}: --strict: {kinds}; nothing installed")
        if old and not force and old.get("files") == files and _cache_intact(vdir, old):
            old["roboflow"] = meta  # same files under new metadata: record it so the next run is a no-op
            tmp = vdir / f".{MANIFEST}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(old, indent=1, default=str))
            os.replace(tmp, vdir / MANIFEST)
            return _result(vdir, old, "unchanged")
        manifest = {"dataset": entry.name if entry is not None else None, "roboflow": meta,
                    "api_host": _host(_api_url()), "synced": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "download_bytes": size, "download_s": round(time.time() - t0, 2),
                    "names": _export_names(root), "counts": counts, "images": images,
                    "problems": problem_summary(problems), "files": files}
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        _swap_in(root, vdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _result(vdir, manifest, "synced")


def _swap_in(new: Path, vdir: Path) -> None:
    """Replace ``vdir`` by ``new`` with renames (same folder, so each step is atomic)."""
    old = vdir.with_name(f".{vdir.name}.old-{os.getpid()}")
    if vdir.exists():
        vdir.rename(old)
    try:
        new.rename(vdir)
    except OSError:
        if old.exists():
            old.rename(vdir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _report(ref: RoboflowRef, problems: dict) -> None:
    for kind, msgs in problems.items():
        log.warning("%s: %d %s, e.g. %s", ref.slug, len(msgs), PROBLEM_KINDS.get(kind, kind), "; ".join(msgs[:3]))


def _result(vdir: Path, manifest: dict, status: str) -> dict:
    rf = manifest["roboflow"]
    return {"status": status, "dataset": manifest.get("dataset"), "workspace": rf["workspace"],
            "project": rf["project"], "version": rf["version"], "path": str(vdir),
            "manifest": str(vdir / MANIFEST), "names": manifest["names"], "counts": manifest["counts"],
            "problems": manifest["problems"]}


# ---------------------------------------------------------------------------------------------
# diff


def load_manifest(ref: RoboflowRef) -> dict:
    p = version_dir(ref) / MANIFEST
    if not p.exists():
        raise FetalDetectError(f"{ref.slug} is not synced ({p} missing); run `fetal-detect data sync` first")
    return json.loads(p.read_text())


def diff(ref: RoboflowRef, v_from: int, v_to: int, limit: int = 50) -> dict:
    """Added/removed images (by sha256) and box-count changes per class between two synced versions."""
    a, b = load_manifest(ref.with_version(v_from)), load_manifest(ref.with_version(v_to))

    def by_hash(m):
        return {sha: f"{split}/{name}" for split, imgs in m["images"].items() for name, sha in imgs.items()}

    def class_totals(m):
        tot: Counter = Counter()
        for c in m["counts"].values():
            tot.update(c["boxes"])
        return tot

    ha, hb = by_hash(a), by_hash(b)
    added, removed = sorted(hb[h] for h in hb.keys() - ha.keys()), sorted(ha[h] for h in ha.keys() - hb.keys())
    moved = sorted(f"{ha[h]} -> {hb[h]}" for h in ha.keys() & hb.keys() if ha[h].split("/")[0] != hb[h].split("/")[0])
    ca, cb = class_totals(a), class_totals(b)
    classes = {n: {"from": ca.get(n, 0), "to": cb.get(n, 0), "change": cb.get(n, 0) - ca.get(n, 0)}
               for n in sorted(set(ca) | set(cb))}
    splits = {s: {"from": a["counts"].get(s, {}).get("images", 0), "to": b["counts"].get(s, {}).get("images", 0)}
              for s in SPLIT_FOLDERS if s in a["counts"] or s in b["counts"]}
    return {"project": f"{ref.workspace}/{ref.project}", "from": v_from, "to": v_to,
            "images": {"from": len(ha), "to": len(hb), "added": len(added), "removed": len(removed),
                       "moved_split": len(moved), "added_files": added[:limit], "removed_files": removed[:limit],
                       "moved_files": moved[:limit]},
            "splits": splits, "boxes_per_class": classes,
            "names": {"from": a["names"], "to": b["names"]}}


# ---------------------------------------------------------------------------------------------
# push


@dataclass
class PendingUpload:
    """One image and its predicted boxes as YOLO text (``cls xc yc w h`` normalised, no scores)."""

    image: Path
    yolo: str
    boxes: int


def read_predictions(pred_dir: Path, names: list[str], images_dir: Path | None = None,
                     conf: float = 0.0) -> list[PendingUpload]:
    """Pair images with predictions in ``pred_dir``.

    Accepted: YOLO label files ``NAME.txt`` (``cls xc yc w h [conf]`` as Ultralytics ``save_txt`` /
    ``save_conf`` writes them; ids index ``names``) in ``pred_dir`` or ``pred_dir/labels``, or JSON
    reports ``NAME.json`` (``fetal-detect analyze`` output) whose ``instances`` or ``detections`` hold
    ``{name, confidence, box_xyxy}`` items (pixels), at the top or one level down. Images are found
    by stem in ``images_dir`` (default ``pred_dir/images``, else ``pred_dir``). Boxes under ``conf``
    and classes not in ``names`` are dropped.
    """
    from fetal_detect.data.converters import IMAGE_SUFFIXES, box_xyxy_to_xywhn

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FetalDetectError(f"{pred_dir}: predictions folder not found")
    images_dir = Path(images_dir) if images_dir else (pred_dir / "images" if (pred_dir / "images").is_dir() else pred_dir)
    imgs = {p.stem: p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    label_dir = pred_dir / "labels" if (pred_dir / "labels").is_dir() else pred_dir
    preds = sorted(label_dir.glob("*.txt")) + sorted(pred_dir.glob("*.json"))
    index = {n: i for i, n in enumerate(names)}
    out, dropped = [], Counter()
    for p in preds:
        if p.stem not in imgs:
            dropped["no image"] += 1
            continue
        lines = []
        if p.suffix == ".txt":
            from fetal_detect.data.converters.yolo import yolo_lines

            for i, cls, vals in yolo_lines(p.read_text()):
                if cls is None:
                    raise FetalDetectError(f"{p}:{i}: not a YOLO prediction line")
                if len(vals) not in (4, 5) or not 0 <= cls < len(names):
                    raise FetalDetectError(f"{p}:{i}: expected 'class xc yc w h [conf]' with class < {len(names)}")
                if len(vals) == 5 and vals[4] < conf:
                    dropped["below conf"] += 1
                    continue
                lines.append((cls, *vals[:4]))
        else:
            import cv2

            try:
                instances = _instances(json.loads(p.read_text()))
            except ValueError:
                raise FetalDetectError(f"{p}: not JSON") from None
            img = cv2.imread(str(imgs[p.stem]), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise FetalDetectError(f"{imgs[p.stem]}: cannot read image")
            h, w = img.shape[:2]
            for inst in instances:
                if inst.get("name") not in index:
                    dropped["class not in names"] += 1
                    continue
                if float(inst.get("confidence", 1.0)) < conf:
                    dropped["below conf"] += 1
                    continue
                lines.append((index[inst["name"]], *box_xyxy_to_xywhn(*inst["box_xyxy"], w, h)))
        text = "".join(f"{c} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in lines)
        out.append(PendingUpload(imgs[p.stem], text, len(lines)))
    if dropped:
        log.info("predictions skipped: %s", dict(dropped))
    if not out:
        raise FetalDetectError(f"{pred_dir}: no predictions (*.txt or *.json) matching images in {images_dir}")
    return out


def _instances(report) -> list[dict]:
    """``instances`` or ``detections`` (``Instance.as_dict`` items) at the top of a report or one level down."""
    if not isinstance(report, dict):
        return []
    for key in ("instances", "detections"):
        if isinstance(report.get(key), list):
            return report[key]
    return [i for v in report.values() if isinstance(v, dict) for i in _instances(v)]


def push(ref: RoboflowRef, pred_dir: Path, names: list[str], api_key: str | None = None,
         images_dir: Path | None = None, split: str = "train", batch: str | None = None,
         conf: float = 0.0, dry_run: bool = False) -> dict:
    """Upload images with predictions as pre-annotations (``is_prediction``) for curators to correct."""
    items = read_predictions(pred_dir, names, images_dir, conf)
    batch = batch or f"fetal-detect predictions {time.strftime('%Y-%m-%d %H:%M')}"
    result = {"project": f"{ref.workspace}/{ref.project}", "batch": batch, "split": split, "images": len(items),
              "boxes": sum(i.boxes for i in items), "uploaded": 0, "dry_run": dry_run}
    if dry_run:
        return result
    key = resolve_api_key(api_key, ref.workspace)
    project = open_project(ref, key)
    labelmap = dict(enumerate(names))
    for item in items:
        with _client_call(key, f"upload of {item.image.name} to {ref.workspace}/{ref.project}"):
            project.single_upload(image_path=str(item.image), split=split, batch_name=batch,
                                  tag_names=["fetal-detect-prediction"],
                                  annotation_path={"name": f"{item.image.stem}.txt", "rawText": item.yolo}
                                  if item.boxes else None,
                                  annotation_labelmap=labelmap, is_prediction=True)
        result["uploaded"] += 1
    return result


__all__ = ["RoboflowRef", "resolve_ref", "resolve_api_key", "sync", "diff", "push", "safe_unpack",
           "inspect_export", "version_dir", "synced_root", "read_predictions"]
