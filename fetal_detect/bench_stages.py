"""Where the time of one HC measurement goes, stage by stage, for an ONNX-family back-end.

``stage_times(predictor, items)`` runs the pipeline that ``bench`` times as a whole, cut at its
seams, on the same encoded images: ``decode`` (bytes -> grey frame, :func:`fetal_detect.io.load_image`),
``letterbox`` (training preprocess steps, letterbox, blob), ``network`` (the model alone),
``mask_decode`` (NMS, boxes, mask protos -> full-size mask), ``ellipse_fit`` (mask -> ellipse ->
HC/BPD/OFD, :func:`fetal_detect.measure.hc.measure_hc` via ``HCMeasurer.from_prediction``) and
``report`` (the JSON the CLI/API answer with). Each stage's p50/p95 in ms; ``sum_p50_ms`` is their sum.
Torch is not split (Ultralytics runs its stages inside one call); the mirrored TTA pass is left out.
"""
from __future__ import annotations

import json
import time

import numpy as np

STAGES = ("decode", "letterbox", "network", "mask_decode", "ellipse_fit", "report")


def splittable(predictor) -> bool:
    """True for the back-ends whose stages are separate calls (onnxruntime, OpenVINO)."""
    return all(hasattr(predictor, a) for a in ("run", "decode", "preprocess", "stride"))


def stage_times(predictor, items: list[tuple[bytes, float | None]], warmup: int = 3) -> dict:
    """Per-stage p50/p95 (ms) of the HC pipeline on ``items`` (encoded image, pixel size mm), one image per call."""
    from fetal_detect.errors import FetalDetectError
    from fetal_detect.io import load_image
    from fetal_detect.pipeline import public
    from fetal_detect.pipeline.hc import HCMeasurer
    from fetal_detect.preprocess import apply
    from fetal_detect.report import _json_default
    from fetal_detect.runtime.onnx_predictor import preprocess_detect

    measurer = HCMeasurer(predictor=predictor)
    ms: dict[str, list[float]] = {s: [] for s in STAGES}
    for i, (data, px) in enumerate([*items[:warmup], *items]):
        clock = [time.perf_counter()]

        def lap():
            clock.append(time.perf_counter())

        image = load_image(data, name="bench").image
        lap()
        blob, boxes = preprocess_detect([apply(image, predictor.preprocess)], predictor.imgsz,
                                        rect=predictor.dynamic, stride=predictor.stride)
        lap()
        outs = predictor.run(blob)
        lap()
        pred = predictor.decode(outs[0][0], outs[1][0] if len(outs) > 1 else None, boxes[0])
        lap()
        try:
            res = measurer.from_prediction(pred, px, image.shape[:2], image)
        except FetalDetectError as e:
            res = {"status": e.status, "error": str(e)}
        lap()
        json.dumps(public(res), default=_json_default)
        lap()
        if i >= warmup:
            for s, a, b in zip(STAGES, clock, clock[1:]):
                ms[s].append((b - a) * 1000)
    out = {s: {"p50_ms": round(float(np.percentile(v, 50)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2)}
           for s, v in ms.items()}
    out["sum_p50_ms"] = round(sum(v["p50_ms"] for v in out.values()), 2)
    return out
