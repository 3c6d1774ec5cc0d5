"""Evaluate the ``tv`` measurement (Vp, brain-outline HC/BPD/OFD in mm) on held-out trans-ventricular images.

The reference is the *same* measurement taken from the annotated masks (tv_plane ``masks/*.png``, RGB:
Brain red, CSP green, LV blue; the Brain outline is the union of the three), in mm with the
dataset's ``pixel_size.csv``; the model's numbers come from ``cns-seg`` through
:class:`fetal_detect.pipeline.tv.TVMeasurer`. Images without a pixel size are left out (counted).
Writes ``metrics.json`` (MAE, bias, SD, 95 % limits of agreement per quantity), ``per_image.csv``
and ``bland_altman.png``. ``python evaluate.py --task tv --data tv_plane_seg``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.agreement import bland_altman
from fetal_detect.measure.hc import measure_hc
from fetal_detect.measure.ventricle import atrial_width
from fetal_detect.report import save_figure, write_csv, write_json

QUANTITIES = ("vp_mm", "brain_hc_mm", "brain_bpd_mm", "brain_ofd_mm")


def reference(mask_bgr: np.ndarray, pixel_size_mm: float) -> dict:
    """The tv measurement on an annotated RGB mask (BGR as OpenCV reads it): Vp from blue, head from all colours."""
    lv = mask_bgr[..., 0] > 127
    brain = (mask_bgr > 127).any(-1)
    out = {}
    vp = atrial_width(lv.astype(np.uint8), pixel_size_mm)
    if vp is not None:
        out["vp_mm"] = vp["vp_mm"]
    if brain.sum() > 100:
        head = measure_hc(brain.astype(np.uint8), pixel_size_mm)
        out.update({f"brain_{k}_mm": head[f"{k}_mm"] for k in ("hc", "bpd", "ofd")})
    return out


def pixel_sizes(root: Path) -> dict[str, float]:
    p = Path(root) / "pixel_size.csv"
    if not p.exists():
        raise FetalDetectError(f"{p}: the tv evaluation needs the dataset's pixel sizes (file,pixel_size_mm)")
    with open(p) as f:
        return {r["file"]: float(r["pixel_size_mm"]) for r in csv.DictReader(f) if r.get("pixel_size_mm")}


def evaluate(data: str | Path = "tv_plane_seg", weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", progress: bool = True) -> dict:
    import pandas as pd
    from tqdm import tqdm

    from fetal_detect.data import registry
    from fetal_detect.io import load_image
    from fetal_detect.pipeline.tv import TVMeasurer

    out = Path(out or settings.RUNS_DIR / "evaluate" / "tv" / Path(str(data)).name)
    out.mkdir(parents=True, exist_ok=True)
    entry = registry.get_entry(str(data))
    prepared = registry.prepare(str(data), "segment")
    meta = pd.read_csv(prepared.root / "meta.csv", dtype={"patient": str})
    items = meta[meta["split"] == split]
    if items.empty:
        raise FetalDetectError(f"dataset '{entry.name}' has no '{split}' split")
    sizes = pixel_sizes(entry.root)
    measurer = TVMeasurer(weights)
    rows = []
    for _, r in tqdm(list(items.iterrows()), desc="evaluate tv", unit="img", disable=not progress):
        img = (prepared.root / r["file"]).resolve()  # the link to the source image
        row = {"image": img.name, "patient": r["patient"], "pixel_size_mm": sizes.get(img.name)}
        mask = cv2.imread(str(entry.root / "masks" / f"{img.stem}.png"), cv2.IMREAD_COLOR)
        if row["pixel_size_mm"] is None or mask is None:
            row["status"] = "no pixel size" if mask is not None else "no reference mask"
            rows.append(row)
            continue
        ref = reference(mask, row["pixel_size_mm"])
        try:
            res = measurer(load_image(img).image, row["pixel_size_mm"])
            row["status"] = "ok"
        except FetalDetectError as e:
            res, row["status"] = {}, f"failed: {e}"
        for q in QUANTITIES:
            row[q], row[q.replace("_mm", "_ref_mm")] = res.get(q), ref.get(q)
        rows.append(row)
    metrics = {"measurement": "tv", "data": f"{entry.name} {split} split (patient-disjoint from cns-seg training)",
               "weights": str(measurer.predictor.weights), "n_images": len(rows),
               "n_no_pixel_size": sum(r["status"] == "no pixel size" for r in rows),
               "n_failed": sum(str(r["status"]).startswith("failed") for r in rows)}
    for q in QUANTITIES:
        pairs = [(r[q], r[q.replace("_mm", "_ref_mm")]) for r in rows if r.get(q) is not None
                 and r.get(q.replace("_mm", "_ref_mm")) is not None]
        ref_only = sum(r.get(q) is None and r.get(q.replace("_mm", "_ref_mm")) is not None for r in rows)
        ba = bland_altman(np.array([p for p, _ in pairs]), np.array([t for _, t in pairs]))
        metrics[q] = {**ba, "missed": ref_only}
    write_json(out / "metrics.json", metrics)
    write_csv(out / "per_image.csv", rows)
    bland_altman_plot(rows, out / "bland_altman.png", f"tv on {entry.name} {split}")
    metrics["out"] = str(out)
    return metrics


def bland_altman_plot(rows: list[dict], path: Path, title: str, quantities=("vp_mm", "brain_hc_mm")) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(quantities), figsize=(6.2 * len(quantities), 4.4), dpi=120)
    for ax, q in zip(np.atleast_1d(axes), quantities):
        ref_key = q.replace("_mm", "_ref_mm")
        ok = [r for r in rows if r.get(q) is not None and r.get(ref_key) is not None]
        if len(ok) < 2:
            ax.set_title(f"{q}: fewer than 2 pairs")
            continue
        ref, pred = np.array([r[ref_key] for r in ok]), np.array([r[q] for r in ok])
        ba = bland_altman(pred, ref)
        ax.scatter((ref + pred) / 2, pred - ref, s=12, alpha=0.7)
        for v, ls in ((ba["bias"], "-"), (ba["loa"][0], "--"), (ba["loa"][1], "--")):
            ax.axhline(v, color="crimson", ls=ls, lw=1)
        ax.set_xlabel(f"mean of model and reference {q} (mm)")
        ax.set_ylabel("model - reference (mm)")
        ax.set_title(f"{q}: n {ba['n']}, MAE {ba['mae']:.2f} mm, bias {ba['bias']:+.2f} mm\n"
                     f"95% LoA [{ba['loa'][0]:+.2f}, {ba['loa'][1]:+.2f}] mm")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
