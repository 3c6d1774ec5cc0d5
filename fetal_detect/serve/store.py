"""``--save-dir``: each analysed frame (PNG pixels, no DICOM header) and its JSON, readable by the owner only."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import cv2
import numpy as np


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrites, never world-readable
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def save_result(save_dir: Path, frame: np.ndarray, resp: dict, max_files: int | None = None) -> str:
    """Write ``<stem>.png`` and ``<stem>.json`` (mode 0600, folder 0700); keep only the newest ``max_files``
    results when given. Returns the stem (time + random id; the client's file name is never used)."""
    save_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    ok, png = cv2.imencode(".png", frame)
    if ok:
        _write_private(save_dir / f"{stem}.png", png.tobytes())
    body = {k: v for k, v in resp.items() if not k.endswith("_png")}
    _write_private(save_dir / f"{stem}.json", (json.dumps(body, indent=2, default=str) + "\n").encode())
    if max_files:
        prune(save_dir, max_files)
    return stem


def prune(save_dir: Path, max_files: int) -> None:
    """Delete the oldest results beyond the newest ``max_files`` (a result = its .json and .png)."""
    stems = [p.stem for p in sorted(save_dir.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))]
    for stem in stems[:max(0, len(stems) - max_files)]:
        for suffix in (".json", ".png"):
            try:
                (save_dir / f"{stem}{suffix}").unlink()
            except FileNotFoundError:
                pass
