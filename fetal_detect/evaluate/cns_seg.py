"""Evaluate ``cns-seg``: mask mAP50 / mAP50-95 (and box mAP) per class on held-out data.

Same rules as :mod:`fetal_detect.evaluate.cns_det` (folder = every image; registry name = its
held-out split; sources scored one at a time over the classes they label).
"""
from __future__ import annotations

from pathlib import Path

from fetal_detect.evaluate.cns_det import evaluate_per_source


def evaluate(data: str | Path, weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", **_) -> dict:
    """Mask mAP of a cns-seg model on ``data``; writes ``OUT/metrics.json`` and confusion matrix plots."""
    return evaluate_per_source("cns-seg", "segment", data, weights, out, split)
