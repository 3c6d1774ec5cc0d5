"""Batch output: a JSON-lines journal while running, one Parquet/CSV file at the end (atomic)."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from fetal_detect import measurers
from fetal_detect.result import HEAD, TAIL
from fetal_detect.errors import FetalDetectError

FORMATS = ("parquet", "csv")


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def output_format(out: Path, fmt: str | None) -> str:
    fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "parquet")
    if fmt not in FORMATS:
        raise FetalDetectError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    return fmt


class Journal:
    """Append-only JSON lines, flushed after every row: a kill loses only rows not yet returned."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rows-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        self.f = open(self.path, "a", encoding="utf-8")
        self.n = 0

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        self.n += 1

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        if not self.n:  # nothing written (all skipped, or stopped before the first row)
            self.path.unlink()
            try:  # only when empty: journals of an earlier, killed run stay for the resume
                self.path.parent.rmdir()
            except OSError:
                pass


def read_rows(out: Path, fmt: str) -> list[dict]:
    """Rows already in ``out`` and in its journals (a half-written last line is ignored)."""
    rows: list[dict] = []
    if out.exists():
        import pandas as pd

        try:
            df = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out, dtype={"sha256": str})
        except Exception as e:  # noqa: BLE001
            raise FetalDetectError(f"{out}: cannot read the existing output to resume ({type(e).__name__}); "
                                   f"move it away or pick another --out") from None
        rows = [{k: _none_if_nan(v) for k, v in r.items()} for r in df.to_dict("records")]
    pdir = parts_dir(out)
    for j in sorted(pdir.glob("*.jsonl")) if pdir.is_dir() else []:
        for line in j.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written when the run was killed
                continue
    return rows


def _none_if_nan(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


def consolidate(rows: list[dict], out: Path, fmt: str) -> int:
    """Deduplicate (last row per path + hash wins), sort by path, write ``out`` atomically. Returns rows."""
    import pandas as pd

    last = {(r.get("path"), r.get("sha256")): r for r in rows}
    rows = sorted(last.values(), key=lambda r: (str(r.get("path")), str(r.get("sha256"))))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    fields = measurers.field_columns()  # the measurer table's columns, in table order, always present
    extra = sorted(k for k in keys if k not in fields and k not in HEAD and k not in TAIL and k != "overlay")
    cols = [*HEAD, *fields, *extra, *TAIL] + (["overlay"] if "overlay" in keys else [])
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    numeric = [*measurers.units(), "plane_confidence", "quality", "pixel_size_mm", "processing_ms"]
    for c in numeric:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in cols:
        if c not in numeric and df[c].map(lambda v: v is None or isinstance(v, str)).all():
            df[c] = df[c].astype("string")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return len(df)


def _remove_parts(folder: Path) -> None:
    for j in folder.glob("*.jsonl"):
        j.unlink()
    try:
        folder.rmdir()
    except OSError:  # someone else's file in there: leave it
        pass
