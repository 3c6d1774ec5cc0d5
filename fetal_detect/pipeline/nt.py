"""NT pipeline: structure detection -> plane check -> NT band (optional seg model) -> calipers in mm.

``NTMeasurer()(image, pixel_size_mm, box=None, crl_mm=None)`` returns a JSON-ready dict. With a
``box`` (x1, y1, x2, y2 px, a given ROI) the band is measured inside it without any model. Without
it the ``nt-det`` model finds the NT box and the six mid-sagittal landmarks; an image that fails the
FMF plane criteria gets ``plane_ok: false``, the missing structures and ``nt_mm: null`` (the value
is kept apart as ``nt_mm_unsuitable_plane``) so no number is passed off as a valid one.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError
from fetal_detect.measure.nt import check_box, measure_nt, plane_check, risk_note
from fetal_detect.report import CYAN, GREEN, RED, YELLOW, _bgr, _label


class NTMeasurer:
    """Loads ``nt-det`` (and ``nt-seg`` when available) once; ``__call__`` per image."""

    task = "nt-det"

    def __init__(self, weights: str | Path | None = None, seg_weights: str | Path | None = None,
                 predictor=None, seg_predictor=None, need_detector: bool = True, plane_conf: float = 0.25,
                 use_seg: bool = True):
        from fetal_detect.runtime import load_predictor, optional_predictor

        self.plane_conf = plane_conf
        self.predictor = predictor
        if self.predictor is None and (need_detector or weights):
            self.predictor = load_predictor("nt-det", weights, conf=0.05)
        self.seg_predictor = seg_predictor
        if use_seg and self.seg_predictor is None:
            self.seg_predictor = optional_predictor("nt-seg", seg_weights)

    @property
    def model_info(self) -> dict:
        info = {"task": "nt", "version": __version__}
        for key, p in (("nt-det", self.predictor), ("nt-seg", self.seg_predictor)):
            if p is not None:
                info[key] = {"weights": str(p.weights), "backend": p.backend}
        return info

    def _seg(self, image: np.ndarray):
        return None if self.seg_predictor is None else self.seg_predictor.predict(image)

    def _band_box(self, seg_pred, shape: tuple[int, int]) -> tuple[tuple[float, ...], float] | None:
        """An NT box from the best ``nt-seg`` band (score >= ``plane_conf``): the mask's bounding box,
        padded by the band's short side so both echogenic lines are inside; None when there is none."""
        inst = None if seg_pred is None else seg_pred.best()
        if inst is None or inst.mask is None or inst.confidence < self.plane_conf or not inst.mask.any():
            return None
        x, y, w, h = cv2.boundingRect(inst.mask_at(shape))
        pad = max(4, min(w, h))
        box = (max(0, x - pad), max(0, y - pad), min(shape[1], x + w + pad), min(shape[0], y + h + pad))
        return tuple(float(v) for v in box), float(inst.confidence)

    def _band_mask(self, image: np.ndarray, box, pred=None) -> tuple[np.ndarray | None, float | None]:
        """The segmented band overlapping ``box`` (image size) and its score, if a seg model is loaded."""
        if self.seg_predictor is None:
            return None, None
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
        return best, None if best is None else max(i.confidence for i in pred.instances)

    def __call__(self, image: np.ndarray, pixel_size_mm: float | None, box=None, crl_mm: float | None = None) -> dict:
        t0 = time.perf_counter()
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        out: dict = {}
        det_conf, seg_pred = None, None
        if box is not None:
            box = check_box(box, grey.shape, "--box")
            out.update(mode="roi", plane_ok=None, missing=None,
                       plane_note="plane not checked: the NT region was given (--box)")
        else:
            if self.predictor is None:
                raise FetalDetectError("no NT detector loaded: pass --box x1,y1,x2,y2 or nt-det weights")
            pred = self.predictor.predict(image)
            detected: dict[str, float] = {}
            for inst in pred.instances:
                detected[inst.name] = max(detected.get(inst.name, 0.0), inst.confidence)
            plane = plane_check(detected, self.plane_conf)
            out.update(mode="detect", plane_ok=plane["plane_ok"], missing=plane["missing"],
                       plane_criteria=plane["criteria"], model_ms=round(pred.model_ms, 1),
                       detections=[i.as_dict() for i in sorted(pred.instances, key=lambda i: -i.confidence)
                                   if i.confidence >= self.plane_conf])
            nt = pred.best("NT")
            if nt is not None and nt.confidence >= self.plane_conf:
                box, det_conf = nt.box_xyxy, nt.confidence
                out["nt_box_source"] = "nt-det"
            else:  # the detector missed the NT: the band segmenter may still see it
                seg_pred = self._seg(image)
                found = self._band_box(seg_pred, grey.shape)
                if found is None:
                    raise FetalDetectError("no NT found: neither the detector nor the band segmenter saw a nuchal "
                                           "translucency in the image", status=422)
                box, det_conf = found
                out["nt_box_source"] = "nt-seg"
        mask, _ = self._band_mask(image, box, seg_pred)
        res = measure_nt(grey, box, pixel_size_mm, mask=mask, model_confidence=det_conf)
        out.update(res)
        out["band_mask_source"] = "nt-seg" if mask is not None else "profiles"
        nt_mm = out.get("nt_mm")
        if out.get("plane_ok") is False:
            out["status"] = "unsuitable_plane"
            out["nt_mm_unsuitable_plane"] = nt_mm
            out["nt_mm"] = None
            out["note"] = ("not a mid-sagittal NT plane (missing: " + ", ".join(out["missing"]) +
                           "); re-acquire the image: NT is not reported")
            out["risk"] = {"flag": None, "note": "no risk statement on an unsuitable plane"}
        else:
            out["status"] = "ok"
            out["risk"] = risk_note(nt_mm, crl_mm)
        out["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out


def draw_nt(image: np.ndarray, result: dict, truth_calipers=None) -> np.ndarray:
    """BGR overlay: NT box, traced band outline, the calipers and the number (and plane status)."""
    out = _bgr(image)
    if result.get("box_xyxy"):
        x1, y1, x2, y2 = (int(round(v)) for v in result["box_xyxy"])
        cv2.rectangle(out, (x1, y1), (x2, y2), CYAN, 1, cv2.LINE_AA)
    for key in ("band_upper_xy", "band_lower_xy"):
        pts = result.get(key)
        if isinstance(pts, np.ndarray) and len(pts) > 1:
            cv2.polylines(out, [np.round(pts * 16).astype(np.int32)], False, GREEN, 1, cv2.LINE_AA, shift=4)
    if truth_calipers:
        a, b = np.round(np.array(truth_calipers) * 16).astype(int)
        cv2.line(out, tuple(a), tuple(b), RED, 1, cv2.LINE_AA, shift=4)
    if result.get("calipers"):
        a, b = np.array(result["calipers"], float)
        for p in (a, b):
            cv2.drawMarker(out, (int(p[0]), int(p[1])), YELLOW, cv2.MARKER_CROSS, 7, 1)
        cv2.line(out, tuple(np.round(a * 16).astype(int)), tuple(np.round(b * 16).astype(int)), YELLOW, 1,
                 cv2.LINE_AA, shift=4)
    mm = result.get("nt_mm") if result.get("nt_mm") is not None else result.get("nt_mm_unsuitable_plane")
    lines = [f"NT {mm:.2f} mm" if mm is not None else f"NT {result.get('nt_px', float('nan')):.1f} px"]
    if result.get("plane_ok") is False:
        lines.append("plane unsuitable: " + ", ".join(result.get("missing") or []))
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
