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

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from fetal_detect import settings
from fetal_detect.data.roboflow_client import (_api_url, _client_call, _export_link, _host, _one_line, _same_version,
                                              _version_meta, download, open_project, open_version, resolve_api_key)
from fetal_detect.data.roboflow_push import PendingUpload, push, read_predictions
from fetal_detect.data.roboflow_ref import MANIFEST, RoboflowRef, cache_root, synced_root, version_dir
from fetal_detect.data.safe_zip import _export_root, safe_unpack
from fetal_detect.errors import FetalDetectError

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "valid", "test")
PROBLEM_KINDS = {  # kind -> what a curator reads in the report
    "class_names": "class names differ from datasets.yaml",
    "unknown_class_ids": "class ids outside the export's names",
    "labels_out_of_range": "label coordinates outside [0, 1]",
    "malformed_labels": "label lines that are not YOLO boxes/polygons",
    "images_without_labels": "images without a label file",
    "labels_without_images": "label files without an image",
    "duplicates_across_splits": "identical images (sha256) in more than one split",
}


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


__all__ = ["RoboflowRef", "cache_root", "PendingUpload", "open_project", "_client_call", "_one_line", "resolve_ref",
           "resolve_api_key", "sync", "diff", "push", "safe_unpack",
           "inspect_export", "version_dir", "synced_root", "read_predictions"]
