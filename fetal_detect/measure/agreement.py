"""Agreement statistics between a measurement and its reference: ICC, Bland-Altman, ROC/PR of a QC score."""
from __future__ import annotations

import numpy as np


def icc_a1(x: np.ndarray, y: np.ndarray) -> float:
    """ICC(A,1): two-way, absolute agreement, single measurement (McGraw & Wong 1996)."""
    data = np.stack([x, y], 1)
    n, k = data.shape
    grand = data.mean()
    msr = k * ((data.mean(1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((data.mean(0) - grand) ** 2).sum() / (k - 1)
    sse = ((data - data.mean(1, keepdims=True) - data.mean(0, keepdims=True) + grand) ** 2).sum()
    mse = sse / ((n - 1) * (k - 1))
    return float((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n))


def bland_altman(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Bias (mean of ``pred - ref``), SD, 95 % limits of agreement and MAE; None fields with fewer than 2 pairs."""
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    diff = pred - ref
    n = len(diff)
    if n == 0:
        return {"n": 0, "mae": None, "bias": None, "sd": None, "loa": None}
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else None
    return {"n": n, "mae": float(np.abs(diff).mean()), "bias": bias, "sd": sd,
            "loa": [bias - 1.96 * sd, bias + 1.96 * sd] if sd is not None else None}


def roc_pr(positive: np.ndarray, score: np.ndarray) -> dict:
    """AUROC and average precision of ``score`` for the boolean ``positive``; None where a class is absent."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    positive, score = np.asarray(positive, bool), np.asarray(score, float)
    n_pos = int(positive.sum())
    out = {"n_positive": n_pos, "n_negative": int(len(positive) - n_pos), "auroc": None, "average_precision": None}
    if 0 < n_pos < len(positive):
        out.update(auroc=float(roc_auc_score(positive, score)), average_precision=float(average_precision_score(positive, score)))
    return out
