"""Fit and validate the feature-distance check of the abstain gate (:mod:`fetal_detect.pipeline.plane_gate`).

``fit()``:

1. runs the plane classifier over the ``planes`` dataset (all splits; features cached per weights file
   in ``runs/evaluate/plane-gate/``) and keeps its penultimate features;
2. fits :class:`FeatureStats` (PCA ``k``, class means, shared shrunk covariance) on the *train* split
   of the supported planes, and sets ``distance_max`` to ``margin`` (default 1.5) times the ``keep``
   quantile (default 99 %) of the distances of the *val* split of the supported planes. The margin is
   there because a head from another scanner lies at about 1x that quantile (leave-one-plane-out below)
   while what is not a head or NT frame at all lies at 3-6x: the distance is the coarse "is this
   anything like our images" guard, the skull-rim check is the precise head test;
3. sets ``confidence_min`` (the probability of the routed measurement) the same way, never above 0.5;
4. validates by leave-one-plane-out: for each supported plane, statistics fitted without it and a
   threshold chosen on the other planes' val images; the share of the held-out plane's val+test
   images that is rejected is what the check does to a kind of image it has never seen;
5. scores the synthetic non-head frames (:mod:`fetal_detect.data.phantom_nonhead`) and ``other``.

Writes ``weights/plane-cls-ood.npz`` + ``.json`` (``--out``) and ``metrics.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.pipeline.plane_gate import (SUPPORTED, FeatureStats, predict_with_features, route_confidence,
                                              stats_path)

log = logging.getLogger(__name__)


def classifier_features(classifier, images, progress: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Features (N x D) and class probabilities of ``images`` (arrays, or callables returning one)."""
    from tqdm import tqdm

    feats, probs = [], []
    for im in tqdm(images, desc="plane-cls features", unit="img", disable=not progress):
        pred, f, _ = predict_with_features(classifier, im() if callable(im) else im)
        if f is None:
            raise RuntimeError("the plane classifier exposes no features (the gate needs the torch .pt model)")
        feats.append(f)
        probs.append(pred.probs)
    return np.asarray(feats, np.float32), probs


def _planes_features(classifier, weights: Path, data: str, progress: bool):
    import pandas as pd

    from fetal_detect.data import registry
    from fetal_detect.io import load_image

    prepared = registry.prepare(data, "classify")
    meta = pd.read_csv(prepared.root / "meta.csv", dtype=str)
    key = hashlib.sha1(f"{registry.file_sha256(weights)}:{prepared.manifest['fingerprint']}".encode()).hexdigest()[:12]
    cache = settings.RUNS_DIR / "evaluate" / "plane-gate" / f"features-{key}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        feats, probs = z["feats"], [json.loads(p) for p in z["probs"]]
    else:
        images = [lambda f=prepared.root / f: load_image(f).image for f in meta["file"]]
        feats, probs = classifier_features(classifier, images, progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, feats=feats, probs=np.array([json.dumps(p) for p in probs]))
    labels = np.array([Path(f).parts[1] for f in meta["file"]])
    return feats, probs, labels, meta["split"].to_numpy(), meta.get("source_dataset")


def fit(weights: str | Path | None = None, data: str = "planes", out: str | Path | None = None, k: int = 32,
        shrink: float = 0.05, keep: float = 0.99, margin: float = 1.5, phantoms: int = 10, progress: bool = True,
        **_) -> dict:
    from fetal_detect.data.phantom_nonhead import NONHEAD_KINDS, make_nonhead
    from fetal_detect.runtime import load_predictor

    classifier = load_predictor("plane-cls", weights)
    feats, probs, labels, split, _ = _planes_features(classifier, Path(classifier.weights), data, progress)
    sup = np.isin(labels, SUPPORTED)
    train, val, test = split == "train", split == "val", split == "test"
    stats = FeatureStats.fit(feats[train], labels[train], k=k, shrink=shrink)
    dist, _ = stats.distance(feats)
    q = float(np.quantile(dist[val & sup], keep))
    dmax = margin * q
    rconf = np.array([route_confidence(p) for p in probs])
    cmin = float(min(0.5, np.quantile(rconf[val & sup], 1 - keep)))
    accepted = (dist <= dmax) & (rconf >= cmin)
    metrics: dict = {
        "weights": str(classifier.weights), "data": data, "k": k, "shrink": shrink, "keep": keep,
        "thresholds": {"distance_max": round(dmax, 4), "confidence_min": round(cmin, 4)},
        "distance_quantile": round(q, 4), "margin": margin,
        "acceptance": {s: {c: round(float(accepted[m & (labels == c)].mean()), 4) for c in sorted(set(labels))}
                       for s, m in (("val", val), ("test", test))},
        "distance_acceptance_supported": {"val": round(float((dist[val & sup] <= dmax).mean()), 4),
                                          "test": round(float((dist[test & sup] <= dmax).mean()), 4)},
    }
    lopo = {}
    for plane in SUPPORTED:
        rest = [c for c in SUPPORTED if c != plane]
        st = FeatureStats.fit(feats[train], labels[train], classes=rest, k=k, shrink=shrink)
        d, _ = st.distance(feats)
        t = margin * float(np.quantile(d[val & np.isin(labels, rest)], keep))
        held = ~train & (labels == plane)
        lopo[plane] = {"rejected": round(float((d[held] > t).mean()), 4), "n_images": int(held.sum()),
                       "others_test_accepted": round(float((d[test & np.isin(labels, rest)] <= t).mean()), 4)}
    metrics["leave_one_plane_out"] = lopo
    ph = {}
    for kind in NONHEAD_KINDS:
        imgs = [make_nonhead(kind, 1000 + i).image for i in range(phantoms)]
        f, p = classifier_features(classifier, imgs, progress=False)
        d, _ = stats.distance(f)
        rc = np.array([route_confidence(x) for x in p])
        top = [max(x, key=x.get) for x in p]
        ph[kind] = {"n_images": phantoms, "called_other": round(float(np.mean([t == "other" for t in top])), 4),
                    "rejected_by_distance": round(float((d > dmax).mean()), 4),
                    "rejected_by_gate": round(float(np.mean([(t == "other") or dd > dmax or c < cmin
                                                             for t, dd, c in zip(top, d, rc)])), 4)}
    metrics["nonhead_phantoms"] = ph
    from fetal_detect.data.registry import file_sha256

    stats.meta = {"thresholds": metrics["thresholds"], "fitted_on": f"{data} train split, supported planes",
                  "plane_cls_weights": Path(classifier.weights).name,
                  "plane_cls_sha256": file_sha256(Path(classifier.weights)), "k": k, "shrink": shrink,
                  "threshold_rule": f"{margin:g} x the {keep:.1%} quantile of the supported planes' val distances",
                  "acceptance": metrics["acceptance"], "leave_one_plane_out": lopo,
                  "command": "python -m fetal_detect.evaluate.plane_gate"}
    path = stats.save(Path(out) if out else stats_path())
    metrics["stats"] = str(path)
    rep = settings.RUNS_DIR / "evaluate" / "plane-gate"
    rep.mkdir(parents=True, exist_ok=True)
    (rep / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Fit the abstain gate's feature statistics (weights/plane-cls-ood.npz)")
    ap.add_argument("--weights", help="plane-cls weights (.pt; default: the shipped model)")
    ap.add_argument("--data", default="planes")
    ap.add_argument("--out", help="statistics file (default weights/plane-cls-ood.npz)")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--keep", type=float, default=0.99, help="quantile of the supported val distances")
    ap.add_argument("--margin", type=float, default=1.5, help="distance_max = margin x that quantile")
    a = ap.parse_args()
    print(json.dumps(fit(a.weights, a.data, a.out, k=a.k, keep=a.keep, margin=a.margin), indent=2))
