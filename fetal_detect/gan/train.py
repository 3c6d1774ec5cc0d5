"""GAN training loop: hinge loss, DiffAugment on real and fake, EMA generator, class-balanced batches.

``train(data, epochs, imgsz, batch, seed, name)`` trains on the *train* split of a registry dataset
(val/test stay unseen, for the ablation) and writes ``runs/train/gan/<name>/``: ``weights/last.pt``
(full state, resumed automatically), ``weights/best.pt`` (the EMA generator only, what ``gan sample``
loads) + ``best.json``, and sample grids ``samples/iter_NNNNNN.png`` (one row per class).
An epoch is one pass over the train split (``ceil(n / batch)`` iterations).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
import fetal_detect.gan.data as gdata
from fetal_detect.gan.diffaug import diff_augment

log = logging.getLogger(__name__)
DEFAULTS = dict(z_dim=64, base=16, cap=256, lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.99), ema=0.995,
                policy="color,translation,cutout", d_arch="recon", features="auto", ms_weight=1.0)
LEGACY = dict(d_arch="dcgan", ms_weight=0.0)  # what a checkpoint without these keys was trained with


def resolve_features(features: str | None) -> str | None:
    """Feature network for the projected D: 'auto' = this project's plane-cls.pt when present, else random."""
    if features in (None, "random"):
        return None
    if features == "auto":
        p = settings.WEIGHTS_DIR / "plane-cls.pt"
        if p.exists():
            return str(p)
        log.warning("no %s: the projected discriminator uses random features (weaker)", p)
        return None
    if not Path(features).exists():
        raise FetalDetectError(f"{features}: feature network for the discriminator not found")
    return str(features)


def build_generator(n_classes: int, imgsz: int, cfg: dict):
    from fetal_detect.gan.model import Generator

    return Generator(n_classes, imgsz, z_dim=cfg["z_dim"], base=cfg["base"], cap=cfg["cap"])


def build_discriminator(n_classes: int, imgsz: int, cfg: dict, features: str | None = None):
    """``cfg['d_arch']``: 'recon' (from scratch, self-supervised by reconstruction), 'projected' (frozen
    features of ``features``) or 'dcgan' (from scratch, the first design)."""
    from fetal_detect.gan.model import Discriminator, ProjectedDiscriminator, ReconDiscriminator

    arch = cfg.get("d_arch", "dcgan")
    if arch == "projected":
        return ProjectedDiscriminator(n_classes, features)
    return (ReconDiscriminator if arch == "recon" else Discriminator)(n_classes, imgsz, base=cfg["base"], cap=cfg["cap"])


def mode_seeking(x1, x2, z1, z2):
    """Mao et al. 2019: 1 / (|G(z1) - G(z2)| / |z1 - z2|); small when two noises give different images."""
    return 1 / ((x1 - x2).abs().mean() / (z1 - z2).abs().mean() + 1e-5)


def load_generator(weights: str | Path):
    """(generator in eval mode, checkpoint dict) from ``best.pt``/``last.pt``/a shipped ``gan-*.pt``."""
    import torch

    ck = torch.load(gdata.weights_path(weights), map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "g_ema" not in ck or "classes" not in ck:
        raise FetalDetectError(f"{weights}: not a fetal-detect GAN checkpoint")
    g = build_generator(len(ck["classes"]), ck["imgsz"], ck["cfg"])
    g.load_state_dict(ck["g_ema"])
    return g.eval(), ck


def sample_grid(g, classes: list[str], z: "torch.Tensor", path: Path) -> Path:
    """One row per class, one column per fixed noise vector; gray PNG with the class names."""
    import torch

    from fetal_detect.report import contact_sheet, write_image

    tiles, caps = [], []
    with torch.no_grad():
        for k, c in enumerate(classes):
            imgs = gdata.to_uint8(g(z, torch.full((len(z),), k, dtype=torch.long)))
            tiles += list(imgs)
            caps += [c] + [""] * (len(imgs) - 1)
    return write_image(path, contact_sheet(tiles, caps, cols=len(z), tile_w=min(g.imgsz, 128)))


def train(data: str = "brain_abnormal", epochs: int = 200, imgsz: int = 128, batch: int = 16, seed: int = 0,
          name: str | None = None, hours: float | None = None, resume: bool = True, save_every: int = 50,
          sample_every: int = 100, threads: int = 1, features: str | None = "auto", d_arch: str | None = None, **_):
    """Train the conditional GAN on the train split of ``data``; resume from ``last.pt`` when present."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from fetal_detect.engine.result import TrainResult

    if epochs < 1 or batch < 2:
        raise FetalDetectError(f"--epochs must be >= 1 and --batch >= 2, got {epochs} and {batch}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    real = gdata.load_real(data, imgsz)
    n_cls = len(real.classes)
    run_dir = settings.RUNS_DIR / "train" / "gan" / (name or "train")
    wdir = run_dir / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    last = wdir / "last.pt"
    ck = torch.load(last, map_location="cpu", weights_only=False) if resume and last.exists() else None
    if ck is None:
        cfg = dict(DEFAULTS, d_arch=d_arch or DEFAULTS["d_arch"])
        cfg["features"] = (resolve_features(features) or "random") if cfg["d_arch"] == "projected" else None
    else:  # the architecture it was trained with; the projected D's frozen features come from its state
        cfg = {**DEFAULTS, **LEGACY, **ck["cfg"]}
    g = build_generator(n_cls, imgsz, cfg)
    d = build_discriminator(n_cls, imgsz, cfg, None if ck else resolve_features(cfg["features"]))
    g_ema = copy.deepcopy(g).eval()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg["lr_g"], betas=cfg["betas"])
    opt_d = torch.optim.Adam([q for q in d.parameters() if q.requires_grad], lr=cfg["lr_d"], betas=cfg["betas"])
    per_epoch = math.ceil(len(real.labels) / batch)
    total = epochs * per_epoch
    it, history = 0, []
    if ck is not None:
        if ck["classes"] != real.classes or ck["imgsz"] != imgsz:
            raise FetalDetectError(f"{last}: was trained on other classes or imgsz; pass another --name")
        g.load_state_dict(ck["g"]), d.load_state_dict(ck["d"]), g_ema.load_state_dict(ck["g_ema"])
        opt_g.load_state_dict(ck["opt_g"]), opt_d.load_state_dict(ck["opt_d"])
        it, history = ck["iteration"], ck.get("history", [])
        rng = np.random.default_rng(seed + it)
        torch.manual_seed(seed + it)
        log.info("resumed %s at iteration %d", last, it)
    x_all = gdata.to_tensor(real.images)
    y_all = torch.from_numpy(real.labels)
    freq = np.bincount(real.labels, minlength=n_cls)
    p = 1 / np.sqrt(freq[real.labels])  # class-balanced-ish: rare classes seen more often
    p /= p.sum()
    z_fixed = torch.randn(4, cfg["z_dim"], generator=torch.Generator().manual_seed(seed))
    meta = {"classes": real.classes, "imgsz": imgsz, "cfg": cfg, "dataset": data, "box_names": real.box_names,
            "class_box": real.class_box(), "train_counts": gdata.counts(real), "seed": seed}

    def save(path: Path, full: bool) -> None:
        ck = {**meta, "g_ema": g_ema.state_dict(), "iteration": it, "history": history[-200:]}
        if full:
            ck.update(g=g.state_dict(), d=d.state_dict(), opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict())
        tmp = path.with_suffix(".tmp")
        torch.save(ck, tmp)
        tmp.replace(path)

    t0 = time.time()
    bar = tqdm(total=total, initial=it, desc=f"gan {data} {imgsz}px", unit="it")
    g.train(), d.train()
    while it < total:
        idx = torch.from_numpy(rng.choice(len(p), size=batch, p=p))
        xr, yr = x_all[idx], y_all[idx]
        flip = torch.rand(batch) < 0.5
        xr = torch.where(flip[:, None, None, None], xr.flip(3), xr)
        # D step
        z = torch.randn(batch, cfg["z_dim"])
        with torch.no_grad():
            xf = g(z, yr)
        xr_aug = diff_augment(xr, cfg["policy"])
        if cfg["d_arch"] == "recon":
            out_r, rec = d(xr_aug, yr, recon=True)
            loss_rec = F.mse_loss(rec, F.interpolate(xr_aug, size=rec.shape[-2:], mode="area"))
        else:
            out_r, loss_rec = d(xr_aug, yr), 0.0
        loss_d = F.relu(1 - out_r).mean() + F.relu(1 + d(diff_augment(xf, cfg["policy"]), yr)).mean() + loss_rec
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G step: the second half repeats the first half's classes with other noise (mode seeking)
        half = batch // 2
        yh = yr[torch.randperm(batch)[:half]]
        yf = torch.cat([yh, yh, yr[: batch - 2 * half]])
        zf = torch.randn(batch, cfg["z_dim"])
        xg = g(zf, yf)
        loss_g = -d(diff_augment(xg, cfg["policy"]), yf).mean()
        if cfg["ms_weight"] > 0:
            loss_g = loss_g + cfg["ms_weight"] * mode_seeking(xg[:half], xg[half:2 * half], zf[:half], zf[half:2 * half])
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            beta = min(cfg["ema"], (1 + it) / (10 + it))  # EMA warm-up: short runs track G early on
            for pe, pg in zip(g_ema.parameters(), g.parameters()):
                pe.lerp_(pg, 1 - beta)
            for be, bg in zip(g_ema.buffers(), g.buffers()):
                be.copy_(bg)
        it += 1
        history.append({"iteration": it, "loss_d": round(loss_d.item(), 4), "loss_g": round(loss_g.item(), 4)})
        bar.update(1)
        bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}", epoch=f"{it / per_epoch:.1f}")
        out_of_time = hours is not None and time.time() - t0 > hours * 3600
        if it % save_every == 0 or it == total or out_of_time:
            save(last, full=True)
        if it % sample_every == 0 or it == total or out_of_time:
            sample_grid(g_ema, real.classes, z_fixed, run_dir / "samples" / f"iter_{it:06d}.png")
        if out_of_time:
            log.info("time budget of %.2f h reached at iteration %d", hours, it)
            break
    bar.close()
    save(wdir / "best.pt", full=False)
    tail = history[-50:] or [{"loss_d": float("nan"), "loss_g": float("nan")}]
    metrics = {"iterations": it, "epochs": round(it / per_epoch, 2), "loss_d": float(np.mean([h["loss_d"] for h in tail])),
               "loss_g": float(np.mean([h["loss_g"] for h in tail])), "train_images": int(len(real.labels))}
    sidecar = {"task": "gan", "kind": "gan", "names": real.classes, "imgsz": imgsz, "dataset": data,
               "box_names": real.box_names, "class_box": meta["class_box"], "train_counts": meta["train_counts"],
               "epochs": epochs, "batch": batch, "seed": seed, "cfg": cfg, "metrics": metrics}
    (wdir / "best.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return TrainResult("gan", wdir / "best.pt", run_dir, metrics)
