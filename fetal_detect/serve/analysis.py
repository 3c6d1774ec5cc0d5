"""What the service does with one upload: bytes -> frames -> ``Analyzer`` -> one JSON-ready response.

Kept free of FastAPI so it can be tested and reused on its own. A cine loop (multi-frame DICOM) is
analysed frame by frame and the frame with the best ``frame_score`` (image quality x measurement
confidence) is returned. The client's file name and every DICOM tag other than the pixel size are
left out of the response: nothing patient-identifying reaches a response or a log line.
"""
from __future__ import annotations

import base64
import math
import re
import time
from pathlib import Path

import cv2
import numpy as np

from fetal_detect import __version__
from fetal_detect.errors import FetalDetectError
from fetal_detect.io import LoadedImage, load_image

MEASUREMENT_UNITS = (("_mm", "mm"), ("_px", "px"), ("_weeks", "weeks"), ("_deg", "deg"))
MAX_INLINE_PNG_BYTES = 8 * 1024 * 1024  # per data URL (frame_png, overlay_png); larger ones are left out
_ABS_PATH = re.compile(r"(?<![\w.+/-])((?:[A-Za-z]:)?[/\\][^\s'\"/\\:,;]+(?:[/\\][^\s'\"/\\:,;]+)+)")


def image_quality(image: np.ndarray) -> dict:
    """Image-only quality of a grey uint8 frame, each term in 0..1 (1 = best).

    ``coverage``: share of the frame that is not black (the ultrasound sector), ``contrast``: grey
    standard deviation inside it / 64, ``sharpness``: ``1 - exp(-var(Laplacian) / 200)`` inside it;
    ``score`` is their geometric mean. A heuristic for ranking frames of one loop, not a clinical grade.
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    fg = grey > 8
    coverage = float(fg.mean()) if grey.size else 0.0
    if coverage < 0.01:
        return {"score": 0.0, "coverage": round(coverage, 4), "contrast": 0.0, "sharpness": 0.0}
    contrast = min(float(grey[fg].std()) / 64.0, 1.0)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    sharpness = 1.0 - math.exp(-float(lap[fg].var()) / 200.0)
    score = (min(coverage / 0.3, 1.0) * contrast * sharpness) ** (1 / 3)
    return {"score": round(score, 4), "coverage": round(coverage, 4), "contrast": round(contrast, 4),
            "sharpness": round(sharpness, 4)}


def parse_pixel_size(text: str | None) -> float | None:
    """Form field ``pixel_size_mm`` -> positive finite float, or None when empty."""
    from fetal_detect.io import parse_pixel_size_mm

    return parse_pixel_size_mm(text, "pixel_size_mm")


def analyze_upload(analyzer, data: bytes, task: str = "auto", pixel_size_mm: float | None = None,
                   max_bytes: int = 20 * 1024 * 1024, max_pixels: int | None = None, max_frames: int = 300,
                   include_image: bool = False, overlay: bool = False, strict_plane: bool = False,
                   ctx=None) -> tuple[dict, np.ndarray]:
    """Analyse one uploaded file (image or DICOM, still or cine) -> (response dict, analysed frame).

    ``pixel_size_mm`` (mm per px) overrides the DICOM calibration; without either, lengths are in px.
    ``include_image`` adds the analysed frame as a PNG data URL (``frame_png``; browsers cannot decode
    DICOM), ``overlay`` the server-drawn overlay (``overlay_png``). Raises :class:`FetalDetectError`
    (400/413/415) for bad files; "nothing found" is a normal answer with ``status: "no_finding"``.
    ``ctx`` (a :class:`~fetal_detect.serve.app.JobContext`) is told the job's cost and checked before each
    frame (client gone or deadline passed: the analysis stops there).
    ``strict_plane``: an NT on a doubtful plane is refused (``unsuitable_plane``) instead of flagged.
    """
    t0 = time.perf_counter()
    kw = {"max_pixels": max_pixels} if max_pixels else {}
    check = ctx.check if ctx is not None else None
    try:  # never the client's file name; the frame count is checked before decoding
        loaded = load_image(data, name="upload", max_bytes=max_bytes, max_frames=max_frames, check=check, **kw)
    except FetalDetectError:
        raise
    except Exception as e:  # a decoder corner case is still the file's fault: 400, not 500
        raise FetalDetectError(f"upload: cannot decode the file ({type(e).__name__})") from None
    del data
    if ctx is not None:
        ctx.set_cost(sum(f.size for f in loaded.frames))
    from fetal_detect.measure.calibration import calibrate_image

    cal = calibrate_image(loaded, pixel_size_mm, user_detail="request field pixel_size_mm")
    px = cal.pixel_size_mm
    best, frames = None, []
    for i, frame in enumerate(loaded.frames):
        if check:
            check()
        quality = image_quality(frame)
        try:
            report = analyzer.analyze(frame, px, task, strict_plane=strict_plane)
        except FetalDetectError as e:
            if e.status != 422:  # bad request (task, pixel size): the same for every frame
                raise
            report = {"status": "no_finding", "message": str(e), "task": task, "models": loaded_models(analyzer)}
        ok = report.get("status", "ok") == "ok"
        conf = (report.get("result") or {}).get("confidence")
        score = quality["score"] * (1.0 if conf is None else float(conf)) if ok else 0.0
        frames.append({"index": i, "status": report.get("status", "ok"), "image_quality": quality["score"],
                       "confidence": conf, "frame_score": round(score, 4)})
        key = (ok, score, quality["score"])
        if best is None or key > best[0]:
            best = (key, i, report, quality)
    _, index, report, quality = best
    frame = loaded.frames[index]
    resp = public_paths(build_response(report, quality, loaded, index, cal, frames))
    if include_image:
        _inline(resp, "frame_png", frame)
    if overlay:
        _inline(resp, "overlay_png", draw_overlay(frame, resp))
    resp["processing_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return json_safe(resp), frame


def _inline(resp: dict, key: str, image: np.ndarray) -> None:
    """Add ``image`` as a PNG data URL under ``key``, unless it is over :data:`MAX_INLINE_PNG_BYTES`
    (then ``images_omitted`` lists it: the JSON stays a bounded size)."""
    url = png_data_url(image, MAX_INLINE_PNG_BYTES)
    if url is None:
        resp.setdefault("images_omitted", []).append(key)
    else:
        resp[key] = url


def public_text(text: str) -> str:
    """``text`` with every absolute path reduced to its public form (see :func:`public_path`)."""
    return _ABS_PATH.sub(lambda m: public_path(m.group(1)), text)


def public_path(path: str) -> str:
    """A server path as clients may see it: relative to the weights folder when inside it, else the file name."""
    from fetal_detect import settings

    p = Path(path)
    for root in (settings.WEIGHTS_DIR, settings.HOME):
        try:
            return str(p.resolve().relative_to(Path(root).resolve()))
        except (ValueError, OSError):
            continue
    return p.name


def public_paths(obj):
    """Every string in a JSON-like structure with absolute server paths reduced (data URLs untouched)."""
    if isinstance(obj, dict):
        return {k: public_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [public_paths(v) for v in obj]
    if isinstance(obj, Path):
        return public_path(str(obj)) if obj.is_absolute() else str(obj)
    if isinstance(obj, str) and not obj.startswith("data:"):
        return public_text(obj)
    return obj


def build_response(report: dict, quality: dict, loaded: LoadedImage, index: int, cal, frames: list[dict]) -> dict:
    """The public response: the analyzer report plus image facts, quality, overlay primitives, model."""
    result = report.get("result") or {}
    h, w = loaded.frames[index].shape[:2]
    models = {k: _public_model(v) for k, v in (report.get("models") or {}).items()}
    first = models.get(report.get("task")) or next(iter(models.values()), {})  # the measuring model
    resp = {
        "status": report.get("status", "ok"),
        "task": report.get("task"),
        "plane": report.get("plane"),
        "plane_confidence": report.get("plane_confidence"),
        "measurements": report.get("measurements") or {},
        "units": {k: u for k in (report.get("measurements") or {}) for suf, u in MEASUREMENT_UNITS if k.endswith(suf)},
        "confidence": result.get("confidence"),
        "detections": detections(report),
        "overlay": overlay_primitives(report, cal),
        "image_quality": quality,
        "image": {"width": w, "height": h, "format": loaded.format, "frames": len(loaded.frames),
                  "frame_index": index, **cal.as_dict()},
        "model": {"name": first.get("task") or first.get("name"), "version": first.get("version", __version__),
                  "weights": first.get("weights"), "backend": first.get("backend")},
        "models": models,
        "version": __version__,
        "result": result,
    }
    if report.get("message"):
        resp["message"] = report["message"]
    if len(frames) > 1:
        resp["frames"] = frames
    return resp


def detections(report: dict) -> list[dict]:
    """Boxes as ``{name, confidence, box_xyxy}`` (image px) from whatever the report carries."""
    result = report.get("result") or {}
    for src in (report.get("detections"), result.get("detections"), result.get("instances")):
        if src:
            return [d for d in src if isinstance(d, dict) and "box_xyxy" in d]
    return []


def overlay_primitives(report: dict, cal=None) -> dict:
    """What the page draws, in image px: ``ellipse`` (cx, cy, a, b, angle_deg), ``calipers`` (pairs of
    points), ``boxes`` (the detections), ``ruler_ticks`` ([x, y] of the depth-ruler ticks the pixel size
    came from, empty unless calibrated from the ruler). Keeps the API JSON-only: the page renders it."""
    result = report.get("result") or {}
    calipers = []
    raw = result.get("calipers") or report.get("calipers") or []
    if _caliper_points(raw):  # one pair of points (the NT): [[x1, y1], [x2, y2]]
        raw = [raw]
    for c in raw:
        pts = _caliper_points(c)
        if pts:
            calipers.append(pts)
    ticks = (cal.ruler or {}).get("ticks", []) if cal is not None and cal.source == "ruler" else []
    extra = {}
    if result.get("band_outline_xy"):  # NT: the traced band outline and the value with its unit
        extra = {"band": result["band_outline_xy"], "label": result.get("value_label")}
    return {"ellipse": result.get("ellipse"), "calipers": calipers, "ruler_ticks": ticks, **extra,
            "boxes": [{"name": d.get("name"), "confidence": d.get("confidence"), "box_xyxy": d["box_xyxy"]}
                      for d in detections(report)]}


def _caliper_points(c) -> list[list[float]] | None:
    """Accept ``[[x1, y1], [x2, y2]]``, ``{p1, p2}`` or ``{x1, y1, x2, y2}``; return two [x, y] points."""
    try:
        if isinstance(c, dict):
            if "p1" in c and "p2" in c:
                c = [c["p1"], c["p2"]]
            else:
                c = [[c["x1"], c["y1"]], [c["x2"], c["y2"]]]
        (x1, y1), (x2, y2) = c
        return [[float(x1), float(y1)], [float(x2), float(y2)]]
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def draw_overlay(frame: np.ndarray, resp: dict) -> np.ndarray:
    """Server-side overlay (BGR) with the same primitives the page draws, via :mod:`fetal_detect.report`."""
    from fetal_detect.report import GREEN, _label, draw_boxes, draw_calipers, draw_hc

    ov = resp["overlay"]
    out = draw_hc(frame, resp["result"]) if ov.get("ellipse") else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if ov["boxes"]:
        out = draw_boxes(out, ov["boxes"])
    if ov.get("band"):
        cv2.polylines(out, [np.round(np.array(ov["band"]) * 16).astype(np.int32)], True, GREEN, 1, cv2.LINE_AA, shift=4)
    for a, b in ov["calipers"]:
        draw_calipers(out, a, b)
    if ov.get("label"):
        _label(out, [ov["label"]])
    if ov.get("ruler_ticks"):
        from fetal_detect.measure.ruler import draw_ruler

        out = draw_ruler(out, resp["image"].get("ruler") or {"ticks": ov["ruler_ticks"]})
    return out


def png_data_url(image: np.ndarray, max_bytes: int | None = None) -> str | None:
    """``image`` as a PNG data URL; None when the PNG is over ``max_bytes``."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise FetalDetectError("cannot encode the frame as PNG", status=500)
    if max_bytes is not None and buf.nbytes > max_bytes:
        return None
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def json_safe(obj):
    """numpy scalars -> Python, NaN/inf -> None, Paths -> str (browsers reject NaN in JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def loaded_models(analyzer) -> dict:
    """Model info of the models an analyzer has loaded (for answers where it raised before reporting)."""
    return {k: model_info(k, m) for k, m in (getattr(analyzer, "_measurers", None) or {}).items() if m is not None}


def model_info(name: str, model) -> dict:
    """``{task, weights, backend, version}`` of a measurer (its ``model_info``) or a bare predictor."""
    info = getattr(model, "model_info", None)
    if isinstance(info, dict):
        return info
    task = getattr(getattr(model, "task", None), "name", name)
    return {"task": task, "weights": str(getattr(model, "weights", "")), "backend": getattr(model, "backend", None),
            "version": __version__}


def _public_model(info: dict) -> dict:
    """Model info without server paths: weights relative to the weights folder (or the file name)."""
    return public_paths(dict(info or {}))
