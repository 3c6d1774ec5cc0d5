"""NT pipeline: landmark detection -> plane evidence -> NT band (optional seg model) -> calipers in mm.

``NTMeasurer()(image, pixel_size_mm, box=None, crl_mm=None, strict_plane=None)`` returns a JSON-ready
dict. With a ``box`` (x1, y1, x2, y2 px, a given ROI) the band is measured inside it without any
model. Without it ``nt-det`` finds the NT box and the six mid-sagittal landmarks, at the model's own
input size and at the extra sizes of its plane calibration (merged per class), and
:func:`fetal_detect.measure.nt_plane.plane_evidence` grades the plane (``plane_ok``, ``plane_score``,
``missing``, ``plane_reasons``).

Measure and flag: when the NT is found but the plane is doubtful the NT is still reported
(``status: "ok"``, ``plane_ok: false``, the reasons): the sonographer decides. ``strict_plane=True``
refuses instead: ``status: "unsuitable_plane"``, ``nt_mm: null`` (the value kept apart as
``nt_mm_unsuitable_plane`` for review only).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import cv2
import numpy as np

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.nt import check_box, measure_nt
from fetal_detect.measure.nt_plane import PlaneCalibration, plane_evidence
from fetal_detect.measure.nt_risk import risk_note
from fetal_detect.report import CYAN, GREEN, RED, _bgr, _label, draw_calipers

DETECT_FLOOR = 0.01  # detector score floor: calibrated thresholds may sit below the usual 0.25
MERGE_IOU = 0.5  # same class, boxes overlapping more than this across input sizes: one structure
FIRST_ONLY = ("NT",)  # structures taken at the model's own input size when it finds them there


def merge_scales(predictions, first_only: tuple[str, ...] = FIRST_ONLY) -> list:
    """Instances of several predictions of one image (the first at the model's own input size), per
    class non-maximum-suppressed at :data:`MERGE_IOU`: the best-scored box of each structure survives.
    Classes in ``first_only`` come from the first prediction when it has them (the NT box is better
    placed at the training size: mean IoU with the annotation 0.632 vs 0.622 merged, nt_shenzhen val)."""
    from fetal_detect.runtime import Instance

    first = {i.name for i in predictions[0].instances} if predictions else set()
    pool = sorted((i for k, p in enumerate(predictions) for i in p.instances
                   if k == 0 or i.name not in first_only or i.name not in first), key=lambda i: -i.confidence)
    keep: list[Instance] = []
    for inst in pool:
        if all(k.name != inst.name or box_iou(k.box_xyxy, inst.box_xyxy) < MERGE_IOU for k in keep):
            keep.append(inst)
    return keep


def box_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class NTMeasurer:
    """Loads ``nt-det`` (and ``nt-seg`` when available) once; ``__call__`` per image."""

    task = "nt-det"

    def __init__(self, weights: str | Path | None = None, seg_weights: str | Path | None = None,
                 predictor=None, seg_predictor=None, need_detector: bool = True, use_seg: bool = True,
                 strict_plane: bool = False, calibration: PlaneCalibration | None = None):
        from fetal_detect.runtime import load_predictor, optional_predictor

        self.strict_plane = strict_plane
        self.predictor = predictor
        if self.predictor is None and (need_detector or weights):
            self.predictor = load_predictor("nt-det", weights, conf=DETECT_FLOOR)
        meta = getattr(self.predictor, "meta", None) or {}
        self.calibration = calibration or PlaneCalibration.from_meta(meta)
        self.detectors = self._scaled(meta.get("plane_calibration", {}).get("imgsz") or [])
        self.seg_predictor = seg_predictor
        if use_seg and self.seg_predictor is None:
            self.seg_predictor = optional_predictor("nt-seg", seg_weights)

    def _scaled(self, sizes) -> list:
        """The detector at its own input size plus one shallow copy per extra calibrated size (a model
        with a fixed input size, e.g. a static ONNX export, runs at its own size only)."""
        p = self.predictor
        if p is None:
            return []
        out = [p]
        base = getattr(p, "imgsz", None)
        if base is not None and getattr(p, "dynamic", True):
            for s in sizes:
                if int(s) != int(base):
                    q = copy.copy(p)
                    q.imgsz = int(s)
                    out.append(q)
        return out

    @property
    def model_info(self) -> dict:
        """The measuring model (nt-det, else nt-seg) as ``task/weights/backend``, the other under its name."""
        info = {"task": "nt", "weights": None, "backend": None, "version": __version__}
        for key, p in (("nt-det", self.predictor), ("nt-seg", self.seg_predictor)):
            if p is None:
                continue
            if info["weights"] is None:
                info.update(task=key, weights=str(p.weights), backend=p.backend)
            else:
                info[key] = {"task": key, "weights": str(p.weights), "backend": p.backend}
        if len(self.detectors) > 1:
            info["imgsz"] = [int(d.imgsz) for d in self.detectors]
        return info

    def _seg(self, image: np.ndarray):
        return None if self.seg_predictor is None else self.seg_predictor.predict(image)

    def _band_box(self, seg_pred, shape: tuple[int, int]) -> tuple[tuple[float, ...], float] | None:
        """An NT box from the best ``nt-seg`` band (score >= the NT threshold): the mask's bounding box,
        padded by the band's short side so both echogenic lines are inside; None when there is none."""
        inst = None if seg_pred is None else seg_pred.best()
        if inst is None or inst.mask is None or inst.confidence < self.calibration.threshold("NT") \
                or not inst.mask.any():
            return None
        x, y, w, h = cv2.boundingRect(inst.mask_at(shape))
        pad = max(4, min(w, h))
        box = (max(0, x - pad), max(0, y - pad), min(shape[1], x + w + pad), min(shape[0], y + h + pad))
        return tuple(float(v) for v in box), float(inst.confidence)

    def _band_mask(self, image: np.ndarray, box, pred=None) -> np.ndarray | None:
        """The segmented band overlapping ``box`` (image size), if a seg model is loaded."""
        if self.seg_predictor is None:
            return None
        pred = pred if pred is not None else self.seg_predictor.predict(image)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        best, best_score = None, 0.0
        for inst in pred.instances:
            if inst.mask is None:
                continue
            m = inst.mask_at(image.shape)
            overlap = float(m[max(0, y1):y2, max(0, x1):x2].sum())
            if overlap > 0 and overlap * inst.confidence > best_score:
                best, best_score = (m > 0), overlap * inst.confidence
        return best

    def detect(self, image: np.ndarray) -> tuple[list, float]:
        """nt-det instances at every calibrated input size, merged per class; (instances, model ms)."""
        preds = [d.predict(image) for d in self.detectors]
        return merge_scales(preds), sum(p.model_ms for p in preds)

    def _detect_plane(self, image: np.ndarray, grey: np.ndarray, out: dict):
        """Landmarks -> plane evidence (into ``out``) -> the NT box, its score and the seg prediction."""
        if self.predictor is None:
            raise FetalDetectError("no NT detector loaded: pass --box x1,y1,x2,y2 or nt-det weights")
        instances, ms = self.detect(image)
        plane = plane_evidence([(i.name, i.confidence, i.box_xyxy) for i in instances], self.calibration)
        chosen = plane.pop("chosen")
        shown = [i for i in instances if i.confidence >= min(self.calibration.threshold(i.name), 0.25)]
        out.update(mode="detect", model_ms=round(ms, 1), **plane,
                   detections=[i.as_dict() for i in sorted(shown, key=lambda i: -i.confidence)])
        nt = chosen.get("NT")
        if nt is not None and nt[0] >= self.calibration.threshold("NT"):
            out["nt_box_source"] = "nt-det"
            return nt[1], nt[0], None
        seg_pred = self._seg(image)  # the detector missed the NT: the band segmenter may still see it
        found = self._band_box(seg_pred, grey.shape)
        if found is None:
            raise FetalDetectError("no NT found: neither the detector nor the band segmenter saw a nuchal "
                                   "translucency in the image", status=422)
        out["nt_box_source"] = "nt-seg"
        return found[0], found[1], seg_pred

    def __call__(self, image: np.ndarray, pixel_size_mm: float | None, box=None, crl_mm: float | None = None,
                 strict_plane: bool | None = None) -> dict:
        t0 = time.perf_counter()
        strict = self.strict_plane if strict_plane is None else bool(strict_plane)
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        out: dict = {}
        det_conf, seg_pred = None, None
        if box is not None:
            box = check_box(box, grey.shape, "--box")
            out.update(mode="roi", plane_ok=None, missing=None, plane_score=None, nt_box_source="--box",
                       plane_note="plane not checked: the NT region was given (--box)")
        else:
            box, det_conf, seg_pred = self._detect_plane(image, grey, out)
        mask = self._band_mask(image, box, seg_pred)
        out.update(measure_nt(grey, box, pixel_size_mm, mask=mask, model_confidence=det_conf))
        out["band_mask_source"] = "nt-seg" if mask is not None else "profiles"
        out["band_outline_xy"] = band_outline(out)
        out["strict_plane"] = strict
        nt_mm = out.get("nt_mm")
        if out.get("plane_ok") is False and strict:
            out.update(status="unsuitable_plane", nt_mm_unsuitable_plane=nt_mm, nt_mm=None,
                       nt_px_unsuitable_plane=out["nt_px"], nt_px=None,
                       note=f"not a mid-sagittal NT plane ({'; '.join(out['plane_reasons'])}); "
                            "--strict-plane: NT is not reported",
                       risk={"flag": None, "note": "no risk statement on an unsuitable plane"})
        else:
            out["status"] = "ok"
            out["risk"] = risk_note(nt_mm, crl_mm)
            if out.get("plane_ok") is False:
                out["plane_note"] = ("plane doubtful, NT measured but check the image: "
                                     + "; ".join(out["plane_reasons"]))
        out["value_label"] = nt_label(out)
        out["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out


def nt_label(result: dict) -> str:
    """``NT 1.84 mm`` (or ``NT 18.4 px`` without a pixel size), the value as every output writes it."""
    mm = result.get("nt_mm") if result.get("nt_mm") is not None else result.get("nt_mm_unsuitable_plane")
    if mm is not None:
        return f"NT {mm:.2f} mm"
    px = result.get("nt_px") if result.get("nt_px") is not None else result.get("nt_px_unsuitable_plane")
    return f"NT {px if px is not None else float('nan'):.1f} px"


def band_outline(result: dict) -> list[list[float]] | None:
    """The traced band as one closed polygon (upper border, then the lower one reversed), px."""
    up, lo = result.get("band_upper_xy"), result.get("band_lower_xy")
    if not (isinstance(up, np.ndarray) and isinstance(lo, np.ndarray) and len(up) > 1 and len(lo) > 1):
        return None
    return [[round(float(x), 1), round(float(y), 1)] for x, y in np.concatenate([up, lo[::-1]])]


def draw_nt(image: np.ndarray, result: dict, truth_calipers=None) -> np.ndarray:
    """BGR overlay: NT box, traced band outline, on-to-on calipers, the value with its unit, plane flag."""
    out = _bgr(image)
    if result.get("box_xyxy"):
        x1, y1, x2, y2 = (int(round(v)) for v in result["box_xyxy"])
        cv2.rectangle(out, (x1, y1), (x2, y2), CYAN, 1, cv2.LINE_AA)
    poly = result.get("band_outline_xy") or band_outline(result)
    if poly:
        cv2.polylines(out, [np.round(np.array(poly) * 16).astype(np.int32)], True, GREEN, 1, cv2.LINE_AA, shift=4)
    if truth_calipers:
        draw_calipers(out, *truth_calipers, color=RED)
    if result.get("calipers"):
        draw_calipers(out, *result["calipers"])
    lines = [nt_label(result)]
    if result.get("plane_ok") is False:
        lines.append("plane doubtful: " + ", ".join(result.get("missing") or []))
    _label(out, lines)
    return out


def parse_box(text: str | None):
    """``"x1,y1,x2,y2"`` -> 4 floats (px), or None."""
    if not text:
        return None
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise FetalDetectError(f"--box must be x1,y1,x2,y2 in px, got '{text}'")
    return tuple(vals)
