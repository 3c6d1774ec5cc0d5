"""HC scoring and calibration: measure HC18-style items, compare with their reference, fit the bias line.

Used by training (the calibration stored in the sidecar; k-fold scores), evaluation, export parity and
the demo, so an HC error is computed one way only. ``measurer`` is any ``callable(image, pixel_size_mm)
-> dict`` with ``hc_mm``, ``hc_uncalibrated_mm``, ``mask``... (``pipeline.hc.HCMeasurer``).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from fetal_detect.data.converters.hc18 import HC18Item
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.agreement import bland_altman, icc_a1, roc_pr
from fetal_detect.measure.geometry import Ellipse, dice, ellipse_perimeter, fit_ellipse, hausdorff_px, iou
from fetal_detect.measure.hc import HCCalibration, fit_calibration
from fetal_detect.report import draw_hc

log = logging.getLogger(__name__)


def split_items(prepared, split: str) -> list[HC18Item]:
    """HC18 items of one split of a prepared HC dataset (masks read from the original source)."""
    import pandas as pd

    from fetal_detect.data.converters.hc18 import _find_mask

    meta = pd.read_csv(prepared.root / "meta.csv", dtype={"patient": str})
    rows = meta[meta["split"] == split]
    if rows.empty:
        raise FetalDetectError(f"dataset '{prepared.manifest['dataset']}' has no '{split}' split")
    items = []
    for _, r in rows.iterrows():
        img = (prepared.root / r["file"]).resolve()  # follows the link to the source image
        root = img.parent.parent if img.parent.name == "images" else img.parent
        hc = r.get("hc_mm")
        items.append(HC18Item(img, _find_mask(root, img), float(r["pixel_size_mm"]),
                              None if hc is None or (isinstance(hc, float) and math.isnan(hc)) else float(hc),
                              str(r["patient"])))
    return items


def score(items: list[HC18Item], measurer, progress: bool = True) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Measure each item; one row per image (``status`` ok/failed) and the overlays of scored images."""
    from tqdm import tqdm

    from fetal_detect.io import load_image

    rows, overlays = [], {}
    for it in tqdm(items, desc="evaluate hc-seg", unit="img", disable=not progress):
        row = {"image": it.image_path.name, "patient": it.patient_id, "pixel_size_mm": it.pixel_size_mm}
        try:
            img = load_image(it.image_path).image
            res = measurer(img, it.pixel_size_mm)
            truth = it.load_mask() if it.mask_path else None
            ref_hc = it.hc_mm
            truth_ell = None
            if truth is not None:
                fit = fit_ellipse(truth)
                if fit is not None:
                    truth_ell = fit[0]
                    if ref_hc is None:
                        ref_hc = ellipse_perimeter(truth_ell.a, truth_ell.b) * it.pixel_size_mm
            row.update(status="ok", hc_mm=res["hc_mm"], hc_ref_mm=ref_hc, bpd_mm=res["bpd_mm"],
                       ofd_mm=res["ofd_mm"], hc_uncalibrated_mm=res["hc_uncalibrated_mm"],
                       confidence=res["confidence"], processing_ms=res["processing_ms"], model_ms=res.get("model_ms"),
                       border_points_dropped=res.get("border_points_dropped"), rim_support=res.get("rim_support"))
            if ref_hc is not None:
                row["hc_err_mm"] = res["hc_mm"] - ref_hc
            if truth is not None:
                row["dice"] = dice(res["mask"], truth)
                # the HC18 convention: the measured ellipse (what is reported and drawn) against the reference
                row["ellipse_dice"] = dice(Ellipse(**res["ellipse"]).mask(truth.shape[:2]), truth)
                row["iou"] = iou(res["mask"], truth)
                row["hausdorff_mm"] = hausdorff_px(res["mask"], truth) * it.pixel_size_mm
            overlays[it.image_path.name] = draw_hc(img, res, truth_ell.as_dict() if truth_ell else None)
        except FetalDetectError as e:
            row.update(status="failed", error=str(e))
            log.warning("%s: %s", it.image_path.name, e)
        rows.append(row)
    return rows, overlays


def summarise(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]

    def arr(key):
        return np.array([r[key] for r in ok if r.get(key) is not None and np.isfinite(r[key])], float)

    err, d, hd, j, ed = arr("hc_err_mm"), arr("dice"), arr("hausdorff_mm"), arr("iou"), arr("ellipse_dice")
    m = {"n_images": len(rows), "n_scored": len(ok), "n_failed": len(rows) - len(ok)}
    if len(err):
        ba = bland_altman(err, np.zeros_like(err))  # err is already model - reference
        m.update(hc_mae_mm=ba["mae"], hc_bias_mm=ba["bias"], hc_sd_mm=ba["sd"] if ba["sd"] is not None else 0.0,
                 hc_max_mm=float(np.max(np.abs(err))), hc_loa_mm=ba["loa"])
        ref, pred = arr("hc_ref_mm"), arr("hc_mm")
        if len(ref) == len(pred) and len(ref) > 2:
            m["hc_icc"] = icc_a1(pred, ref)
        if len(ref) == len(err) and len(ref) >= 6:
            m["hc_mae_by_tercile_mm"] = mae_by_tercile(ref, err)
    if len(d):
        m.update(dice=float(np.mean(d)), dice_sd=float(np.std(d)))
    if len(ed):
        m["ellipse_dice"] = float(np.mean(ed))
    if len(j):
        m["iou"] = float(np.mean(j))
    if len(hd):
        m["hausdorff_mm"] = float(np.mean(hd[np.isfinite(hd)])) if np.isfinite(hd).any() else None
    ms = arr("processing_ms")
    if len(ms):
        m["processing_ms_median"] = float(np.median(ms))
    m.update(confidence_as_qc(ok))
    return m


def mae_by_tercile(ref_mm: np.ndarray, err_mm: np.ndarray) -> dict:
    """HC mean absolute error in the small / middle / large thirds of the reference HC (with the cut points)."""
    cuts = np.quantile(ref_mm, [1 / 3, 2 / 3])
    part = np.digitize(ref_mm, cuts)
    return {"cuts_mm": [round(float(c), 1) for c in cuts],
            **{name: float(np.mean(np.abs(err_mm[part == i]))) for i, name in enumerate(("small", "middle", "large"))}}


QC_TOLERANCE_MM = 3.0  # an HC off by more than this is a measurement to redo


def qc_scores(rows: list[dict], tolerance_mm: float = QC_TOLERANCE_MM) -> tuple[np.ndarray, np.ndarray]:
    """(measurement off by more than ``tolerance_mm``, 1 - confidence) for the rows that have both."""
    rows = [r for r in rows if r.get("hc_err_mm") is not None and r.get("confidence") is not None]
    return (np.array([abs(r["hc_err_mm"]) > tolerance_mm for r in rows], bool),
            1.0 - np.array([r["confidence"] for r in rows], float))


def confidence_as_qc(ok: list[dict], tolerance_mm: float = QC_TOLERANCE_MM) -> dict:
    """How well ``confidence`` flags measurements off by more than ``tolerance_mm``: AUROC / AP of 1 - confidence."""
    bad, score = qc_scores(ok, tolerance_mm)
    if not len(bad):
        return {}
    qc = roc_pr(bad, score)
    return {"qc_tolerance_mm": tolerance_mm, "qc_n_off": qc["n_positive"], "qc_auroc": qc["auroc"],
            "qc_average_precision": qc["average_precision"]}


def calibrate(items: list[HC18Item], measurer, source: str) -> HCCalibration:
    """Fit the HC bias line from ``measurer``'s uncalibrated HC on ``items`` (a *training* split, never val)."""
    measurer.calibration = HCCalibration()
    rows, _ = score([it for it in items if it.hc_mm is not None], measurer, progress=True)
    ok = [r for r in rows if r["status"] == "ok"]
    return fit_calibration(np.array([r["hc_uncalibrated_mm"] for r in ok]), np.array([r["hc_ref_mm"] for r in ok]),
                           source=f"{source}, {len(ok)} images")
