"""Evaluate ``nt-seg``: mask mAP per source (real derived bands, exact phantom bands) and band Dice / IoU.

``--data`` is a registry name (its held-out ``--split``; ``nt_seg``'s real images are never in
nt-det's or nt-seg's training split) or a YOLO-seg folder (every image). Dice and IoU compare the
best predicted band (the runtime, as ``measure nt`` uses it) with the reference polygon rasterised at
image size; an image where no band is found scores 0.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fetal_detect.evaluate.cns_det import by_source, evaluate_per_source, scored_records
from fetal_detect.measure.geometry import dice, iou
from fetal_detect.report import write_csv, write_json


def polygon_mask(polygons: list, shape_hw: tuple[int, int]) -> np.ndarray:
    """Normalised (0..1) polygons -> bool mask of ``shape_hw``."""
    h, w = shape_hw
    m = np.zeros((h, w), np.uint8)
    for _, poly in polygons:
        pts = np.round(np.asarray(poly, float) * [w, h]).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(m, [pts], 1)
    return m > 0


def band_overlap(records: list, predictor) -> list[dict]:
    """Per image: Dice / IoU of the best predicted band against the reference, and whether one was found."""
    from fetal_detect.evaluate.plane_cls import load_gray

    rows = []
    for rec in records:
        grey = load_gray(rec.image)
        truth = polygon_mask(rec.polygons, grey.shape)
        inst = predictor.predict(grey).best()
        pred = np.zeros_like(truth) if inst is None or inst.mask is None else inst.mask > 0
        rows.append({"image": rec.name, "source": rec.meta.get("source_dataset", ""), "found": inst is not None,
                     "confidence": None if inst is None else round(inst.confidence, 4),
                     "dice": round(dice(pred, truth), 4), "iou": round(iou(pred, truth), 4)})
    return rows


def evaluate(data: str | Path, weights: str | Path | None = None, out: str | Path | None = None,
             split: str = "val", **_) -> dict:
    """Mask mAP (per source) and band Dice / IoU of an nt-seg model; writes metrics.json and per_image.csv."""
    from fetal_detect.runtime import load_predictor

    records, described = scored_records(data, "segment", split)
    metrics = evaluate_per_source("nt-seg", "segment", data, weights, out, split, scored=(records, described))
    out = Path(metrics["out"])
    predictor = load_predictor("nt-seg", weights, conf=0.05)
    rows = band_overlap(records, predictor)
    write_csv(out / "per_image.csv", rows)
    for source, recs in {"all": records, **by_source(records)}.items():
        names = {r.name for r in recs}
        sel = [r for r in rows if r["image"] in names]
        if sel:
            metrics.setdefault("band", {})[source] = {
                "n_images": len(sel), "found": sum(r["found"] for r in sel),
                "dice": float(np.mean([r["dice"] for r in sel])), "iou": float(np.mean([r["iou"] for r in sel]))}
    metrics["dice"], metrics["iou"] = metrics["band"]["all"]["dice"], metrics["band"]["all"]["iou"]
    write_json(out / "metrics.json", metrics)
    return metrics
