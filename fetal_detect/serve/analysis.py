"""What the service does with one upload: bytes -> frames -> ``Analyzer`` -> the one result schema as JSON.

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

from fetal_detect.errors import FetalDetectError
from fetal_detect.io import load_image
from fetal_detect.pipeline.analyze import call_options

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
    frame (client gone or deadline passed: the analysis stops there). ``strict_plane``: an NT on a doubtful plane
    is refused instead of flagged. The response is
    :meth:`fetal_detect.result.Result.to_dict` plus ``image``, ``image_quality`` (and ``frames``, ``frame_png``,
    ``overlay_png``): the same object the CLI prints and the batch table rows, with server paths reduced.
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
    best, frames = None, []
    for i, frame in enumerate(loaded.frames):
        if check:
            check()
        quality = image_quality(frame)
        result = analyzer.analyze(frame, task=task, calibration=cal,
                                  options=call_options(strict_plane))
        ok = result.status == "ok"
        conf = result.quality
        score = quality["score"] * (1.0 if conf is None else float(conf)) if ok else 0.0
        frames.append({"index": i, "status": result.status, "image_quality": quality["score"],
                       "quality": conf, "frame_score": round(score, 4)})
        key = (ok, score, quality["score"])
        if best is None or key > best[0]:
            best = (key, i, result, quality)
    _, index, result, quality = best
    frame = loaded.frames[index]
    h, w = frame.shape[:2]
    result.extra.update(image_quality=quality, image={"width": w, "height": h, "format": loaded.format,
                                                      "frames": len(loaded.frames), "frame_index": index})
    if len(frames) > 1:
        result.extra["frames"] = frames
    result.processing_ms = round((time.perf_counter() - t0) * 1000, 1)
    resp = public_paths(result.to_dict())
    if include_image:
        _inline(resp, "frame_png", frame)
    if overlay:
        from fetal_detect.report import draw_overlay

        _inline(resp, "overlay_png", draw_overlay(frame, result.overlay, result.measurements, result.units))
    return resp, frame


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


def png_data_url(image: np.ndarray, max_bytes: int | None = None) -> str | None:
    """``image`` as a PNG data URL; None when the PNG is over ``max_bytes``."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise FetalDetectError("cannot encode the frame as PNG", status=500)
    if max_bytes is not None and buf.nbytes > max_bytes:
        return None
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
