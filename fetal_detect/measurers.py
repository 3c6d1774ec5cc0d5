"""The measurer table (the ``measure:`` block of ``cfg/tasks.yaml``) as typed rows, like Ultralytics' task_map.

Vocabulary: a **task** is a model (``hc-seg``, ``nt-det``, ``cns-seg``, ``plane-cls``: the rows above the
``measure:`` block, what ``train``/``evaluate``/``export`` take); a **measurement** (a *measurer*) turns the
outputs of one or more tasks into numbers with units (``hc``, ``nt``, ``cns``, ...: what ``analyze``,
``measure``, ``batch``, the API and the page take). Everything that lists measurements is generated
from this table: the CLI choices, the API's ``task`` enum, the page's task list, the batch columns and
the auto router (plane -> measurers). Adding a measurement = one module + one row here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import lru_cache

import yaml

from fetal_detect.errors import FetalDetectError
from fetal_detect.tasks import TASKS_YAML

AUTO = "auto"  # classify the plane first, then run the measurers that serve it
FIELD_UNITS = ("mm", "mm2", "px", "px2", "weeks", "deg", "")  # what a field's unit may be ("" = a count or ratio)


@dataclass(frozen=True)
class MeasurerSpec:
    """One row of the measurer table."""

    name: str
    description: str
    impl: str  # "module:Class": built as Class(**{argument: weights}) from ``models``/``optional_models``
    models: dict[str, str]  # model task -> the constructor argument that takes its weights (must load)
    planes: tuple[str, ...]  # plane-cls classes this measurement serves (the auto router)
    fields: dict[str, str]  # result field -> unit; the numbers a result carries (batch columns, units)
    optional_models: dict[str, str] = field(default_factory=dict)  # loaded when shipped or named
    columns: tuple[str, ...] = ()  # further per-image batch columns the measurer declares (flags, sources)
    overlay: tuple[str, ...] = ()  # primitives it draws: ellipse, calipers, boxes

    @property
    def all_models(self) -> tuple[str, ...]:
        return (*self.models, *self.optional_models)

    def load_class(self):
        module, _, cls = self.impl.partition(":")
        return getattr(importlib.import_module(module), cls)

    def build(self, weights: dict[str, str | None]):
        """The measurer, its models loaded from ``weights`` (model task -> file; None: the shipped/fastest one)."""
        kwargs = {arg: weights.get(task) for task, arg in {**self.models, **self.optional_models}.items()}
        return self.load_class()(**kwargs)


@lru_cache(maxsize=1)
def measurer_table() -> dict[str, MeasurerSpec]:
    rows = (yaml.safe_load(TASKS_YAML.read_text()) or {}).get("measure") or {}
    table = {}
    for name, row in rows.items():
        try:
            table[name] = MeasurerSpec(
                name=name, description=row["description"], impl=row["impl"], models=dict(row["models"]),
                optional_models=dict(row.get("optional_models") or {}), planes=tuple(row.get("planes") or ()),
                fields=dict(row.get("fields") or {}), columns=tuple(row.get("columns") or ()),
                overlay=tuple(row.get("overlay") or ()))
        except (KeyError, TypeError) as e:
            raise FetalDetectError(f"{TASKS_YAML}: measure row '{name}' is malformed ({e})") from None
    return table


def get_measurer(name: str) -> MeasurerSpec:
    table = measurer_table()
    if name not in table:
        raise FetalDetectError(f"unknown measurement '{name}'; choose one of: {', '.join(choices())}")
    return table[name]


def names() -> tuple[str, ...]:
    """The measurements, in table order."""
    return tuple(measurer_table())


def choices() -> tuple[str, ...]:
    """What ``analyze --task``, ``batch --task`` and the API's ``task`` accept: ``auto`` and every measurement."""
    return (AUTO, *names())


def routes(plane: str | None) -> list[str]:
    """The auto router: the measurements that serve ``plane`` (table order; [] for ``other`` or unknown)."""
    return [m.name for m in measurer_table().values() if plane in m.planes]


def default_measurer() -> str:
    """``auto`` without a plane classifier: the first row (HC, as before plane-cls existed)."""
    return names()[0]


def primary_model(name: str) -> str:
    """The model a bare ``--weights PATH`` belongs to for ``name`` (``auto``: the default measurer's)."""
    spec = get_measurer(default_measurer() if name == AUTO else name)
    return next(iter(spec.models))


def units() -> dict[str, str]:
    """Every result field of the table -> its unit."""
    return {f: u for m in measurer_table().values() for f, u in m.fields.items()}


def field_columns() -> list[str]:
    """Batch columns of the measurements, in table order: each measurer's fields, then its declared columns."""
    out: list[str] = []
    for m in measurer_table().values():
        out += [c for c in (*m.fields, *m.columns) if c not in out]
    return out


def describe() -> list[dict]:
    """The table as JSON (the API's ``/api/v1/measurers``, which the page's task list is built from)."""
    return [{"name": m.name, "description": m.description, "models": list(m.models),
             "optional_models": list(m.optional_models), "planes": list(m.planes), "fields": m.fields,
             "columns": list(m.columns), "overlay": list(m.overlay)} for m in measurer_table().values()]
