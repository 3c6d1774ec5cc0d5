"""Unpack a downloaded export safely: no ``..`` or absolute names, no links, bounded entries, size and ratio."""
from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from fetal_detect.errors import FetalDetectError

MAX_ENTRIES = 500_000
MAX_UNPACKED_BYTES = int(os.environ.get("FETAL_DETECT_ROBOFLOW_MAX_BYTES", 50 * 1024**3))
MAX_RATIO = 200  # a member unpacking to > 200x its compressed size is treated as a zip bomb


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
