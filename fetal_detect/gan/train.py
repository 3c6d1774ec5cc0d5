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
from fetal_detect.gan import data as gdata
from fetal_detect.gan.diffaug import diff_augment

log = logging.getLogger(__name__)
DEFAULTS = dict(z_dim=64, base=8, cap=128, lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.99), ema=0.995,
                policy="color,translation,cutout")


def build(n_classes: int, imgsz: int, cfg: dict):
    from fetal_detect.gan.model import Discriminator, Generator

    g = Generator(n_classes, imgsz, z_dim=cfg["z_dim"], base=cfg["base"], cap=cfg["cap"])
    d = Discriminator(n_classes, imgsz, base=cfg["base"], cap=cfg["cap"])
    return g, d


def load_generator(weights: str | Path):
    """(generator in eval mode, checkpoint dict) from ``best.pt``/``last.pt``/a shipped ``gan-*.pt``."""
    import torch

    ck = torch.load(gdata.weights_path(weights), map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "g_ema" not in ck or "classes" not in ck:
        raise FetalDetectError(f"{weights}: not a fetal-detect GAN checkpoint")
    g, _ = build(len(ck["classes"]), ck["imgsz"], ck["cfg"])
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
          sample_every: int = 100, threads: int = 1, **_):
    """Train the conditional GAN on the train split of ``data``; resume from ``last.pt`` when present."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from fetal_detect.engine.train import TrainResult

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
    cfg = dict(DEFAULTS)
    g, d = build(n_cls, imgsz, cfg)
    g_ema = copy.deepcopy(g).eval()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg["lr_g"], betas=cfg["betas"])
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg["lr_d"], betas=cfg["betas"])
    per_epoch = math.ceil(len(real.labels) / batch)
    total = epochs * per_epoch
    it, history = 0, []
    last = wdir / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
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
        loss_d = F.relu(1 - d(diff_augment(xr, cfg["policy"]), yr)).mean() + \
            F.relu(1 + d(diff_augment(xf, cfg["policy"]), yr)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G step
        yf = yr[torch.randperm(batch)]
        loss_g = -d(diff_augment(g(torch.randn(batch, cfg["z_dim"]), yf), cfg["policy"]), yf).mean()
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
