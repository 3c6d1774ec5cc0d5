"""The ``phantom`` source: synthetic images generated on the fly, with exact annotations."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from fetal_detect.data import phantom as ph
from fetal_detect.data.converters.base import Record, box_xyxy_to_xywhn, mask_to_polygons


def read_phantom(entry, root: Path | None, kind: str) -> Iterable[Record]:
    """``source: {phantom: hc|nt|cns|blank, n: N, seed: S, pixel_size_mm: ...}`` -> records.

    Segmentation takes the exact mask (skull for hc, fluid band for nt); detection takes the boxes;
    classification takes ``source.label`` (default: the phantom kind).
    """
    src = entry.source
    phantom_kind = src["phantom"]
    kwargs = {k: src[k] for k in ("pixel_size_mm", "noise") if k in src}
    names = set(entry.names)
    for sample in ph.generate(phantom_kind, int(src.get("n", 32)), int(src.get("seed", 0)), **kwargs):
        h, w = sample.image.shape
        rec = Record(name=sample.patient_id, image=(lambda im=sample.image: im), patient_id=sample.patient_id,
                     meta={"pixel_size_mm": sample.pixel_size_mm, "synthetic": True,
                           **{k: v for k, v in sample.truth.items() if k.endswith("_mm") and v is not None}})
        if kind == "segment" and sample.mask is not None:
            cls = entry.names[0]
            rec.polygons = [(cls, p) for p in mask_to_polygons(sample.mask)]
        elif kind == "detect":
            rec.boxes = [(n, *box_xyxy_to_xywhn(x1, y1, x2, y2, w, h)) for n, x1, y1, x2, y2 in sample.boxes
                         if not names or n in names or n in entry.remap]
        elif kind == "classify":
            rec.label = src.get("label", phantom_kind)
        yield rec
