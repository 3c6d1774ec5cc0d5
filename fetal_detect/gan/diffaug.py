"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real AND fake images
before the discriminator, so a GAN trained on a few hundred images does not let D memorise them.

Policy: ``color`` (brightness, contrast; the images are gray), ``translation`` (1/8 of the side,
zero fill), ``cutout`` (one square of half the side). Inputs are ``N x C x H x W`` in ``[-1, 1]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rand_color(x: torch.Tensor) -> torch.Tensor:
    n = x.size(0)
    x = x + (torch.rand(n, 1, 1, 1, device=x.device) - 0.5)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device) + 0.5) + mean  # contrast


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy.unsqueeze(0) + ty + 1, 0, h + 1)
    gx = torch.clamp(gx.unsqueeze(0) + tx + 1, 0, w + 1)
    pad = F.pad(x, [1, 1, 1, 1])
    idx = torch.arange(n, device=x.device)[:, None, None]
    return pad.permute(0, 2, 3, 1)[idx, gy, gx].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy.unsqueeze(0) + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx.unsqueeze(0) + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[torch.arange(n, device=x.device)[:, None, None], gy, gx] = 0
    return x * mask.unsqueeze(1)


POLICIES = {"color": rand_color, "translation": rand_translation, "cutout": rand_cutout}


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout") -> torch.Tensor:
    """Apply each named augmentation of ``policy`` (comma-separated) in turn; '' is the identity."""
    for name in filter(None, policy.split(",")):
        x = POLICIES[name](x)
    return x.contiguous()
