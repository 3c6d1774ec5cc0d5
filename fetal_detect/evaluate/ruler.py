"""Evaluate the on-screen ruler calibration on real screenshots: ``fetal-detect evaluate --task ruler --data D``.

- ``D`` a folder with ``images/`` and ``pixel_size.csv`` (``file,pixel_size_mm``; ../shared/data/tv_plane):
  coverage (share of images the ruler calibrates) and the distribution of ``|ruler / reference - 1|`` over
  the images with a reference (median, p90, share within 5 % and 8 %, share off by more than 15 %).
- ``D`` a Shenzhen-layout NT set (``nt_shenzhen`` or its folder; no reference pixel size): the ruler's
  coverage over every image; then, as ``analyze --task nt`` does with no pixel size, on the ``--split``
  images of the registry split (``--split all`` or a folder: every image): coverage once the anatomy has
  checked the ruler or picked its interval, the automatic NT in mm, and the calibrated scale against the
  annotated anatomy (``ObjectDetection.csv``: thalami, midbrain, palate at their 11-14 week sizes).

Writes ``metrics.json`` and ``per_image.csv`` (and ``ruler_sheet.png``: the first 16 tick overlays).
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.report import contact_sheet, write_csv, write_image, write_json

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def agreement(ratios: np.ndarray) -> dict:
    """``|ruler / reference - 1|`` summary: median, p90, share within 5 % / 8 %, share off by > 15 %."""
    e = np.abs(np.asarray(ratios, float) - 1)
    if not e.size:
        return {"n": 0}
    return {"n": int(e.size), "median_abs_rel_err": round(float(np.median(e)), 4),
            "p90_abs_rel_err": round(float(np.percentile(e, 90)), 4),
            "share_within_5pct": round(float(np.mean(e <= 0.05)), 4),
            "share_within_8pct": round(float(np.mean(e <= 0.08)), 4),
            "share_off_gt_15pct": round(float(np.mean(e > 0.15)), 4),
            "median_ratio": round(float(np.median(ratios)), 4)}


def _read_all(paths: list[Path], progress: bool) -> tuple[list[dict], list]:
    """Ruler read of every image -> per-image rows and the first overlays."""
    import cv2
    from tqdm import tqdm

    from fetal_detect.measure.ruler import draw_ruler, read_ruler

    rows, tiles = [], []
    for p in tqdm(paths, desc="ruler", unit="img", disable=not progress):
        grey = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            rows.append({"image": p.name, "pixel_size_mm": None, "reason": "unreadable"})
            continue
        t0 = time.perf_counter()
        r = read_ruler(grey)
        ms = (time.perf_counter() - t0) * 1000
        rows.append({"image": p.name, "pixel_size_mm": r.pixel_size_mm, "side": r.side, "spacing_px": r.spacing_px,
                     "n_ticks": len(r.ticks), "pattern": r.pattern, "confidence": r.confidence, "reason": r.reason,
                     "ambiguous": r.ambiguous, "ruler_ms": round(ms, 1), "_ruler": r})
        if r.pixel_size_mm and len(tiles) < 16:
            tiles.append(draw_ruler(grey, r))
    return rows, tiles


def _coverage(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["pixel_size_mm"]]
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["pixel_size_mm"]:
            key = re.sub(r"\d+(\.\d+)?", "N", r["reason"].split("(")[0].strip())[:60]
            reasons[key] = reasons.get(key, 0) + 1
    ms = [r["ruler_ms"] for r in rows if "ruler_ms" in r]
    px = [r["pixel_size_mm"] for r in ok]
    return {"n_images": len(rows), "n_calibrated": len(ok), "coverage": round(len(ok) / max(len(rows), 1), 4),
            "n_interval_ambiguous": sum(bool(r.get("ambiguous")) for r in rows),
            "sides": {s: sum(r["side"] == s for r in ok) for s in ("left", "right", "bottom")},
            "pixel_size_mm_p5_p50_p95": [round(float(v), 4) for v in np.percentile(px, [5, 50, 95])] if px else None,
            "refusals": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "ruler_ms_median": round(float(np.median(ms)), 1) if ms else None}


def _shenzhen_split(data: str, split: str) -> tuple[Path, set[str] | None, str]:
    from fetal_detect.data import registry
    from fetal_detect.data.splits import assign_by_rule

    entry = registry.get_entry(str(data))
    if entry.layout != "shenzhen-nt" or entry.root is None:
        raise FetalDetectError(f"ruler: --data needs pixel_size.csv or a Shenzhen NT set, got '{data}'")
    if Path(str(data)).is_dir() or split == "all":
        return Path(entry.root), None, f"all images of {entry.root}"
    stems = sorted(p.stem for p in (Path(entry.root) / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    splits = assign_by_rule(stems, entry.split)
    return Path(entry.root), {s for s, sp in zip(stems, splits) if sp == split}, f"{entry.name} {split} split"


def _automatic_nt(rows: list[dict], img_root: Path, keep: set[str] | None, weights,
                  progress: bool) -> tuple[list[dict], dict]:
    """``analyze --task nt`` without a pixel size on the images whose stem is in ``keep``: the ruler read,
    checked (or its interval picked) by the anatomy nt-det finds, then the NT in mm."""
    import cv2
    from tqdm import tqdm

    from fetal_detect.measure.calibration import ruler_calibration
    from fetal_detect.pipeline.analyze import Analyzer

    analyzer = Analyzer({"nt-det": str(weights)} if weights else None)
    todo = [r for r in rows if keep is None or Path(r["image"]).stem in keep]
    for r in tqdm(todo, desc="automatic NT", unit="img", disable=not progress):
        # read again rather than kept from the ruler pass: a whole set of frames in memory is ~0.3 GB
        grey = cv2.imread(str(img_root / "images" / r["image"]), cv2.IMREAD_GRAYSCALE)
        if grey is None or "_ruler" not in r:
            r["nt_status"] = "unreadable"
            continue
        res = analyzer.analyze(grey, task="nt", calibration=ruler_calibration(r["_ruler"]))
        nt = res.results.get("nt")
        anatomy = (res.ruler or {}).get("anatomy") or {}
        r.update(calibrated_mm=res.pixel_size_mm, calibration=res.pixel_size_detail,
                 interval_from=(res.ruler or {}).get("interval_from") if res.pixel_size_mm else None,
                 anatomy_mm=anatomy.get("pixel_size_mm"), nt_status=nt.status if nt else res.status)
        if nt is not None and (nt.status == "ok" or nt.details.get("nt_mm_unsuitable_plane")):
            r.update(nt_mm=nt.values.get("nt_mm") or nt.details.get("nt_mm_unsuitable_plane"),
                     nt_plane_ok=nt.details.get("plane_ok"), nt_risk_flag=(nt.details.get("risk") or {}).get("flag"))
    done = [r for r in todo if "nt_status" in r and r["nt_status"] != "unreadable"]
    cal = [r for r in done if r.get("calibrated_mm")]
    nt = np.array([r["nt_mm"] for r in done if r.get("nt_mm") is not None], float)
    ok_plane = np.array([r["nt_mm"] for r in done if r.get("nt_plane_ok") and r.get("nt_mm") is not None], float)
    stats = {"n_split_images": len(done), "n_split_calibrated": len(cal),
             "split_coverage": round(len(cal) / max(len(done), 1), 4),
             "split_coverage_ruler_alone": round(sum(bool(r["pixel_size_mm"]) for r in done) / max(len(done), 1), 4),
             "interval_picked_by_anatomy": sum(r.get("interval_from") == "anatomy" for r in cal),
             "ruler_vetoed_by_anatomy": sum("disagrees with the fetal anatomy" in (r.get("calibration") or "")
                                            for r in done),
             "n_nt_mm": int(nt.size), "n_nt_mm_plane_ok": int(ok_plane.size)}
    for name, v in (("nt_mm", nt), ("nt_mm_plane_ok", ok_plane)):
        if v.size:
            stats[name] = {"median": round(float(np.median(v)), 3),
                           "p10_p25_p75_p90": [round(float(x), 3) for x in np.percentile(v, [10, 25, 75, 90])],
                           "share_1_to_3_5mm": round(float(np.mean((v >= 1.0) & (v <= 3.5))), 4),
                           "share_ge_3_5mm": round(float(np.mean(v >= 3.5)), 4)}
    stats["vs_annotated_anatomy"] = _annotated_anatomy(cal, img_root)
    return todo, stats


def _annotated_anatomy(rows: list[dict], img_root: Path) -> dict:
    """Scale check without a reference pixel size: the thalami, midbrain and palate boxes annotated in
    the set's box table, in mm at the calibrated pixel size, against their 11-14 week medians (the scale
    they imply, :func:`fetal_detect.measure.anatomy_scale.implied_pixel_size_mm`). A wrong interval shows
    as a ratio near 0.5 or 2."""
    from fetal_detect.data.converters.shenzhen_nt import iter_boxes
    from fetal_detect.measure.anatomy_scale import implied_pixel_size_mm

    try:
        items, _ = iter_boxes(img_root)
    except FetalDetectError:
        return {"n": 0}
    boxes = {p.name: [{"name": n, "confidence": 1.0, "box_xyxy": b} for n, *b in found] for p, found in items}
    ratios = []
    for r in rows:
        anatomy_mm = implied_pixel_size_mm(boxes.get(r["image"]))[0]
        if anatomy_mm is not None:
            ratios.append(r["calibrated_mm"] / anatomy_mm)
    if not ratios:
        return {"n": 0}
    q = np.asarray(ratios)
    return {"n": int(q.size), "median_ratio": round(float(np.median(q)), 4),
            "p5_p95_ratio": [round(float(v), 4) for v in np.percentile(q, [5, 95])],
            "share_within_25pct": round(float(np.mean(np.abs(np.log(q)) <= np.log(1.25))), 4),
            "share_off_gt_1_4x": round(float(np.mean(np.abs(np.log(q)) > np.log(1.4))), 4)}


def evaluate(data: str | Path, weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", progress: bool = True) -> dict:
    """Ruler coverage and agreement (tv_plane-like folder) or coverage and automatic NT (Shenzhen set)."""
    root = Path(str(data))
    ref_csv = root / "pixel_size.csv"
    name = root.name if root.is_dir() else str(data)
    out = Path(out or settings.RUNS_DIR / "evaluate" / "ruler" / name)
    out.mkdir(parents=True, exist_ok=True)
    if ref_csv.exists():
        paths = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        from fetal_detect.evaluate.tv import pixel_sizes

        ref = pixel_sizes(root)
        rows, tiles = _read_all(paths, progress)
        for r in rows:
            r["reference_mm"] = ref.get(r["image"])
            if r["pixel_size_mm"] and r["reference_mm"]:
                r["ratio"] = r["pixel_size_mm"] / r["reference_mm"]
        metrics = {"task": "ruler", "data": str(data), "split": "all images (the ruler is not trained)",
                   **_coverage(rows), "n_with_reference": sum(r["reference_mm"] is not None for r in rows),
                   "vs_reference": agreement(np.array([r["ratio"] for r in rows if "ratio" in r]))}
        metrics["coverage_with_reference"] = round(
            metrics["vs_reference"].get("n", 0) / max(metrics["n_with_reference"], 1), 4)
    else:
        img_root, keep, described = _shenzhen_split(str(data), split)
        paths = sorted(p for p in (img_root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rows, tiles = _read_all(paths, progress)
        metrics = {"task": "ruler", "data": str(data), "split": "coverage: all images; NT: " + described,
                   **_coverage(rows)}
        _, metrics["automatic_nt"] = _automatic_nt(rows, img_root, keep, weights, progress)
    for r in rows:
        r.pop("_ruler", None)
    write_csv(out / "per_image.csv", rows)
    if tiles:
        write_image(out / "ruler_sheet.png", contact_sheet(tiles, cols=4))
    metrics["out"] = str(out)
    write_json(out / "metrics.json", metrics)
    return metrics
