"""Evaluate ``plane-cls``: accuracy, macro-F1, per-class precision/recall/F1, a confusion matrix, and a
test of how much the model relies on *source* cues rather than anatomy.

``--data`` is a folder with one sub-folder of images per class (folder names = class names; every
image is scored) or a registry name (its held-out ``--split``; ``planes`` has a patient-disjoint
``test`` split).

Each class of ``planes`` comes from a different source (scanner, hospital, image size), so a model can
score well by recognising the source. The source-cue test scores the same images four ways:

- ``as_trained``: the preprocessing the model was trained with (the sidecar's ``preprocess``).
- ``full_frame``: the raw frame, burnt-in text and everything outside the fan included.
- ``swapped_sector``: the image's own fan content cut to the fan *outline* of an image of another
  class (the "donor"). ``follows_donor`` is the share of predictions that switch to the donor's
  class: how much the fan shape alone decides.
- ``anatomy_shuffled``: tiles inside the fan are shuffled, which keeps speckle, gain and the fan
  but destroys anatomy. An anatomy-driven model falls to chance (1 / number of classes) here; the
  accuracy above chance is what texture and scanner cues alone can explain.

``per_source`` (and ``confusion_by_source.png``): the confusion matrix of each image source (the
scanner, ``us_machine``, where the data names it, else the source dataset), so a model that is right
on one scanner and wrong on another shows it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.report import save_figure, write_csv, write_json

log = logging.getLogger(__name__)
VIEWS = ("as_trained", "full_frame", "swapped_sector", "anatomy_shuffled")


def load_gray(image) -> np.ndarray:
    """A record's image (path or generator) as grey uint8."""
    if callable(image):
        im = image()
        return im if im.ndim == 2 else __import__("cv2").cvtColor(im, 6)  # COLOR_BGR2GRAY
    from fetal_detect.io import load_image

    return load_image(Path(image)).image


def shuffle_tiles(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, tiles: int = 12) -> np.ndarray:
    """Permute square tiles (``tiles`` per short side of the fan box) whose centre lies in the fan."""
    from fetal_detect.preprocess import sector_box

    x1, y1, x2, y2 = sector_box(mask)
    t = max(4, min(x2 - x1, y2 - y1) // tiles)
    cells = [(y, x) for y in range(y1, y2 - t + 1, t) for x in range(x1, x2 - t + 1, t)
             if mask[y + t // 2, x + t // 2]]
    out = image.copy()
    for (y, x), (sy, sx) in zip(cells, [cells[i] for i in rng.permutation(len(cells))]):
        out[y:y + t, x:x + t] = image[sy:sy + t, sx:sx + t]
    out[~mask] = 0
    return out


def make_views(raw: np.ndarray, steps, donor_mask: np.ndarray | None, rng: np.random.Generator) -> dict:
    """The four views of one raw grey frame (see the module docstring)."""
    import cv2

    from fetal_detect import preprocess as pp

    own = pp.sector_mask(raw)
    views = {"as_trained": pp.apply(raw, steps), "full_frame": raw}
    if donor_mask is not None:
        dm = cv2.resize(donor_mask.astype(np.uint8), raw.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        views["swapped_sector"] = pp.apply(np.where(own & dm, raw, 0).astype(np.uint8), steps)
    views["anatomy_shuffled"] = pp.apply(shuffle_tiles(raw, own, rng), steps)
    return views


def classification_metrics(truth: list[str], pred: list[str], names: list[str]) -> dict:
    """accuracy, macro_f1 (over classes present in ``truth``), per-class precision/recall/F1/support."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = [n for n in names if n in set(truth)] + sorted(set(truth) - set(names))
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    m = {"n_images": len(truth), "accuracy": float(np.mean([a == b for a, b in zip(truth, pred)])) if truth else None,
         "macro_f1": float(np.mean(f)) if len(f) else None}
    m["per_class"] = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(labels)}
    return m


def source_of(rec) -> str:
    """The image source a record comes from: its scanner where the data names it, else its dataset."""
    meta = getattr(rec, "meta", None) or {}
    return str(meta.get("us_machine") or meta.get("source_dataset") or "data")


def confusion_counts(truth: list[str], pred: list[str]) -> dict:
    """``{true class: {predicted class: count}}``."""
    out: dict = {}
    for a, b in zip(truth, pred):
        out.setdefault(a, {}).setdefault(b, 0)
        out[a][b] += 1
    return out


def per_source(sources: list[str], truth: list[str], pred: list[str]) -> dict:
    """Per source: images, accuracy and the confusion counts (the plane/source confound, made visible)."""
    out = {}
    for src in sorted(set(sources)):
        idx = [i for i, s in enumerate(sources) if s == src]
        t, p = [truth[i] for i in idx], [pred[i] for i in idx]
        out[src] = {"n_images": len(idx), "accuracy": float(np.mean([a == b for a, b in zip(t, p)])),
                    "confusion": confusion_counts(t, p)}
    return out


def confusion_by_source_plot(sources: list[str], truth: list[str], pred: list[str], names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    srcs = sorted(set(sources))
    cols = list(dict.fromkeys(list(names) + sorted(set(pred) - set(names))))
    fig, axes = plt.subplots(1, len(srcs), figsize=(1.2 * len(cols) * len(srcs) + 2, 1.0 * len(cols) + 2.5), dpi=110,
                             squeeze=False)
    for ax, src in zip(axes[0], srcs):
        idx = [i for i, s in enumerate(sources) if s == src]
        rows = [n for n in cols if any(truth[i] == n for i in idx)]
        cm = np.zeros((len(rows), len(cols)), int)
        for i in idx:
            cm[rows.index(truth[i]), cols.index(pred[i])] += 1
        ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for r in range(len(rows)):
            for c in range(len(cols)):
                ax.text(c, r, str(cm[r, c]), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(f"{src} (n={len(idx)})", fontsize=8)
    fig.supxlabel("predicted", fontsize=8)
    return save_figure(fig, path)


def confusion_plot(truth: list[str], pred: list[str], names: list[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [n for n in names if n in set(truth)] + sorted(set(truth) - set(names))
    cols = list(dict.fromkeys(list(names) + sorted(set(pred) - set(names))))
    cm = np.zeros((len(rows), len(cols)), int)
    for a, b in zip(truth, pred):
        cm[rows.index(a), cols.index(b)] += 1
    fig, ax = plt.subplots(figsize=(1.4 * len(cols) + 2.5, 1.1 * len(rows) + 2), dpi=120)
    ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black" if cm[i, j] < cm[i].sum() / 2 else "white")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def evaluate(data: str | Path, weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", seed: int = 0, progress: bool = True, **_) -> dict:
    """Score a plane classifier; writes metrics.json, per_image.csv, confusion_matrix*.png, roc_pr.png."""
    from tqdm import tqdm

    from fetal_detect import preprocess as pp
    from fetal_detect.evaluate.cns_det import scored_records
    from fetal_detect.runtime import load_predictor

    predictor = load_predictor("plane-cls", weights)
    meta = getattr(predictor, "meta", {}) or {}
    steps = list(getattr(predictor, "preprocess", None) or meta.get("preprocess") or [])
    if hasattr(predictor, "preprocess"):
        predictor.preprocess = []  # the views below apply the trained steps themselves (or, on purpose, not)
    names = list(predictor.names) if hasattr(predictor, "names") else list(meta.get("names") or [])
    out = Path(out or settings.RUNS_DIR / "evaluate" / "plane-cls" / Path(str(data)).name)
    out.mkdir(parents=True, exist_ok=True)
    records, described = scored_records(data, "classify", split)
    records = [r for r in records if r.label]
    if not records:
        raise FetalDetectError(f"{data}: no labelled images to score (expected one sub-folder per class)")
    rng = np.random.default_rng(seed)
    donors = {}  # one fan mask per class, from the first image of that class
    rows, preds, probs = [], {v: [] for v in VIEWS}, []
    truth = [r.label for r in records]
    for rec in records:
        if rec.label not in donors:
            donors[rec.label] = pp.sector_mask(load_gray(rec.image))
    classes = sorted(donors)
    for rec in tqdm(records, desc="source-cue views", unit="img", disable=not progress):
        raw = load_gray(rec.image)
        others = [c for c in classes if c != rec.label]
        donor = others[rng.integers(len(others))] if others else None
        views = make_views(raw, steps, donors[donor] if donor else None, rng)
        row = {"image": rec.name, "patient": rec.patient_id, "source": source_of(rec), "label": rec.label,
               "donor": donor}
        for v in VIEWS:
            if v in views:
                pred = predictor.predict(views[v])
                top, conf = pred.top_class
                if v == "as_trained":
                    probs.append(pred.probs)
                preds[v].append(top)
                row[f"pred_{v}"], row[f"conf_{v}"] = top, round(conf, 4)
            else:
                preds[v].append(None)
        rows.append(row)
    metrics = {"task": "plane-cls", "data": described, "split": split, "weights": str(predictor.weights),
               "preprocess": steps, **classification_metrics(truth, preds["as_trained"], names)}
    from fetal_detect.evaluate.curves import one_vs_rest

    ovr = one_vs_rest(truth, probs, names, out / "roc_pr.png", f"plane-cls one-vs-rest: {described}")
    metrics.update(macro_auroc=ovr["macro_auroc"], macro_average_precision=ovr["macro_average_precision"],
                   roc_pr_plot=ovr["plot"])
    for c, v in ovr["per_class"].items():
        if c in metrics["per_class"]:
            metrics["per_class"][c].update(auroc=v["auroc"], average_precision=v["average_precision"])
    cue = {}
    for v in VIEWS[1:]:
        pairs = [(t, p) for t, p in zip(truth, preds[v]) if p is not None]
        if pairs:
            cue[v] = classification_metrics([t for t, _ in pairs], [p for _, p in pairs], names)
            cue[v].pop("per_class")
    swapped = [r for r in rows if r.get("pred_swapped_sector") is not None]
    if swapped:
        cue["swapped_sector"]["follows_donor"] = float(np.mean([r["pred_swapped_sector"] == r["donor"] for r in swapped]))
    cue["chance_accuracy"] = 1.0 / max(len(classes), 1)
    metrics["source_cues"] = cue
    metrics["confusion_matrix"] = str(confusion_plot(truth, preds["as_trained"], names, out / "confusion_matrix.png",
                                                     f"plane-cls: {described}"))
    sources = [r["source"] for r in rows]
    metrics["per_source"] = per_source(sources, truth, preds["as_trained"])
    metrics["confusion_by_source"] = str(confusion_by_source_plot(sources, truth, preds["as_trained"], names,
                                                                  out / "confusion_by_source.png"))
    confusion_plot(truth, preds["anatomy_shuffled"], names, out / "confusion_matrix_anatomy_shuffled.png",
                   "anatomy shuffled (fan tiles permuted)")
    write_csv(out / "per_image.csv", rows)
    metrics["out"] = str(out)
    write_json(out / "metrics.json", metrics)
    return metrics
