"""Partial labels: train one detector on a union of sources that each label only some classes.

``tv_plane`` labels Brain/CSP/LV, ``cns_roboflow`` CHOROID_PLEXUS/CSP/MIDLINE_FALX. A plain union
would teach the model that a choroid plexus in a tv_plane image is background. Here the
classification (BCE) loss of each image is masked to the classes its *source* labels: the source is
the ``MEMBER__`` prefix the union reader gives every file name, and a source's class set is read from
the training labels themselves. Box/DFL losses are untouched (they only act on assigned objects).

Mosaic is switched off for these runs: a mosaic mixes four images, possibly from different sources,
and the mask of one of them would be wrong for the others.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.loss import v8DetectionLoss

SEP = "__"


def source_of(im_file: str) -> str:
    """The union member an image came from (``tv_plane__Patient..jpg`` -> ``tv_plane``), or ''."""
    name = Path(im_file).name
    return name.split(SEP, 1)[0] if SEP in name else ""


def class_sets(labels: list[dict]) -> dict[str, set[int]]:
    """``{source: {class ids it labels}}`` from Ultralytics dataset labels (``im_file``, ``cls``)."""
    out: dict[str, set[int]] = defaultdict(set)
    for lb in labels:
        out[source_of(lb["im_file"])].update(int(c) for c in lb["cls"].reshape(-1))
    return dict(out)


class PartialLabelLoss(v8DetectionLoss):
    """v8 detection loss whose class BCE ignores, per image, the classes its source never labels."""

    def __init__(self, model, sets: dict[str, set[int]]):
        super().__init__(model)
        self.masks = {s: torch.zeros(self.nc, device=self.device).index_fill_(
            0, torch.tensor(sorted(c), dtype=torch.long, device=self.device), 1.0) for s, c in sets.items() if c}
        self._base = self.class_weights

    def class_mask(self, im_files) -> torch.Tensor:
        ones = torch.ones(self.nc, device=self.device)
        return torch.stack([self.masks.get(source_of(f), ones) for f in im_files])[:, None, :]  # (bs, 1, nc)

    def get_assigned_targets_and_loss(self, preds, batch, **kw):
        mask = self.class_mask(batch["im_file"]) if "im_file" in batch else None
        self.class_weights = mask if self._base is None or mask is None else mask * self._base
        try:
            return super().get_assigned_targets_and_loss(preds, batch, **kw)
        finally:
            self.class_weights = self._base


class PartialLabelTrainer(DetectionTrainer):
    """DetectionTrainer that installs :class:`PartialLabelLoss` (class sets from the train labels)."""

    def preprocess_batch(self, batch):
        batch = super().preprocess_batch(batch)
        model = self.model.module if hasattr(self.model, "module") else self.model
        if not isinstance(getattr(model, "criterion", None), PartialLabelLoss):
            sets = class_sets(self.train_loader.dataset.labels)
            model.criterion = PartialLabelLoss(model, sets)
        return batch
