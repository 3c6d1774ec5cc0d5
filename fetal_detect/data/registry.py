"""The dataset registry: ``datasets.yaml`` names -> converted, cached Ultralytics datasets.

``prepare(NAME, kind)`` reads the entry, runs the reader for its layout, splits by patient, and
writes ``runs/datasets/NAME[/fold-K-of-N]/`` with ``data.yaml`` (or class folders), ``manifest.json``
(source hashes, counts per class and split, the split rule) and ``meta.csv`` (per-image facts such
as pixel size and reference HC). The result is cached: a second call with the same entry and
unchanged sources returns at once. A folder path works in place of a name (layout auto-detected).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from fetal_detect import settings
from fetal_detect.data.converters import Record, detect_layout, get_reader
from fetal_detect.data.splits import assign_by_rule, check_no_leakage
from fetal_detect.errors import FetalDetectError
from fetal_detect.io import stream_sha256

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


# Records that an upper layer adds to a dataset's *train* split, keyed by the datasets.yaml option that asks
# for them: ``synthetic:`` -> the GAN's sampler (registered by ``fetal_detect.gan``). The data layer calls
# the hook and imports nothing of the GAN, training or evaluation.
RECORD_HOOKS: dict[str, Callable[[dict, str], list[Record]]] = {}


def register_record_hook(option: str, hook: Callable[[dict, str], list[Record]]) -> None:
    """Let ``option: {...}`` in a datasets.yaml entry append ``hook(options, kind)`` records to its train split."""
    RECORD_HOOKS[option] = hook


def record_hooks(entry: "DatasetEntry") -> dict[str, Callable[[dict, str], list[Record]]]:
    """The hooks an entry's options ask for; a one-line error for an option nobody registered."""
    wanted = sorted({o for o in (*RECORD_HOOKS, "synthetic") if entry.options.get(o)})
    missing = [o for o in wanted if o not in RECORD_HOOKS]
    if missing:
        raise FetalDetectError(f"dataset '{entry.name}' asks for {', '.join(missing)} records but no module registered "
                               f"them (import fetal_detect.gan for `synthetic:`)")
    return {o: RECORD_HOOKS[o] for o in wanted}


@dataclass
class DatasetEntry:
    """One row of ``datasets.yaml``. ``names`` is the output label space; ``remap`` maps source names to it."""

    name: str
    layout: str
    source: dict
    tasks: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    remap: dict = field(default_factory=dict)
    source_names: list[str] | None = None
    split: dict = field(default_factory=dict)
    license: str = ""
    citation: str = ""
    description: str = ""
    options: dict = field(default_factory=dict)

    @property
    def root(self) -> Path | None:
        """The source folder (relative paths are from the project home), or None for generated data."""
        path = self.source.get("path")
        if path is None:
            if "roboflow" in self.source:  # a Roboflow entry without a local copy: the synced version
                from fetal_detect.data.roboflow_ref import synced_root

                root = synced_root(self.source["roboflow"])
                if root is None:
                    raise FetalDetectError(f"dataset '{self.name}' is not synced yet: run "
                                           f"`fetal-detect data sync {self.name}`")
                return root
            return None
        p = Path(os.path.expandvars(str(path))).expanduser()
        return p if p.is_absolute() else (settings.HOME / p).resolve()

    def fingerprint_data(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("description", "license", "citation")}


def load_registry(path: Path | None = None) -> dict[str, DatasetEntry]:
    """All entries of ``datasets.yaml`` (``$FETAL_DETECT_DATASETS`` or the project's)."""
    path = Path(path or settings.DATASETS_YAML)
    if not path.exists():
        raise FetalDetectError(f"{path}: dataset registry not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FetalDetectError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    entries = {}
    known = set(DatasetEntry.__dataclass_fields__)
    for name, row in (raw.get("datasets") or raw).items():
        if not isinstance(row, dict) or "layout" not in row or "source" not in row:
            raise FetalDetectError(f"{path}: entry '{name}' needs at least 'layout' and 'source'")
        extra = {k: v for k, v in row.items() if k not in known}
        entries[name] = DatasetEntry(name=name, **{k: v for k, v in row.items() if k in known and k != "options"},
                                     options={**row.get("options", {}), **extra})
    return entries


def get_entry(name_or_path: str | Path, registry: dict | None = None) -> DatasetEntry:
    """A registry entry by name, or an ad-hoc entry for a folder (layout detected from its files)."""
    registry = registry if registry is not None else load_registry()
    if str(name_or_path) in registry:
        return registry[str(name_or_path)]
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        layout = detect_layout(p)
        if layout is None:
            raise FetalDetectError(f"{p}: cannot tell the dataset layout (expected HC18, Shenzhen NT, YOLO, "
                                   "Roboflow YOLOv8, VOC masks, FETAL_PLANES_DB or one folder per class)")
        return DatasetEntry(name=_slug(p), layout=layout, source={"path": str(p.resolve())})
    raise FetalDetectError(f"'{name_or_path}' is neither a dataset in {settings.DATASETS_YAML.name} "
                           f"({', '.join(sorted(registry))}) nor a folder")


def _slug(p: Path) -> str:
    digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]
    return f"dir-{p.name}-{digest}"


# ---------------------------------------------------------------------------------------------
# reading


def read_records(entry: DatasetEntry, kind: str, registry: dict | None = None) -> list[Record]:
    """Records of an entry in its output label space (``remap`` applied, unknown classes dropped)."""
    if entry.layout == "union":
        registry = registry if registry is not None else load_registry()
        out: list[Record] = []
        for member in entry.source["union"]:
            sub = read_records(get_entry(member, registry), kind, registry)
            for r in sub:
                r.meta.setdefault("source_dataset", member)
                r.name = f"{member}__{r.name}"
                r.patient_id = f"{member}:{r.patient_id}"
                if "labels" in entry.source:  # classification union: every image of a member is one class
                    r.label = entry.source["labels"][member]
            out.extend(sub)
        return _to_label_space(out, entry)
    root = entry.root
    if root is not None and not root.exists():
        raise FetalDetectError(f"dataset '{entry.name}': source folder {root} not found")
    records = list(get_reader(entry.layout)(entry, root, kind))
    for r in records:
        r.meta.setdefault("source_dataset", entry.name)
    return _to_label_space(records, entry)


def _to_label_space(records: list[Record], entry: DatasetEntry) -> list[Record]:
    if not entry.names and not entry.remap:
        return records
    keep = set(entry.names)

    def mapped(n):
        n2 = entry.remap.get(n, n)
        return n2 if (not keep or n2 in keep) else None

    for r in records:
        r.boxes = [(mapped(n), *v) for n, *v in r.boxes if mapped(n)]
        r.polygons = [(mapped(n), p) for n, p in r.polygons if mapped(n)]
        if r.label is not None:
            r.label = entry.remap.get(r.label, r.label)
    return records


def _source_fingerprint(entry: DatasetEntry, registry: dict) -> str:
    h = hashlib.sha1(json.dumps(entry.fingerprint_data(), sort_keys=True, default=str).encode())
    gen = (entry.options.get("synthetic") or {}).get("generator")
    if gen and (settings.HOME / gen).exists():  # a retrained generator invalidates the cache
        st = (settings.HOME / gen).stat()
        h.update(f"{gen}:{st.st_size}:{int(st.st_mtime)}".encode())
    if entry.layout == "union":
        for m in entry.source["union"]:
            h.update(_source_fingerprint(get_entry(m, registry), registry).encode())
    elif entry.root is not None and entry.root.exists():
        for p in sorted(entry.root.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(entry.root)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes; raises when it cannot be read (``io.regular_file_sha256`` says None)."""
    with open(path, "rb") as f:
        return stream_sha256(f)


# ---------------------------------------------------------------------------------------------
# writing


@dataclass
class PreparedDataset:
    """A converted dataset: ``data`` is what Ultralytics takes (data.yaml, or the folder for classify)."""

    root: Path
    data: Path
    manifest: dict

    @property
    def names(self) -> list[str]:
        return self.manifest["names"]


def prepare(name_or_path: str | Path, kind: str, folds: int | None = None, fold: int = 0,
            force: bool = False, out_root: Path | None = None, preprocess=None) -> PreparedDataset:
    """Convert (or reuse from cache) a dataset for an Ultralytics task ``kind`` (segment/detect/classify).

    ``preprocess``: steps of :func:`fetal_detect.preprocess.apply` baked into the written images (they
    are then PNG copies, not links); each set of steps has its own cache folder ``KIND-pp<hash>``.
    """
    from fetal_detect import preprocess as pp

    steps = pp.canonical(preprocess)
    if steps and kind != "classify" and pp.changes_geometry(steps):
        raise FetalDetectError(f"preprocess steps {steps} change the image geometry; they are only allowed "
                               "for classification (boxes and masks would no longer match)")
    registry = load_registry()
    entry = get_entry(name_or_path, registry)
    out_root = Path(out_root or settings.CACHE_DIR)
    key = pp.steps_key(steps)
    out = out_root / entry.name / (f"fold-{fold}-of-{folds}" if folds else "holdout") / (f"{kind}-pp{key}" if key else kind)
    fp = hashlib.sha1(f"{_source_fingerprint(entry, registry)}:{kind}:{folds}:{fold}".encode()
                      + (f":pp{json.dumps(steps, sort_keys=True)}".encode() if steps else b"")).hexdigest()
    mf = out / "manifest.json"
    if mf.exists() and not force:
        manifest = json.loads(mf.read_text())
        if manifest.get("fingerprint") == fp:
            return PreparedDataset(out, out / "data.yaml" if kind != "classify" else out, manifest)
    records = read_records(entry, kind, registry)
    if not records:
        raise FetalDetectError(f"dataset '{entry.name}': no images found")
    return write_dataset(records, entry, kind, out, fp, folds, fold, preprocess=steps)


def _assign(records: list[Record], entry: DatasetEntry, folds: int | None, fold: int) -> list[str]:
    rule = entry.split or {}
    if rule.get("use_source_split") and not folds and all(r.split for r in records):
        return [r.split for r in records]
    return assign_by_rule([r.patient_id for r in records], rule, folds=folds, fold=fold)


def write_dataset(records: list[Record], entry: DatasetEntry, kind: str, out: Path, fingerprint: str,
                  folds: int | None = None, fold: int = 0, preprocess=None) -> PreparedDataset:
    """Split by patient and write the Ultralytics layout into a temporary folder, then swap it in."""
    import cv2

    from fetal_detect import preprocess as pp

    splits = _assign(records, entry, folds, fold)
    check_no_leakage([r.patient_id for r in records], splits)
    for option, hook in record_hooks(entry).items():  # e.g. GAN images: after the split, to train only, never val/test
        extra = hook(entry.options[option], kind)
        records, splits = records + extra, splits + ["train"] * len(extra)
    if kind == "classify" and entry.options.get("source_aug"):  # source cues randomised: extra train copies
        from fetal_detect.data.source_aug import augmented_records

        extra = augmented_records(records, splits, entry.options["source_aug"])
        records, splits = records + extra, splits + ["train"] * len(extra)
    names = list(entry.names) or sorted({n for r in records for n, *_ in (r.boxes + r.polygons)} |
                                        {r.label for r in records if r.label})
    index = {n: i for i, n in enumerate(names)}
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict = defaultdict(lambda: {"images": 0, "patients": set(), "instances": Counter()})
    files, meta_rows = [], []
    from tqdm import tqdm

    for rec, split in tqdm(list(zip(records, splits)), desc=f"convert {entry.name}", unit="img",
                           disable=len(records) < 200):
        if kind == "classify":
            if rec.label is None:
                continue
            img_dir = tmp / split / rec.label
        else:
            img_dir = tmp / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        if preprocess:  # processed copies: training sees what the runtime will feed the model
            dst = img_dir / f"{rec.name}.png"
            src = cv2.imread(str(rec.image), cv2.IMREAD_UNCHANGED) if isinstance(rec.image, Path) else rec.image()
            if src is None:
                raise FetalDetectError(f"{rec.image}: cannot read image")
            if src.dtype != "uint8":
                src = cv2.convertScaleAbs(src, alpha=255.0 / max(float(src.max()), 1.0))
            if not cv2.imwrite(str(dst), pp.apply(src, preprocess)):
                raise FetalDetectError(f"{dst}: could not write image")
            sha = file_sha256(dst)
        elif isinstance(rec.image, Path):
            dst = img_dir / f"{rec.name}{rec.image.suffix.lower()}"
            os.symlink(rec.image.resolve(), dst)
            sha = file_sha256(rec.image)
        else:
            dst = img_dir / f"{rec.name}.png"
            if not cv2.imwrite(str(dst), rec.image()):
                raise FetalDetectError(f"{dst}: could not write image")
            sha = file_sha256(dst)
        c = counts[split]
        c["images"] += 1
        c["synthetic"] = c.get("synthetic", 0) + bool(rec.meta.get("synthetic"))
        c["patients"].add(rec.patient_id)
        if kind == "classify":
            c["instances"][rec.label] += 1
        else:
            lines = []
            if kind == "segment":
                for n, poly in rec.polygons:
                    lines.append(f"{index[n]} " + " ".join(f"{v:.6f}" for v in poly.reshape(-1)))
                    c["instances"][n] += 1
            else:
                for n, xc, yc, w, h in rec.boxes:
                    lines.append(f"{index[n]} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}")
                    c["instances"][n] += 1
            lbl_dir = tmp / "labels" / split
            lbl_dir.mkdir(parents=True, exist_ok=True)
            (lbl_dir / f"{rec.name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        files.append({"name": dst.name, "split": split, "patient": rec.patient_id, "sha256": sha,
                      "source": str(rec.image) if isinstance(rec.image, Path) else "generated",
                      **({"synthetic": True} if rec.meta.get("synthetic") else {})})
        meta_rows.append({"name": rec.name, "file": str(dst.relative_to(tmp)), "split": split,
                          "patient": rec.patient_id, **rec.meta,
                          **({"source_file": str(rec.image)} if preprocess and isinstance(rec.image, Path) else {})})
    if not counts.get("val", {}).get("images") and kind != "gan":
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetalDetectError(f"dataset '{entry.name}': the split left no validation images "
                               f"({len(records)} images, {len({r.patient_id for r in records})} patients)")
    data_path = tmp if kind == "classify" else tmp / "data.yaml"
    if kind != "classify":
        present = [s for s in SPLITS if counts.get(s, {}).get("images")]
        data_yaml = {"path": str(out.resolve()), **{s: f"images/{s}" for s in present},
                     "names": dict(enumerate(names))}
        data_path.write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    import pandas as pd

    pd.DataFrame(meta_rows).to_csv(tmp / "meta.csv", index=False)
    manifest = {
        "dataset": entry.name, "layout": entry.layout, "kind": kind, "names": names,
        "source": entry.source, "fingerprint": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "split_rule": {**(entry.split or {}), "folds": folds, "fold": fold if folds else None,
                       "grouped_by": "patient"},
        "preprocess": list(preprocess or []),
        "counts": {s: {"images": v["images"], "synthetic": v.get("synthetic", 0), "patients": len(v["patients"]),
                       "instances": dict(sorted(v["instances"].items()))} for s, v in counts.items()},
        "license": entry.license, "citation": entry.citation, "files": files,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    # swap in atomically: a failure above leaves the previous version untouched
    old = out.with_name(out.name + f".old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return PreparedDataset(out, out / "data.yaml" if kind != "classify" else out, manifest)


def summary(entry: DatasetEntry) -> str:
    where = entry.root or entry.source.get("phantom") and f"phantom:{entry.source['phantom']}" or entry.source
    return f"{entry.name:18s} {entry.layout:16s} {','.join(entry.tasks):24s} {where}"
