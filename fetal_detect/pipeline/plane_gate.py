"""The abstain gate of ``auto`` mode: refuse what the plane classifier and the measurers cannot vouch for.

``auto`` trusts plane-cls to say which plane an image shows, but plane-cls has only ever seen four
kinds of image. An abdomen, a femur or a cord frame is not one of them, yet a softmax always names a
class. The gate combines three cheap signals and answers ``no_standard_plane`` (with a ``reason``)
when any of them fails:

1. **Distance to the training distribution** in plane-cls's penultimate feature space (the 1280-d
   pooled input of its linear layer): the Mahalanobis distance, with class means and a shared
   covariance in a PCA subspace, to the nearest *supported* plane. The statistics are fitted on the
   plane-cls training images (:func:`fetal_detect.evaluate.plane_gate.fit`) and shipped as
   ``weights/plane-cls-ood.npz`` with a JSON sidecar holding the thresholds and how they were chosen.
2. **The classifier's confidence** in the routed measurement (the probabilities of all classes that
   route to the same primary measurer: trans-thalamic + trans-ventricular for head biometry).
3. **Each measurer's plausibility check** after it ran (:meth:`AbstainGate.review`): for a head, a
   bright elliptical skull rim actually present along the fitted ellipse, axis ratio and size in range,
   the ellipse inside the fan (:mod:`fetal_detect.measure.skull_rim`); for NT, most of the view's
   landmarks present. When the plane's primary measurement fails, nothing of the image is reported.

Signals 1-2 run as the ``Analyzer``'s plane gate (``gate(image, plane_prediction)``, before any
measurer), signal 3 as its ``review``. Without the statistics file, or without torch features (a
torch-free deployment), signal 1 is skipped and ``plane_evidence.gate.feature_distance_note`` says so.
"""
from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetal_detect import settings

STATS_NAME = "plane-cls-ood"
SUPPORTED = ("trans-thalamic", "trans-ventricular", "mid-sagittal")
"""plane-cls classes that lead to a measurement (``other`` is the classifier's own refusal)."""


def stats_path(weights_dir: Path | None = None) -> Path:
    return Path(weights_dir or settings.WEIGHTS_DIR) / f"{STATS_NAME}.npz"


def _heads(classifier) -> list:
    """The torch ``Classify`` heads of an Ultralytics plane classifier: of its model and of the copy its
    predictor runs (Ultralytics fuses a copy on the first call); [] for ONNX and stubs."""
    yolo = getattr(classifier, "model", None)
    nets = [getattr(yolo, "model", None), getattr(getattr(getattr(yolo, "predictor", None), "model", None), "model", None)]
    heads = []
    for net in nets:
        try:
            head = net.model[-1]
        except (AttributeError, TypeError, IndexError, KeyError):
            continue
        if hasattr(head, "linear") and all(head is not h for h in heads):
            heads.append(head)
    return heads


@contextmanager
def feature_tap(classifier):
    """Collects, per image predicted inside the block, the penultimate features (``feats``, 1280-d) and
    the logits (``logits``) of a torch plane classifier; both lists stay empty for other back-ends."""
    taps: dict[str, list] = {"feats": [], "logits": []}

    def hook(_module, inputs, output):
        taps["feats"].extend(inputs[0].detach().float().cpu().numpy())
        taps["logits"].extend(output.detach().float().cpu().numpy())

    handles = [h.linear.register_forward_hook(hook) for h in _heads(classifier)]
    try:
        yield taps
    finally:
        for h in handles:
            h.remove()


def predict_with_features(classifier, image: np.ndarray):
    """``(Prediction, features or None, logits or None)`` for one image, one forward pass."""
    with feature_tap(classifier) as taps:
        pred = classifier.predict(image)
    if not taps["feats"]:  # the first call may also see Ultralytics' warm-up pass: the image is the last
        return pred, None, None
    return pred, taps["feats"][-1], taps["logits"][-1]


# ----------------------------------------------------------------------------------------------
# signal 1: distance to the training distribution


@dataclass
class FeatureStats:
    """PCA subspace + class means + shared precision of plane-cls features, and the distance threshold."""

    center: np.ndarray       # (D,) mean feature of the training images
    components: np.ndarray   # (k, D) PCA directions
    class_names: list[str]   # the classes whose means are kept (the supported planes)
    class_means: np.ndarray  # (C, k)
    precision: np.ndarray    # (k, k) inverse of the shared (shrunk) within-class covariance
    meta: dict = field(default_factory=dict)  # sidecar: threshold, how it was chosen, counts

    @classmethod
    def fit(cls, feats: np.ndarray, labels: list[str], classes=SUPPORTED, k: int = 32, shrink: float = 0.05,
            meta: dict | None = None) -> "FeatureStats":
        x = np.asarray(feats, np.float64)
        lab = np.asarray(labels)
        keep = np.isin(lab, list(classes))
        x, lab = x[keep], lab[keep]
        names = [c for c in classes if (lab == c).any()]
        center = x.mean(0)
        _, _, vt = np.linalg.svd(x - center, full_matrices=False)
        comps = vt[:k]
        z = (x - center) @ comps.T
        means = np.stack([z[lab == c].mean(0) for c in names])
        resid = z - means[[names.index(c) for c in lab]]
        cov = resid.T @ resid / max(len(z) - len(names), 1)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        return cls(center.astype(np.float32), comps.astype(np.float32), names, means.astype(np.float32),
                   np.linalg.inv(cov).astype(np.float32), dict(meta or {}))

    def distance(self, feats: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Mahalanobis distance (per dimension, so ~1 in distribution) to the nearest class mean, and that class."""
        z = (np.atleast_2d(np.asarray(feats, np.float32)) - self.center) @ self.components.T
        d = z[:, None, :] - self.class_means[None]
        d2 = np.einsum("ncj,jk,nck->nc", d, self.precision, d) / z.shape[1]
        i = d2.argmin(1)
        return np.sqrt(d2[np.arange(len(z)), i]), [self.class_names[j] for j in i]

    def save(self, path: Path) -> Path:
        path = Path(path)
        np.savez_compressed(path, center=self.center.astype(np.float16), components=self.components.astype(np.float16),
                            class_means=self.class_means, precision=self.precision)
        path.with_suffix(".json").write_text(json.dumps({**self.meta, "class_names": self.class_names}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> "FeatureStats":
        z = np.load(path)
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        return cls(z["center"].astype(np.float32), z["components"].astype(np.float32), list(meta["class_names"]),
                   z["class_means"], z["precision"], meta)


# ----------------------------------------------------------------------------------------------
# the gate


NT_MISSING_MAX = 4
"""An auto NT result with at least this many of the six FMF landmarks missing is refused (fewer: flagged)."""

DEFAULT_THRESHOLDS = {"confidence_min": 0.5, "distance_max": None}
"""Used when no statistics file is shipped: the confidence floor only (the distance check is skipped)."""


def route_confidence(probs: dict, routes=None) -> float:
    """The probability of the measurement the top class routes to: classes whose first measurer is the
    same count together (trans-thalamic and trans-ventricular both lead to head biometry)."""
    if routes is None:
        from fetal_detect import measurers

        routes = measurers.routes
    top = max(probs, key=probs.get)
    first = (routes(top) or [None])[0]
    return float(sum(p for c, p in probs.items() if first is not None and (routes(c) or [None])[0] == first))


class AbstainGate:
    """The plane gate of ``Analyzer`` (``gate(image, plane_prediction) -> refusal or None``) plus
    ``review(image, result)``, the measurers' plausibility checks after they ran.

    ``classifier``: a callable returning the plane-cls predictor (its features feed the distance check).
    """

    def __init__(self, classifier=None, stats: FeatureStats | None | str = "shipped"):
        self._classifier = classifier
        if stats == "shipped":
            p = stats_path()
            stats = FeatureStats.load(p) if p.exists() else None
        self.stats = stats
        th = dict(DEFAULT_THRESHOLDS)
        if stats is not None:
            th.update({k: v for k, v in stats.meta.get("thresholds", {}).items() if k in th})
        self.thresholds = th
        self._last: tuple[int, dict] | None = None  # (id of the image, its checks) for review()

    def __call__(self, image: np.ndarray, pred) -> str | None:
        """Before measuring: the routed measurement's confidence and the feature distance."""
        plane, conf = pred.top_class
        rconf = round(route_confidence(pred.probs), 4)
        checks: dict = {"confidence": rconf, "confidence_min": self.thresholds["confidence_min"]}
        self._last = (id(image), checks)
        if plane not in SUPPORTED:
            return None  # `other`: the router serves no measurement; it says so itself
        reason = None
        if rconf < self.thresholds["confidence_min"]:
            reason = (f"plane-cls is unsure which plane this is ('{plane}' at {conf:.2f}, "
                      f"{rconf:.2f} for its measurement, below {self.thresholds['confidence_min']:.2f})")
        classifier = self._classifier() if callable(self._classifier) else self._classifier
        feats = getattr(pred, "features", None)  # tapped during the router's classification pass
        if feats is None and self.stats is not None and classifier is not None:
            if not _heads(classifier):  # e.g. an INT8 ONNX plane-cls: the features come from the shipped .pt
                classifier = self._feature_model() or classifier
            _, feats, _ = predict_with_features(classifier, image)
        note = self._no_distance(classifier, feats)
        if note:
            checks.update(feature_distance=None, feature_distance_note=note)
        else:
            d, nearest = self.stats.distance(feats)
            dmax = self.thresholds["distance_max"]
            checks.update(feature_distance=round(float(d[0]), 3), feature_distance_max=dmax, nearest_plane=nearest[0])
            if reason is None and dmax is not None and d[0] > dmax:
                reason = (f"the image is unlike the training images of every supported plane "
                          f"(feature distance {d[0]:.2f} > {dmax:.2f})")
        checks["reason"] = reason
        return reason

    def _feature_model(self):
        """The shipped torch plane-cls (loaded once) when the statistics were fitted on it, else None."""
        if not hasattr(self, "_torch"):
            self._torch = None
            try:
                from fetal_detect.runtime import load_predictor
                from fetal_detect.tasks import get_task

                pt = get_task("plane-cls").weights
                if pt.exists() and importlib.util.find_spec("torch") is not None:
                    self._torch = load_predictor("plane-cls", pt)
            except Exception:  # noqa: BLE001  (no feature model: the distance check is skipped, and says so)
                self._torch = None
        return self._torch

    def _no_distance(self, classifier, feats) -> str | None:
        """Why the feature distance cannot be used for this classifier (None: it can)."""
        if self.stats is None:
            return "no statistics file"
        if feats is None:
            return f"the {getattr(classifier, 'backend', '?')} back-end exposes no features"
        want = self.stats.meta.get("plane_cls_sha256")
        if want:
            from fetal_detect.runtime import weights_sha256  # hashed once per version of the file

            if weights_sha256(str(getattr(classifier, "weights", ""))) != want:
                return "the statistics were fitted for another plane-cls model (refit: python -m fetal_detect.evaluate.plane_gate)"
        return None

    def review(self, image: np.ndarray, res) -> None:
        """After measuring (auto): each measurement's plausibility check. A refused measurement keeps no
        value; when the plane's primary measurement (the first routed: HC for both head planes, NT for
        mid-sagittal) is not ok, nothing of the image is reported: ``no_standard_plane`` with the reason."""
        if res.plane is None:  # no plane classifier: auto is plain HC, whose own status stands
            return
        checks = self._last[1] if self._last and self._last[0] == id(image) else {}
        for name, m in res.results.items():
            reason, evidence = self.check(name, image, m)
            checks.update(evidence)
            if reason:
                m.status, m.reason, m.values = "refused", reason, {}
        primary = res.results.get(res.measurers[0]) if res.measurers else None
        if primary is not None and primary.status != "ok":
            res.status, res.reason = "no_standard_plane", f"{res.plane} plane, but {primary.reason}"
            for m in res.results.values():
                m.values = {}
                if m.status == "ok":
                    m.status, m.reason = "refused", f"{primary.measurer} was refused: {primary.reason}"
        checks["reason"] = res.reason if res.status != "ok" else None
        res.plane_evidence["gate"] = checks

    @staticmethod
    def check(name: str, image: np.ndarray, m) -> tuple[str | None, dict]:
        """A measurement's plausibility check on the image: ``(reason or None, evidence)``."""
        if m.status != "ok":
            return None, {}
        ellipse = getattr(m.overlay, "ellipse", None)
        if name == "hc" and ellipse:
            from fetal_detect.measure.skull_rim import check_skull, skull_rim

            rim = skull_rim(image, ellipse)
            _, reason = check_skull(rim, m.quality)
            return reason, {"skull_rim": rim}
        missing = m.details.get("missing") or []
        if isinstance(missing, str):
            missing = [x for x in missing.split(";") if x]
        if name == "nt" and m.details.get("plane_ok") is False and len(missing) >= NT_MISSING_MAX:
            # a doubtful plane is the NT measurer's to flag; most landmarks absent means it is no NT view at all
            return (f"no mid-sagittal NT view: {len(missing)} of its landmarks are missing ({', '.join(missing)})",
                    {"nt_plane_missing": missing})
        return None, {}
