"""Evaluate ``hc-seg``: Dice, HC error (mm), Hausdorff (mm), Bland-Altman and a worst-cases sheet.

``--data`` is a folder in the HC18 layout (every image is scored), a registry name (its held-out
``val`` split is scored, so training images are never counted) or ``phantom-hc`` (fresh phantoms
with exact truth, written in the HC18 layout under the output folder).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.data.converters.hc18 import HC18Item, iter_hc18
from fetal_detect.measure.agreement import icc_a1
from fetal_detect.measure.hc_scoring import (QC_TOLERANCE_MM, confidence_as_qc, qc_scores, score, split_items,
                                             summarise)
from fetal_detect.report import contact_sheet, save_figure, write_csv, write_image, write_json

__all__ = ["items_for", "evaluate", "bland_altman_plot", "score", "split_items", "summarise", "confidence_as_qc",
           "qc_scores", "icc_a1", "QC_TOLERANCE_MM"]


def items_for(data: str | Path, split: str = "val", out: Path | None = None) -> tuple[list[HC18Item], list[dict], str]:
    """HC18 items to score and the problems found, from a folder, a registry split or phantoms."""
    from fetal_detect.data import registry

    p = Path(data)
    if p.is_dir():
        items, problems = iter_hc18(p)
        return items, problems, f"folder {p}"
    entry = registry.get_entry(str(data))
    if entry.layout == "phantom":
        from fetal_detect.data.phantom import write_hc18_layout

        folder = Path(out or settings.RUNS_DIR / "evaluate") / "phantom-data"
        src = entry.source
        write_hc18_layout(folder, int(src.get("n", 40)), int(src.get("seed", 0)) + 100_000)
        items, problems = iter_hc18(folder)
        return items, problems, f"{len(items)} fresh phantoms (seed {int(src.get('seed', 0)) + 100_000})"
    prepared = registry.prepare(str(data), "segment")
    return split_items(prepared, split), [], f"{entry.name} {split} split (patient-disjoint)"


def bland_altman_plot(rows: list[dict], path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("hc_err_mm") is not None]
    if len(ok) < 2:
        return None
    ref = np.array([r["hc_ref_mm"] for r in ok])
    pred = np.array([r["hc_mm"] for r in ok])
    mean, diff = (ref + pred) / 2, pred - ref
    bias, sd = diff.mean(), diff.std(ddof=1)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.scatter(mean, diff, s=10, alpha=0.7)
    for v, ls in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
        ax.axhline(v, color="crimson", ls=ls, lw=1)
    ax.set_xlabel("mean of model and reference HC (mm)")
    ax.set_ylabel("model - reference HC (mm)")
    ax.set_title(f"{title}\nbias {bias:+.2f} mm, 95% LoA [{bias - 1.96 * sd:+.2f}, {bias + 1.96 * sd:+.2f}] mm")
    return save_figure(fig, path)


def evaluate(data: str | Path, weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", progress: bool = True, tta: bool | None = None) -> dict:
    """Score a model on HC data; writes metrics.json, per_image.csv, bland_altman.png, qc_roc_pr.png, worst_cases.png."""
    from fetal_detect.pipeline.hc import HCMeasurer

    out = Path(out or settings.RUNS_DIR / "evaluate" / "hc-seg" / Path(str(data)).name)
    out.mkdir(parents=True, exist_ok=True)
    items, problems, described = items_for(data, split, out)
    measurer = HCMeasurer(weights, tta=tta)
    rows, overlays = score(items, measurer, progress)
    rows += [{"image": p["file"], "status": "failed", "error": p["error"]} for p in problems]
    metrics = {"task": "hc-seg", "data": described, "weights": str(measurer.predictor.weights),
               "calibration": measurer.calibration.__dict__, "tta": "mirror" if measurer.tta else "none",
               **summarise(rows)}
    write_json(out / "metrics.json", metrics)
    write_csv(out / "per_image.csv", rows)
    bland_altman_plot(rows, out / "bland_altman.png", f"HC: {described}")
    from fetal_detect.evaluate.curves import plot_roc_pr

    plot_roc_pr({f"|HC error| > {QC_TOLERANCE_MM:g} mm": qc_scores(rows)}, out / "qc_roc_pr.png",
                f"HC: does low confidence flag bad measurements? {described}")
    worst = sorted((r for r in rows if r.get("hc_err_mm") is not None), key=lambda r: -abs(r["hc_err_mm"]))[:8]
    if worst:
        sheet = contact_sheet([overlays[r["image"]] for r in worst],
                              [f"{r['image']} err {r['hc_err_mm']:+.1f} mm dice {r.get('dice', float('nan')):.3f}" for r in worst])
        write_image(out / "worst_cases.png", sheet)
    metrics["out"] = str(out)
    return metrics


