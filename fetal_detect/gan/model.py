"""A small class-conditional GAN for gray ultrasound at 64-256 px, sized for CPU training.

Generator: ``z`` (``z_dim``) concatenated with a class embedding -> 4x4 map -> nearest-upsample +
3x3 conv blocks (BatchNorm, LeakyReLU) doubling the side up to ``imgsz`` -> 1 channel, tanh.

Two discriminators, both with a projection head (Miyato & Koyama 2018),
``D(x, y) = w . h(x) + <embed(y), h(x)>``, trained with the hinge loss:

- :class:`Discriminator` ("dcgan"): strided conv blocks with spectral norm, learnt from scratch.
- :class:`ProjectedDiscriminator` ("projected", the default): small trainable heads on the *frozen*
  multi-scale features of one of this project's own trained YOLOv8 classifiers (``weights/plane-cls.pt``,
  trained on fetal brain/NT planes; no download), after Sauer et al. 2021 (Projected GANs). Fixed
  features that already know what a skull looks like make D useful after hundreds of iterations
  instead of tens of thousands, which is what a CPU budget allows.
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
        return self._logits(self.features(x), y)

    def _logits(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = f.sum(dim=(2, 3))  # global sum pooling
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


class ReconDiscriminator(Discriminator):
    """:class:`Discriminator` that must also *describe* the real images it sees (Liu et al. 2021, FastGAN).

    A small decoder rebuilds the input at ``RECON_PX`` px from D's 8x8 feature map; its L2 error on
    real images is added to D's loss. On a few hundred images this keeps D's features about the
    whole picture (skull outline, midline) instead of memorised texture, so G is pushed toward the
    layout of a head, not just speckle.
    """

    RECON_PX = 64

    def __init__(self, n_classes: int, imgsz: int = 128, base: int = 8, cap: int = 128):
        super().__init__(n_classes, imgsz, base, cap)
        w8 = _widths(imgsz, base, cap)[1]  # channels at 8x8
        chans = [w8, 64, 32, 16]
        up = []
        for cin, cout in zip(chans[:-1], chans[1:]):  # 8 -> 16 -> 32 -> 64
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1),
                   nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        self.decoder = nn.Sequential(*up, nn.Conv2d(chans[-1], 1, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor, y: torch.Tensor, recon: bool = False):
        h, f8 = x, None
        for layer in self.features:
            h = layer(h)
            if h.shape[-1] == 8:
                f8 = h
        logits = self._logits(h, y)
        return (logits, self.decoder(f8)) if recon else logits


FEATURE_TAPS = (2, 4, 6, 8)  # yolov8n-cls backbone outputs at strides 4, 8, 16, 32 (32/64/128/256 channels)


def feature_backbone(weights: str | None):
    """The backbone layers (0..max tap) of a YOLOv8 classifier, frozen, in eval mode.

    ``weights``: a ``.pt`` of this project's (e.g. ``weights/plane-cls.pt``), or None for a randomly
    initialised ``yolov8n-cls.yaml`` (what the tests use; random features make a weaker D).
    """
    from fetal_detect import settings

    settings.import_ultralytics()
    if weights:
        from ultralytics.nn.tasks import load_checkpoint

        model, _ = load_checkpoint(str(weights), device="cpu")
    else:
        from ultralytics.nn.tasks import ClassificationModel

        model = ClassificationModel("yolov8n-cls.yaml", ch=3, nc=2, verbose=False)
    model = model.fuse()  # BatchNorm folded into the convs: faster, and the same state keys either way
    layers = nn.Sequential(*list(model.model)[: max(FEATURE_TAPS) + 1]).float().eval()
    for q in layers.parameters():
        q.requires_grad_(False)
    return layers


class _PatchHead(nn.Module):
    """Per-position projection logits on one feature map, averaged over positions."""

    def __init__(self, cin: int, n_classes: int, width: int):
        super().__init__()
        self.conv = nn.Sequential(SN(nn.Conv2d(cin, width, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                                  SN(nn.Conv2d(width, width, 1)), nn.LeakyReLU(0.2, inplace=True))
        self.linear = SN(nn.Linear(width, 1))
        self.embed = SN(nn.Embedding(n_classes, width))

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.conv(f).flatten(2).transpose(1, 2)  # N x positions x width
        return (self.linear(h).squeeze(2) + (h * self.embed(y)[:, None]).sum(2)).mean(1)


class ProjectedDiscriminator(nn.Module):
    """Trainable projection heads on the frozen features (:func:`feature_backbone`) at four scales."""

    def __init__(self, n_classes: int, features: str | None = None, width: int = 64):
        super().__init__()
        self.backbone = feature_backbone(features)
        with torch.no_grad():
            chans = [f.shape[1] for f in self._taps(torch.zeros(1, 1, 64, 64))]
        self.heads = nn.ModuleList(_PatchHead(c, n_classes, width) for c in chans)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen BatchNorm statistics, always
        return self

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = ((x + 1) / 2).expand(-1, 3, -1, -1), []  # gray [-1, 1] -> RGB [0, 1], as YOLO expects
        for i, layer in enumerate(self.backbone):
            h = layer(h)
            if i in FEATURE_TAPS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(head(f, y) for head, f in zip(self.heads, self._taps(x)))
