"""A small class-conditional DCGAN for gray ultrasound at 64-256 px, sized for CPU training.

Generator: ``z`` (``z_dim``) concatenated with a class embedding -> 4x4 map -> nearest-upsample +
3x3 conv blocks (BatchNorm, LeakyReLU) doubling the side up to ``imgsz`` -> 1 channel, tanh.
Discriminator: strided conv blocks with spectral norm, then a projection head (Miyato & Koyama
2018): ``D(x, y) = w . h(x) + <embed(y), h(x)>``, trained with the hinge loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm as SN


def _widths(imgsz: int, base: int, cap: int) -> list[int]:
    """Channel widths from the 4x4 map up to ``imgsz`` (wide at low resolution, narrow at high)."""
    n = int(math.log2(imgsz)) - 2
    if 2 ** (n + 2) != imgsz or n < 2:
        raise ValueError(f"imgsz must be a power of two >= 16, got {imgsz}")
    return [min(cap, base * 2 ** (n - i)) for i in range(n + 1)]  # n+1 widths for 4,8,...,imgsz


class Generator(nn.Module):
    def __init__(self, n_classes: int, imgsz: int = 128, z_dim: int = 64, base: int = 8, cap: int = 128):
        super().__init__()
        self.n_classes, self.imgsz, self.z_dim = n_classes, imgsz, z_dim
        w = _widths(imgsz, base, cap)
        self.embed = nn.Embedding(n_classes, z_dim)
        self.fc = nn.Linear(2 * z_dim, w[0] * 16)
        self.w0 = w[0]
        blocks = []
        for cin, cout in zip(w[:-1], w[1:]):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        self.blocks = nn.Sequential(nn.BatchNorm2d(w[0]), nn.LeakyReLU(0.2, inplace=True), *blocks)
        self.to_img = nn.Sequential(nn.Conv2d(w[-1], 1, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], 1)).view(-1, self.w0, 4, 4)
        return self.to_img(self.blocks(h))


class Discriminator(nn.Module):
    def __init__(self, n_classes: int, imgsz: int = 128, base: int = 8, cap: int = 128):
        super().__init__()
        w = _widths(imgsz, base, cap)[::-1]  # imgsz ... 4
        layers = [SN(nn.Conv2d(1, w[0], 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(w[:-1], w[1:]):
            layers += [SN(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.linear = SN(nn.Linear(w[-1], 1))
        self.embed = SN(nn.Embedding(n_classes, w[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))  # global sum pooling
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
