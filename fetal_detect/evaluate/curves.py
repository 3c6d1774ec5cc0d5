"""ROC and precision-recall curves for anything that outputs a score: AUROC, average precision, one plot.

Used where a task has scores: ``plane-cls`` (each class one-vs-rest from the softmax) and ``hc-seg``
(the measurement ``confidence`` as a detector of measurements off by more than a tolerance in mm).
Detection tasks get Ultralytics' PR curves from ``val``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fetal_detect.measure.agreement import roc_pr
from fetal_detect.report import save_figure

__all__ = ["roc_pr", "plot_roc_pr"]


def plot_roc_pr(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path | None:
    """ROC (left) and PR (right) curves, one line per ``name: (positive, score)`` with both classes present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    usable = {k: (np.asarray(p, bool), np.asarray(s, float)) for k, (p, s) in curves.items()
              if 0 < np.asarray(p, bool).sum() < len(p)}
    if not usable:
        return None
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    for name, (pos, score) in usable.items():
        fpr, tpr, _ = roc_curve(pos, score)
        prec, rec, _ = precision_recall_curve(pos, score)
        ax_roc.plot(fpr, tpr, lw=1.5, label=f"{name} (AUROC {auc(fpr, tpr):.3f})")
        ax_pr.plot(rec, prec, lw=1.5, label=f"{name} (n+ {int(pos.sum())})")
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02), title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def one_vs_rest(truth: list[str], probs: list[dict[str, float]], names: list[str], path: Path, title: str) -> dict:
    """Per-class one-vs-rest AUROC / AP from class probabilities, their macro means, and the plot at ``path``."""
    curves = {n: (np.array([t == n for t in truth]), np.array([p.get(n, 0.0) for p in probs])) for n in names}
    per_class = {n: roc_pr(*c) for n, c in curves.items()}
    scored = [v for v in per_class.values() if v["auroc"] is not None]
    return {"per_class": per_class,
            "macro_auroc": float(np.mean([v["auroc"] for v in scored])) if scored else None,
            "macro_average_precision": float(np.mean([v["average_precision"] for v in scored])) if scored else None,
            "plot": str(plot_roc_pr(curves, path, title) or "")}
