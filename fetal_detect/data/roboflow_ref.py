"""A pinned Roboflow dataset version and where its synced copy lives (no network, no client)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError

MANIFEST = "manifest.json"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


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


def synced_root(ref: RoboflowRef | dict) -> Path | None:
    """The cache folder of a synced version (a ref or a ``roboflow`` block), or None when not synced."""
    d = version_dir(ref if isinstance(ref, RoboflowRef) else RoboflowRef.from_block(ref))
    return d if (d / MANIFEST).exists() else None
