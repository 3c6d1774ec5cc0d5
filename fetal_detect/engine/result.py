"""What a training run returns (shared by the YOLO trainer and the GAN loop, which import nothing else of each other)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    task: str
    weights: Path
    run_dir: Path
    metrics: dict = field(default_factory=dict)
