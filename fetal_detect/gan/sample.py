"""Generate images of one class with a trained generator, as a YOLO detection folder or as Records.

Labels: the generator cannot say where the head is, so each image gets its class's *mean*
whole-head box from the training labels (``class_box`` in the checkpoint) and that class's box
class (``abnormal``/``normal`` for brain_abnormal). An approximation, stated in docs/gan.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fetal_detect.errors import FetalDetectError
import fetal_detect.gan.data as gdata


def generate(g, ck: dict, cls: str, n: int, seed: int = 0, batch: int = 32) -> np.ndarray:
    """``n`` uint8 gray images (n x S x S) of class ``cls``; the same seed gives the same images."""
    import torch

    if cls not in ck["classes"]:
        raise FetalDetectError(f"unknown class '{cls}' for this generator; choose one of: {', '.join(ck['classes'])}")
    if n < 1:
        raise FetalDetectError(f"--n must be >= 1, got {n}")
    k = ck["classes"].index(cls)
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            m = min(batch, n - i)
            z = torch.randn(m, ck["cfg"]["z_dim"], generator=gen)
            out.append(gdata.to_uint8(g(z, torch.full((m,), k, dtype=torch.long))))
    return np.concatenate(out)


def label_line(ck: dict, cls: str) -> tuple[str, list[float]]:
    """(box class name, [xc, yc, w, h]) of the whole-head box written for class ``cls``."""
    name, *box = ck["class_box"][cls]
    return name, [float(v) for v in box]


def write_samples(weights: str | Path, cls: str, n: int, out: str | Path, seed: int = 0) -> dict:
    """Write ``out/images/*.png`` + ``out/labels/*.txt`` (YOLO) + ``out/classes.txt``; returns a summary."""
    import cv2

    from fetal_detect.gan.train import load_generator

    g, ck = load_generator(weights)
    imgs = generate(g, ck, cls, n, seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    box_names = ck["box_names"] or [cls]
    (out / "classes.txt").write_text("\n".join(box_names) + "\n")
    name, box = label_line(ck, cls)
    cid = box_names.index(name) if name in box_names else 0
    files = []
    for i, im in enumerate(imgs):
        stem = f"{cls}_synthetic_s{seed}_{i:04d}"
        p = out / "images" / f"{stem}.png"
        if not cv2.imwrite(str(p), im):
            raise FetalDetectError(f"{p}: could not write image")
        (out / "labels" / f"{stem}.txt").write_text(f"{cid} " + " ".join(f"{v:.6f}" for v in box) + "\n")
        files.append(str(p))
    return {"class": cls, "n": len(files), "out": str(out), "imgsz": ck["imgsz"], "box_class": name,
            "box_xywhn": box, "weights": str(weights), "seed": seed}


def synthetic_records(options: dict, kind: str) -> list:
    """Registry hook: ``synthetic: {generator, per_class, classes, seed}`` -> Records for the train split.

    Each record has ``meta.synthetic = True`` and ``split = 'train'``; the registry appends them after
    the patient split, so they can never land in val or test.
    """
    from fetal_detect import settings
    from fetal_detect.data.converters.base import Record
    from fetal_detect.gan.train import load_generator

    path = Path(options["generator"])
    path = path if path.is_absolute() else settings.HOME / path
    g, ck = load_generator(path)
    k = int(options.get("per_class", 10))
    classes = options.get("classes") or ck["classes"]
    seed = int(options.get("seed", 0))
    records = []
    for j, cls in enumerate(classes):
        imgs = generate(g, ck, cls, k, seed + 1000 * j)
        name, box = label_line(ck, cls)
        for i, im in enumerate(imgs):
            records.append(Record(
                name=f"{cls}_synthetic_{i:04d}", image=(lambda a=im: a), patient_id=f"synthetic:{cls}:{i}",
                boxes=[(name, *box)], label=name if kind == "classify" else None, split="train",
                meta={"synthetic": True, "subtype": cls, "generator": str(options["generator"])}))
    return records
