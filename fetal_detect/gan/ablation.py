"""Does the GAN help? The same small subtype classifier trained with and without synthetic images.

Both runs use the registry's patient/source split of ``brain_abnormal`` (the ``_aug`` entry has the
same real images and split plus ``synthetic`` ones in train only), the same seed, epochs and recipe.
Scored on held-out REAL images (val + test, never seen by the GAN or the classifier): per-class
recall, reported for the rare classes with the number of held-out images behind each number.
The baseline classifier is also the feature network of KID (:mod:`fetal_detect.gan.quality`).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.data import registry
from fetal_detect.errors import FetalDetectError
from fetal_detect.gan import data as gdata
from fetal_detect.gan import quality
from fetal_detect.gan.labels import subtype_of

SIDE_PX = 64  # classifier input size


def tiny_cnn(n_classes: int):
    """4 conv blocks (16-32-64-128) + global average pool + linear; ``.features(x)`` gives 128-d."""
    import torch.nn as nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 64), *block(64, 128),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(128, n_classes)

        def features(self, x):
            return self.body(x)

        def forward(self, x):
            return self.head(self.body(x))

    return TinyCNN()


def fit(images: np.ndarray, labels: np.ndarray, n_classes: int, epochs: int = 40, seed: int = 0, batch: int = 32):
    """Train the tiny CNN (Adam, flips + translation) on uint8 gray images; returns the model in eval mode."""
    import torch
    import torch.nn.functional as F

    from fetal_detect.gan.diffaug import rand_translation

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = tiny_cnn(n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    x, y = gdata.to_tensor(_resize(images)), torch.from_numpy(labels)
    for _ in range(epochs):
        model.train()
        for i in range(0, len(x), batch):
            idx = torch.from_numpy(rng.permutation(len(x))[:batch]) if len(x) > batch else torch.arange(len(x))
            xb = x[idx]
            xb = torch.where((torch.rand(len(xb)) < 0.5)[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(rand_translation(xb, 0.1)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _resize(images: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(im, (SIDE_PX, SIDE_PX), interpolation=cv2.INTER_AREA) for im in images])


def predict(model, images: np.ndarray, feats: bool = False) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = gdata.to_tensor(_resize(images))
        return (model.features(x) if feats else model(x).argmax(1)).numpy()


def recall_table(pred: np.ndarray, truth: np.ndarray, classes: list[str]) -> dict:
    return {c: {"n": int((truth == k).sum()), "recall": float((pred[truth == k] == k).mean()) if (truth == k).any() else None}
            for k, c in enumerate(classes)}


def _macro(runs: list[dict], arm: str, classes: list[str]) -> float | None:
    """Mean over seeds of the macro recall over ``classes`` that have held-out images."""
    per_seed = [[r[arm][c]["recall"] for c in classes if r[arm][c]["recall"] is not None] for r in runs]
    vals = [float(np.mean(v)) for v in per_seed if v]
    return float(np.mean(vals)) if vals else None


def synthetic_of(data: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic train images of an augmented registry dataset, with their subtype index."""
    import cv2

    prep = registry.prepare(data, "detect")
    files = [f for f in prep.manifest["files"] if f.get("synthetic")]
    assert all(f["split"] == "train" for f in files), "synthetic image outside the train split"
    imgs = [cv2.imread(str(prep.root / "images" / "train" / f["name"]), cv2.IMREAD_GRAYSCALE) for f in files]
    return np.stack(imgs), np.array([classes.index(subtype_of(f["name"])) for f in files])


def _real_vs_generated_sheet(train, gen_by_class: list[np.ndarray], rare: list[str], path: Path, cols: int = 6):
    """One row per rare class: its first real training image, then generated ones."""
    from fetal_detect.report import contact_sheet, write_image

    tiles, caps = [], []
    for c, gen in zip(rare, gen_by_class):
        real = train.images[train.labels == train.classes.index(c)]
        tiles += [real[0]] + list(gen[:cols - 1])
        caps += [f"REAL {c}"] + [f"GAN {c}"] * (cols - 1)
    return write_image(path, contact_sheet(tiles, caps, cols=cols, tile_w=128))


def kid_report(features, g, ck: dict, train, held, n_gen: int = 50) -> dict:
    """KID of generated vs real train images per class and overall, in the space of ``features``
    (images -> vectors), next to held-out real vs train (what a perfect generator would approach)."""
    from fetal_detect.gan.sample import generate

    f_train, f_held = features(train.images), features(held.images)
    per_class = {}
    for k, c in enumerate(ck["classes"]):
        f_gen = features(generate(g, ck, c, n_gen, seed=123 + k))
        per_class[c] = {"n_real_train": int((train.labels == k).sum()),
                        "kid_gen_vs_train": quality.kid(f_gen, f_train[train.labels == k]),
                        "kid_heldout_vs_train": quality.kid(f_held[held.labels == k], f_train[train.labels == k])}
    all_gen = np.concatenate([generate(g, ck, c, 10, seed=7 + k) for k, c in enumerate(ck["classes"])])
    overall = {"kid_gen_vs_train": quality.kid(features(all_gen), f_train),
               "kid_heldout_vs_train": quality.kid(f_held, f_train)}
    return {"per_class": per_class, "overall": overall}


def compare_kid(weights: list[str | Path], data: str = "brain_abnormal", features: str | Path | None = None) -> dict:
    """Overall and per-class KID of several generators in one feature space (default: the shipped
    plane classifier; 'random' for a random backbone), on the same real images and seeds."""
    if features in (None, "auto"):
        features = settings.WEIGHTS_DIR / "plane-cls.pt"
        if not features.exists():
            raise FetalDetectError(f"{features}: no plane classifier for the KID features; pass --features")
    elif features != "random" and not Path(features).exists():
        raise FetalDetectError(f"{features}: feature network not found")
    from fetal_detect.gan.train import load_generator

    feat = quality.plane_features(None if features == "random" else features)
    out = {"features": str(features), "generators": {}}
    for w in weights:
        g, ck = load_generator(w)
        train = gdata.load_real(data, ck["imgsz"], ("train",), ck["classes"])
        held = gdata.load_real(data, ck["imgsz"], ("val", "test"), ck["classes"])
        r = kid_report(feat, g, ck, train, held)
        out["generators"][str(w)] = {"iterations": ck.get("iteration"), "overall": r["overall"],
                                     "per_class": {c: v["kid_gen_vs_train"] for c, v in r["per_class"].items()}}
    return out


def run(base: str = "brain_abnormal", augmented: str = "brain_abnormal_aug", weights: str | Path | None = None,
        epochs: int = 40, seeds=(0, 1, 2), n_gen: int = 50, out: str | Path | None = None) -> dict:
    """Ablation + KID + memorisation; writes OUT/metrics.json and OUT/nearest_pairs.png."""
    from fetal_detect.gan.sample import generate
    from fetal_detect.gan.train import load_generator

    out = Path(out or settings.RUNS_DIR / "gan" / "quality")
    out.mkdir(parents=True, exist_ok=True)
    entry = registry.get_entry(augmented)
    syn_opts = entry.options["synthetic"]
    named = settings.HOME / syn_opts["generator"]
    if weights and Path(weights).resolve() != named.resolve():
        raise FetalDetectError(f"{weights}: the ablation's synthetic images come from {syn_opts['generator']} "
                               f"(datasets.yaml '{augmented}'); point its synthetic.generator at these weights")
    weights = weights or named
    g, ck = load_generator(weights)
    classes = ck["classes"]
    train = gdata.load_real(base, ck["imgsz"], ("train",), classes)
    held = gdata.load_real(base, ck["imgsz"], ("val", "test"), classes)
    held_all = gdata.load_real(base, ck["imgsz"], ("val", "test"))
    syn_x, syn_y = synthetic_of(augmented, classes)
    rare = [c for c in (syn_opts.get("classes") or classes) if c in classes]
    # ablation
    runs = []
    for seed in seeds:
        m_real = fit(train.images, train.labels, len(classes), epochs, seed)
        m_aug = fit(np.concatenate([train.images, syn_x]), np.concatenate([train.labels, syn_y]), len(classes),
                    epochs, seed)
        runs.append({"seed": seed, "real": recall_table(predict(m_real, held.images), held.labels, classes),
                     "real+synthetic": recall_table(predict(m_aug, held.images), held.labels, classes),
                     "acc_real": float((predict(m_real, held.images) == held.labels).mean()),
                     "acc_aug": float((predict(m_aug, held.images) == held.labels).mean())})
        if seed == seeds[0]:
            feat_net = m_real
    table = {}
    for c in rare:
        row = {"train_real": int(gdata.counts(train)[c]), "train_synthetic": int((syn_y == classes.index(c)).sum()),
               "heldout_real": runs[0]["real"][c]["n"]}
        for arm in ("real", "real+synthetic"):
            vals = [r[arm][c]["recall"] for r in runs if r[arm][c]["recall"] is not None]
            row[f"recall_{arm}"] = float(np.mean(vals)) if vals else None
        table[c] = row
    # KID per class with the baseline classifier's features, and with the shipped plane classifier's
    kid_tiny = kid_report(lambda im: predict(feat_net, im, feats=True), g, ck, train, held, n_gen)
    plane_w = settings.WEIGHTS_DIR / "plane-cls.pt"
    kid_plane = kid_report(quality.plane_features(plane_w), g, ck, train, held, n_gen) if plane_w.exists() else None
    gen_by = {c: generate(g, ck, c, 10, seed=123 + classes.index(c)) for c in rare}
    gen_all = [gen_by[c] for c in rare]
    gen_caps = [c for c in rare for _ in gen_by[c]]
    _real_vs_generated_sheet(train, gen_all, rare, out / "samples_vs_real.png")
    # memorisation
    gen_rare = np.concatenate(gen_all)
    idx, dist = quality.nearest(gen_rare, train.images)
    _, dist_held = quality.nearest(held.images, train.images)
    quality.pairs_sheet(gen_rare, train.images, idx, dist, gen_caps, out / "nearest_pairs.png")
    metrics = {
        "generator": str(weights), "classes": classes, "rare": rare, "epochs": epochs, "seeds": list(seeds),
        "feature_net": "TinyCNN subtype classifier, real train split only, seed %d, %d px" % (seeds[0], SIDE_PX),
        "ablation": table,
        "heldout_classes_unseen_by_gan": dict(Counter(subtype_of(f) for f in held_all.files
                                                      if subtype_of(f) not in classes)),
        "accuracy_heldout": {"real": float(np.mean([r["acc_real"] for r in runs])),
                             "real+synthetic": float(np.mean([r["acc_aug"] for r in runs]))},
        "macro_recall_heldout": {arm: {"rare": _macro(runs, arm, rare), "all": _macro(runs, arm, classes)}
                                 for arm in ("real", "real+synthetic")},
        "kid": kid_tiny,
        "kid_plane_cls": kid_plane,
        "memorisation": {"gen_to_nearest_train_rmse": {"min": float(dist.min()), "median": float(np.median(dist))},
                         "heldout_real_to_nearest_train_rmse": {"min": float(dist_held.min()),
                                                                "median": float(np.median(dist_held))},
                         "sheet": str(out / "nearest_pairs.png")},
        "runs": runs,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
