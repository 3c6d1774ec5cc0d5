"""Evaluate NT *measurement* on seeded phantoms with exact truth (no public NT values in mm exist).

``--data phantom`` (or ``phantom-nt``): a fixed grid of NT 0.8-6.0 mm x pixel sizes x noise levels,
each rendered by :func:`fetal_detect.data.phantom.make_nt` with its own seed. The band is measured
inside the phantom's NT box (the ``--box`` path: the measurement itself, independent of any
detector), so the numbers isolate the sub-pixel caliper algorithm. Writes metrics.json (overall and
per pixel size), per_image.csv, an error plot and a sheet of the worst cases.

``--data nt_shenzhen`` (or a Shenzhen-layout folder) shows real-image behaviour instead: the band is
measured (in px, the set has no pixel size) inside the annotated NT box of each image of the split,
and ``overlays.png`` shows the first 16 with the traced band and calipers; there is no truth in mm.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.report import contact_sheet, write_csv, write_image, write_json

log = logging.getLogger(__name__)
NT_GRID_MM = tuple(np.round(np.linspace(0.8, 6.0, 8), 3))
PIXEL_SIZES_MM = (0.08, 0.1, 0.15, 0.2)
NOISE_LEVELS = (0.5, 1.0, 1.5)
TARGET = {"pixel_size_mm": 0.1, "mae_mm": 0.10, "max_mm": 0.25}


def phantom_grid(nt_mm=NT_GRID_MM, pixel_sizes=PIXEL_SIZES_MM, noises=NOISE_LEVELS, seed: int = 50_000):
    """(seed, nt_mm, pixel_size_mm, noise) for every combination; seeds are consecutive from ``seed``."""
    return [(seed + i, float(n), float(p), float(z))
            for i, (p, z, n) in enumerate(itertools.product(pixel_sizes, noises, nt_mm))]


def _stats(err: np.ndarray) -> dict:
    if not len(err):
        return {"n": 0}
    return {"n": int(len(err)), "nt_mae_mm": round(float(np.mean(np.abs(err))), 4),
            "nt_max_mm": round(float(np.max(np.abs(err))), 4), "nt_bias_mm": round(float(np.mean(err)), 4),
            "nt_sd_mm": round(float(np.std(err, ddof=1)), 4) if len(err) > 1 else 0.0}


def evaluate(data: str | Path = "phantom", weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", grid=None, progress: bool = True) -> dict:
    """Measure the phantom grid; metrics ``nt_mae_mm, nt_max_mm, nt_bias_mm`` overall and per pixel size."""
    from tqdm import tqdm

    from fetal_detect.data.phantom import make_nt
    from fetal_detect.measure.nt import measure_nt
    from fetal_detect.pipeline.nt import draw_nt

    if str(data) not in ("phantom", "phantom-nt"):
        return real_overlays(data, weights, out, split, progress=progress)
    out = Path(out or settings.RUNS_DIR / "evaluate" / "nt-measure" / "phantom")
    out.mkdir(parents=True, exist_ok=True)
    grid = grid or phantom_grid()
    rows, overlays = [], {}
    for seed, nt_mm, px, noise in tqdm(grid, desc="evaluate nt-measure", unit="img", disable=not progress):
        ph = make_nt(seed, pixel_size_mm=px, nt_mm=nt_mm, noise=noise)
        box = next(b[1:] for b in ph.boxes if b[0] == "NT")
        row = {"seed": seed, "nt_true_mm": nt_mm, "pixel_size_mm": px, "noise": noise}
        try:
            res = measure_nt(ph.image, box, px)
            true_c = np.array(ph.truth["calipers"])
            row.update(status="ok", nt_mm=res["nt_mm"], err_mm=res["nt_mm"] - nt_mm,
                       angle_err_deg=round(abs(res["axis_angle_deg"] - ph.truth["axis_angle_deg"]), 3),
                       caliper_offset_mm=round(float(np.linalg.norm(np.mean(res["calipers"], 0) - true_c.mean(0))) * px, 3),
                       confidence=res["confidence"])
            overlays[seed] = (draw_nt(ph.image, res, ph.truth["calipers"]), box)
        except FetalDetectError as e:
            row.update(status="failed", error=str(e))
        rows.append(row)
    ok = [r for r in rows if r["status"] == "ok"]
    err = np.array([r["err_mm"] for r in ok])
    by_px = {f"{p:g}": _stats(np.array([r["err_mm"] for r in ok if r["pixel_size_mm"] == p]))
             for p in sorted({r["pixel_size_mm"] for r in rows})}
    at = by_px.get(f"{TARGET['pixel_size_mm']:g}", {})
    metrics = {"task": "nt-measure", "data": f"{len(rows)} seeded phantoms (NT {min(r['nt_true_mm'] for r in rows):g}-"
                                              f"{max(r['nt_true_mm'] for r in rows):g} mm, pixel sizes "
                                              f"{sorted({r['pixel_size_mm'] for r in rows})} mm, noise "
                                              f"{sorted({r['noise'] for r in rows})})",
               "mode": "roi (phantom NT box; measurement only)", "n_images": len(rows), "n_failed": len(rows) - len(ok),
               **{k: v for k, v in _stats(err).items() if k != "n"}, "by_pixel_size_mm": by_px,
               "target": TARGET, "target_met_at_0.1mm": bool(at.get("n") and at["nt_mae_mm"] <= TARGET["mae_mm"]
                                                           and at["nt_max_mm"] <= TARGET["max_mm"])}
    write_json(out / "metrics.json", metrics)
    write_csv(out / "per_image.csv", rows)
    _error_plot(ok, out / "nt_error.png")
    worst = sorted(ok, key=lambda r: -abs(r["err_mm"]))[:8]
    if worst:
        tiles = []
        for r in worst:
            img, (x1, y1, x2, y2) = overlays[r["seed"]]
            pad = 40
            tiles.append(img[max(0, int(y1) - pad):int(y2) + pad, max(0, int(x1) - pad):int(x2) + pad])
        write_image(out / "worst_cases.png", contact_sheet(
            tiles, [f"{r['nt_true_mm']:.2f}mm px{r['pixel_size_mm']:g} err {r['err_mm']:+.3f}" for r in worst]))
    metrics["out"] = str(out)
    return metrics


def _error_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for p in sorted({r["pixel_size_mm"] for r in rows}):
        sel = [r for r in rows if r["pixel_size_mm"] == p]
        ax.scatter([r["nt_true_mm"] for r in sel], [r["err_mm"] for r in sel], s=12, alpha=0.7, label=f"{p:g} mm/px")
    ax.axhline(0, color="k", lw=0.8)
    for v in (-TARGET["max_mm"], TARGET["max_mm"]):
        ax.axhline(v, color="crimson", ls="--", lw=0.8)
    ax.set_xlabel("true NT (mm)")
    ax.set_ylabel("measured - true NT (mm)")
    ax.set_title("NT on phantoms (dashed: +-0.25 mm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def real_overlays(data: str | Path, weights=None, out: str | Path | None = None, split: str = "val",
                  n_sheet: int = 16, progress: bool = True) -> dict:
    """ROI-mode NT on real images of a Shenzhen-layout set: success rate, nt_px, an overlay sheet."""
    import cv2
    import pandas as pd
    from tqdm import tqdm

    from fetal_detect.data import registry
    from fetal_detect.data.converters.shenzhen_nt import iter_boxes
    from fetal_detect.pipeline.nt import NTMeasurer, draw_nt

    entry = registry.get_entry(str(data))
    if entry.layout != "shenzhen-nt" or entry.root is None:
        raise FetalDetectError(f"nt-measure needs --data phantom or a Shenzhen NT set, got '{data}'")
    out = Path(out or settings.RUNS_DIR / "evaluate" / "nt-measure" / entry.name)
    out.mkdir(parents=True, exist_ok=True)
    items, _ = iter_boxes(entry.root)
    if Path(str(data)).is_dir():
        stems, described = None, f"folder {entry.root}"
    else:
        prepared = registry.prepare(str(data), "detect")
        meta = pd.read_csv(prepared.root / "meta.csv", dtype={"name": str})
        stems = set(meta.loc[meta["split"] == split, "name"])
        described = f"{entry.name} {split} split (annotated NT box as ROI)"
    items = [(img, bx) for img, bx in items if stems is None or img.stem in stems]
    measurer = NTMeasurer(seg_weights=weights, need_detector=False)
    rows, tiles, caps = [], [], []
    for img, bxs in tqdm(items, desc="nt on real images", unit="img", disable=not progress):
        nt = [b for b in bxs if b[0] == "NT"]
        row = {"image": img.name}
        if not nt:
            rows.append({**row, "status": "no NT box"})
            continue
        grey = cv2.imread(str(img), cv2.IMREAD_GRAYSCALE)
        try:
            res = measurer(grey, None, box=nt[0][1:])
            row.update(status="ok", nt_px=res["nt_px"], confidence=res["confidence"], coverage=res["coverage"],
                       band_mask_source=res["band_mask_source"])
            if len(tiles) < n_sheet:
                x1, y1, x2, y2 = (int(v) for v in nt[0][1:])
                ov = draw_nt(grey, {k: v for k, v in res.items() if k != "nt_mm"})
                pad = 50
                tiles.append(ov[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad])
                caps.append(f"{img.name} NT {res['nt_px']:.1f}px conf {res['confidence']:.2f}")
        except FetalDetectError as e:
            row.update(status="failed", error=str(e))
        rows.append(row)
    ok = [r for r in rows if r["status"] == "ok"]
    metrics = {"task": "nt-measure", "data": described, "n_images": len(rows), "n_measured": len(ok),
               "n_failed": sum(r["status"] == "failed" for r in rows),
               "nt_px_median": round(float(np.median([r["nt_px"] for r in ok])), 2) if ok else None,
               "confidence_median": round(float(np.median([r["confidence"] for r in ok])), 3) if ok else None,
               "note": "real images carry no NT truth in mm: behaviour is shown in overlays.png"}
    write_json(out / "metrics.json", metrics)
    write_csv(out / "per_image.csv", rows)
    if tiles:
        write_image(out / "overlays.png", contact_sheet(tiles, caps, cols=4, tile_w=360))
    metrics["out"] = str(out)
    return metrics
