"""The task table (``cfg/tasks.yaml``) as typed rows: task (a model) -> model yaml, data, imgsz, measurement.

The one place that says what a task is; CLI defaults, training, evaluation and export read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from fetal_detect.errors import FetalDetectError
from fetal_detect.settings import PACKAGE_DIR, WEIGHTS_DIR

TASKS_YAML = PACKAGE_DIR / "cfg" / "tasks.yaml"


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # Ultralytics task: segment | detect | classify, or gan
    model: str | None
    data: str
    test_data: str
    imgsz: int
    epochs: int
    batch: int
    measure: str | None
    metric: str
    description: str
    preprocess: tuple[str, ...] = field(default_factory=tuple)

    @property
    def weights(self) -> Path:
        """The shipped model for this task: ``weights/<task>.pt``."""
        return WEIGHTS_DIR / f"{self.name}.pt"


@lru_cache(maxsize=1)
def task_table() -> dict[str, Task]:
    rows = yaml.safe_load(TASKS_YAML.read_text())
    return {name: Task(name=name, **{**row, "preprocess": tuple(row.get("preprocess") or ())})
            for name, row in rows.items() if name != "measure"}  # measure: the measurer table (measurers.py)


def get_task(name: str) -> Task:
    table = task_table()
    if name not in table:
        raise FetalDetectError(f"unknown task '{name}'; choose one of: {', '.join(table)}")
    return table[name]


TASK_NAMES = tuple(task_table())
