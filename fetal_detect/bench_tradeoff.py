"""The speed/accuracy trade-off of ``bench --imgsz 192,256,320 --accuracy``: HC MAE and Dice of every
timed back-end on the validation split, the comparison with the shipped model, and the plot.

The accuracy comes from the very predictors that were timed (same export, same input size), through
the real HC pipeline (:func:`fetal_detect.measure.hc_scoring.score`), on the task's val split (hc18:
120 images of 96 patients, disjoint from training and from INT8 calibration).
"""
from __future__ import annotations

from pathlib import Path

from fetal_detect.tasks import Task

MAE_BUDGET_MM = 0.1  # a faster configuration may cost at most this much HC MAE vs the shipped model


def val_accuracy(t: Task, predictor, items) -> dict:
    """HC MAE, bias and Dice of ``predictor`` through the HC pipeline on ``items`` (val split)."""
    from fetal_detect.measure.hc_scoring import score, summarise
    from fetal_detect.pipeline.hc import HCMeasurer

    m = summarise(score(items, HCMeasurer(predictor=predictor), progress=False)[0])
    return {k: (round(m[k], 4) if isinstance(m.get(k), float) else m.get(k))
            for k in ("n_images", "n_failed", "hc_mae_mm", "hc_bias_mm", "dice")}


def accuracy_summary(results: dict, reference: str) -> dict:
    """Each entry's HC MAE change against ``reference`` (the shipped model as trained), and which keep it
    within :data:`MAE_BUDGET_MM` without failing more images."""
    ref = results.get(reference, {}).get("accuracy") or {}
    out = {"reference": reference, "budget_hc_mae_mm": MAE_BUDGET_MM, "hc_mae_change_mm": {}, "within_budget": []}
    if ref.get("hc_mae_mm") is None:
        return out
    for key, r in results.items():
        acc = r.get("accuracy") or {}
        if acc.get("hc_mae_mm") is None:
            continue
        change = round(acc["hc_mae_mm"] - ref["hc_mae_mm"], 4)
        out["hc_mae_change_mm"][key] = change
        if change <= MAE_BUDGET_MM and acc.get("n_failed", 0) <= ref.get("n_failed", 0):
            out["within_budget"].append(key)
    return out


def plot_tradeoff(res: dict, path: str | Path) -> Path:
    """Pipeline p50 (ms) against val HC MAE (mm), one point per back-end and input size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fetal_detect.report import save_figure

    pts = [(k, r["pipeline"]["p50_ms"], r["accuracy"]["hc_mae_mm"], r.get("imgsz"))
           for k, r in res["results"].items() if "pipeline" in r and (r.get("accuracy") or {}).get("hc_mae_mm") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    backends = sorted({k.split("@")[0] for k, *_ in pts})
    markers = dict(zip(backends, "osD^v<>P*"))
    for b in backends:
        mine = sorted((p for p in pts if p[0].split("@")[0] == b), key=lambda p: p[3] or 0)
        ax.plot([p[1] for p in mine], [p[2] for p in mine], marker=markers[b], label=b)
        for k, x, y, s in mine:
            ax.annotate(str(s), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ref = res.get("accuracy_summary", {})
    ref_mae = (res["results"].get(ref.get("reference"), {}).get("accuracy") or {}).get("hc_mae_mm")
    if ref_mae is not None:
        ax.axhline(ref_mae + MAE_BUDGET_MM, ls="--", c="grey", lw=1)
        ax.text(ax.get_xlim()[1], ref_mae + MAE_BUDGET_MM, f" shipped +{MAE_BUDGET_MM} mm", va="bottom", ha="right",
                fontsize=8, color="grey")
    ax.set_xlabel("pipeline p50 (ms per image, one run, interleaved)")
    ax.set_ylabel(f"HC MAE on the val split (mm, n={next(iter(res['results'].values())).get('accuracy', {}).get('n_images', '?')})")
    m = res.get("machine", {})
    ax.set_title(f"{res['task']}: latency vs HC error by input size (labels)\n{m.get('cpu', '')}, {m.get('threads')} threads, "
                 f"load {m.get('load_avg_1m_at_start')}", fontsize=9)
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def markdown_table(res: dict) -> str:
    """The bench result as a Markdown table (one row per back-end and size)."""
    ref = res.get("summary", {}).get("pipeline_speedup_vs_torch", {})
    rows = ["| input | back-end | pipeline p50 / p95 (ms) | model p50 (ms) | speed-up vs torch | HC MAE (mm) | Dice | failed |",
            "|---|---|---|---|---|---|---|---|"]
    for k, r in res["results"].items():
        if "pipeline" not in r:
            rows.append(f"| | {k} | skipped: {r.get('skipped', '')} | | | | | |")
            continue
        a = r.get("accuracy") or {}
        rows.append(f"| {r.get('imgsz')} | {k.split('@')[0]} | {r['pipeline']['p50_ms']} / {r['pipeline']['p95_ms']} | "
                    f"{r['model']['p50_ms']} | {ref.get(k, '')}x | {a.get('hc_mae_mm', '')} | {a.get('dice', '')} | "
                    f"{a.get('n_failed', '')} |")
    return "\n".join(rows)
