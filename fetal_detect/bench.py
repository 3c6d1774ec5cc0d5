"""Benchmark the measuring pipeline and the model alone across back-ends, in one run, on this machine.

``bench(task, formats)`` times, for every format (``torch``, ``onnx``, ``onnx-int8``, ``openvino``,
``torchscript``, ``engine``):

- ``pipeline``: encoded image bytes -> decode -> preprocess -> model -> postprocess -> measurement
  (ellipse + HC for ``hc-seg``), one image at a time, exactly as ``measure`` / the service run it;
- ``model``: the network alone on an already preprocessed input;
- ``pipeline_batch`` / ``model_batch``: the same with ``batch`` images per call.

Formats are interleaved image by image so that a busy machine slows them alike. Each entry reports
p50/p95 latency (ms per call) and images/s. Exports are made on the fly from the ``.pt`` (cached in
``runs/bench/<task>/``); a back-end that is not installed is reported as skipped with the reason.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from fetal_detect import settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime import resolve_weights
from fetal_detect.tasks import Task, get_task

log = logging.getLogger(__name__)
FORMATS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "torchscript", "engine")


def machine_info(threads: int) -> dict:
    """CPU model, cores, threads used and load, so that numbers can be compared honestly."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        info["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    from fetal_detect.settings import package_versions

    info.update(package_versions("onnxruntime", "torch", "ultralytics", "openvino"))
    return info


def stats(ms: list[float], batch: int = 1) -> dict:
    """p50/p95 of per-call latency (ms) and throughput (images/s) over the calls."""
    a = np.asarray(ms, float)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "images_per_s": round(1000.0 * batch / float(a.mean()), 1), "batch": batch, "calls": len(a)}


def bench_images(t: Task, data: str | None, n: int, out: Path) -> list[tuple[bytes, float | None]]:
    """``n`` encoded validation images (cycled) with their pixel size (mm), or None where unknown."""
    if t.measure == "hc":
        from fetal_detect.evaluate.hc_seg import items_for

        items, _, _ = items_for(data or t.data, "val", out)
        pool = [(it.image_path.read_bytes(), it.pixel_size_mm) for it in items[:n]]
    else:
        from fetal_detect.data import registry
        from fetal_detect.export import calibration_images

        prepared = registry.prepare(data or t.data, t.kind)
        pool = [(p.read_bytes(), None) for p in calibration_images(prepared, n, split="val")]
    if not pool:
        raise FetalDetectError(f"no validation images to benchmark {t.name} on")
    return [pool[i % len(pool)] for i in range(n)]


class Runner:
    """One back-end: ``pipeline(items)`` (bytes -> measurement) and ``model(blob)`` (network only)."""

    def __init__(self, t: Task, fmt: str, predictor):
        self.t, self.fmt, self.predictor = t, fmt, predictor
        self.measurer = None
        if t.measure == "hc":
            from fetal_detect.pipeline.hc import HCMeasurer

            self.measurer = HCMeasurer(predictor=predictor)

    def pipeline(self, items: list[tuple[bytes, float | None]]) -> int:
        """Decode, predict and measure a batch of encoded images; returns how many gave no result."""
        from fetal_detect.io import load_image

        images = [load_image(b, name="bench").image for b, _ in items]
        preds = self.predictor.predict_batch(images)
        if self.measurer is None:
            return 0
        # as HCMeasurer.__call__: the image for the scan-sector cuts, the mirrored pass when the model's TTA is on
        mirrored = (self.predictor.predict_batch([np.ascontiguousarray(im[:, ::-1]) for im in images])
                    if self.measurer.tta else [None] * len(images))
        failed = 0
        for (_, px), im, pred, mir in zip(items, images, preds, mirrored):
            try:
                self.measurer.from_prediction(pred, px, im.shape[:2], im, mir)
            except FetalDetectError:
                failed += 1
        return failed

    def blob(self, images: list[np.ndarray]) -> np.ndarray:
        from fetal_detect.runtime.onnx_predictor import preprocess_classify, preprocess_detect

        p = self.predictor
        if self.t.kind == "classify":
            return preprocess_classify(images, p.imgsz)
        return preprocess_detect(images, p.imgsz, rect=getattr(p, "dynamic", True))[0]

    def model(self, blob: np.ndarray) -> None:
        if hasattr(self.predictor, "run"):  # onnxruntime
            self.predictor.run(blob)
            return
        import torch

        backend = self.predictor.model.predictor.model  # Ultralytics AutoBackend, fused, set up by a first predict
        with torch.inference_mode():
            x = torch.from_numpy(blob)
            backend(x.half() if getattr(backend, "fp16", False) else x)


def _model_for(t: Task, fmt: str, src: Path, out: Path, calib_n: int, data: str | None, imgsz: int | None = None):
    """A predictor for ``fmt`` at input size ``imgsz`` (default: the model's), exported from ``src`` when needed
    (at that size: INT8 calibrates on what it will see); a missing back-end raises (-> skipped)."""
    from fetal_detect.export import ensure_export, exported_predictor

    if fmt == "torch":
        from fetal_detect.runtime import TorchPredictor

        return TorchPredictor(t, src, imgsz=imgsz)
    base, int8 = fmt.removesuffix("-int8"), fmt.endswith("-int8")
    missing = [m for m in ("openvino", "nncf")[:1 + int8] if base == "openvino" and importlib.util.find_spec(m) is None]
    if missing:
        raise FetalDetectError(f"{' and '.join(missing)} not installed (optional extra: pip install 'fetal-detect[openvino]')")
    folder = out / str(imgsz) if imgsz else out
    return exported_predictor(t, ensure_export(t, base, src, folder, int8=int8, calib_n=calib_n, data=data, imgsz=imgsz))


def bench(task: str | Task = "hc-seg", formats: tuple[str, ...] | list[str] = ("torch", "onnx", "onnx-int8"),
          n: int = 200, batch: int = 8, weights: str | Path | None = None, data: str | None = None,
          threads: int | None = None, warmup: int = 3, calib_n: int = 64, out: str | Path | None = None,
          imgsz: list[int] | None = None, accuracy: bool = False, stages: bool = False) -> dict:
    """Time every format on ``n`` validation images of ``task``; returns the JSON-ready result.

    ``imgsz``: input sizes to time each format at (keys ``<format>@<size>`` when more than one is given);
    ``accuracy``: also score every entry on the val split (HC MAE, Dice; hc-seg); ``stages``: split the
    fastest ONNX-family entry's pipeline into stages (:mod:`fetal_detect.bench_stages`).
    """
    t = get_task(task) if isinstance(task, str) else task
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise FetalDetectError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if n < 1 or batch < 1:
        raise FetalDetectError("--n and --batch must be >= 1")
    if any(s < 32 or s % 32 for s in imgsz or []):
        raise FetalDetectError("--imgsz sizes must be multiples of 32, at least 32")
    threads = int(threads or os.cpu_count() or 1)
    os.environ["FETAL_DETECT_THREADS"] = str(threads)  # onnxruntime sessions pick this up
    src = resolve_weights(t, weights)
    if src.suffix != ".pt":
        raise FetalDetectError(f"{src}: the benchmark starts from the PyTorch .pt (it exports the other formats)")
    out = Path(out or settings.RUNS_DIR / "bench" / t.name)
    out.mkdir(parents=True, exist_ok=True)
    if "torch" in formats or any(f not in ("onnx", "onnx-int8") for f in formats):
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    items = bench_images(t, data, n, out)
    results: dict = {}
    runners: dict[str, Runner] = {}
    sizes = list(imgsz or [None])
    for size in sizes:
        for fmt in formats:
            key = fmt if len(sizes) == 1 else f"{fmt}@{size}"
            try:
                runners[key] = Runner(t, fmt, _model_for(t, fmt, src, out, calib_n, data, size))
                pred = runners[key].predictor
                parity = (getattr(pred, "meta", None) or {}).get("metrics") or {}
                results[key] = {"weights": str(pred.weights), "backend": pred.backend,
                                "verified": parity.get("passed") if fmt != "torch" else None}
            except (FetalDetectError, ImportError) as e:
                results[key] = {"skipped": str(e)}
                log.warning("bench: %s skipped: %s", key, e)

    timings = {f: {k: [] for k in ("pipeline", "model", "pipeline_batch", "model_batch")} for f in runners}
    failed = dict.fromkeys(runners, 0)
    from tqdm import tqdm

    from fetal_detect.io import load_image

    decoded = [load_image(b, name="bench").image for b, _ in items]
    warm = list(range(min(batch, n)))
    for r in runners.values():  # warm-up: first calls build kernels and caches (OpenVINO compiles per input shape)
        for i in range(min(warmup, n)):
            r.pipeline([items[i]])
            r.model(r.blob([decoded[i]]))
        r.pipeline([items[i] for i in warm])
        r.model(r.blob([decoded[i] for i in warm]))
    for i in tqdm(range(n), desc=f"bench {t.name} single", unit="img", disable=n < 20):
        for fmt, r in runners.items():
            t0 = time.perf_counter()
            failed[fmt] += r.pipeline([items[i]])
            timings[fmt]["pipeline"].append((time.perf_counter() - t0) * 1000)
            blob = r.blob([decoded[i]])
            t0 = time.perf_counter()
            r.model(blob)
            timings[fmt]["model"].append((time.perf_counter() - t0) * 1000)
    chunks = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    chunks = [c for c in chunks if len(c) == batch] or chunks[:1]
    for c in tqdm(chunks, desc=f"bench {t.name} batch {batch}", unit="batch", disable=n < 20):
        for fmt, r in runners.items():
            t0 = time.perf_counter()
            r.pipeline([items[i] for i in c])
            timings[fmt]["pipeline_batch"].append((time.perf_counter() - t0) * 1000)
            blob = r.blob([decoded[i] for i in c])
            t0 = time.perf_counter()
            r.model(blob)
            timings[fmt]["model_batch"].append((time.perf_counter() - t0) * 1000)

    for fmt, tm in timings.items():
        bs = len(chunks[0])
        results[fmt].update(pipeline=stats(tm["pipeline"]), model=stats(tm["model"]),
                            pipeline_batch=stats(tm["pipeline_batch"], bs), model_batch=stats(tm["model_batch"], bs),
                            imgsz=runners[fmt].predictor.imgsz, no_result=failed[fmt])
    res = {"task": t.name, "source_weights": str(src), "n_images": n, "batch": batch, "machine": machine_info(threads),
           "results": results}
    default = _default_imgsz(t, src)
    ref_key = next((k for k, r in runners.items() if r.fmt == "torch" and r.predictor.imgsz == default),
                   next((k for k, r in runners.items() if r.fmt == "torch"), None))
    if accuracy and t.measure == "hc":
        from fetal_detect.bench_tradeoff import accuracy_summary, val_accuracy
        from fetal_detect.evaluate.hc_seg import items_for

        val, _, _ = items_for(data or t.data, "val", out)
        for key, r in tqdm(runners.items(), desc=f"accuracy {t.name} val", unit="model"):
            results[key]["accuracy"] = val_accuracy(t, r.predictor, val)
        res["accuracy_summary"] = accuracy_summary(results, ref_key)
    res["summary"] = _summary(t, results, ref_key, res.get("accuracy_summary"))
    if stages and t.measure == "hc":
        from fetal_detect.bench_stages import splittable, stage_times

        fast = [k for k in sorted(runners, key=lambda k: results[k]["pipeline"]["p50_ms"]) if splittable(runners[k].predictor)]
        if fast:
            res["stages"] = {"entry": fast[0], **stage_times(runners[fast[0]].predictor, items)}
    return res


def _default_imgsz(t: Task, src: Path) -> int:
    from fetal_detect.runtime import read_sidecar

    return int(read_sidecar(src).get("imgsz") or t.imgsz)


def _summary(t: Task, results: dict, ref_key: str | None, acc: dict | None = None) -> dict:
    """Speed-up of each entry over torch at the model's own size (pipeline p50) and, for hc-seg, whether the
    fastest export (the fastest within the HC MAE budget when ``acc`` was measured) meets the edge targets."""
    ref = results.get(ref_key or "", {}).get("pipeline", {}).get("p50_ms")
    out = {"reference": ref_key,
           "pipeline_speedup_vs_torch": {f: round(ref / r["pipeline"]["p50_ms"], 2)
                                         for f, r in results.items() if ref and "pipeline" in r}}
    cands = [k for k, r in results.items() if "pipeline" in r and r.get("backend") != "torch"
             and (acc is None or k in acc["within_budget"])]
    if acc is None and any(results[k].get("verified") for k in cands):  # exports that passed `export --verify`
        cands = [k for k in cands if results[k].get("verified")]
    if t.measure == "hc" and cands:
        best = min(cands, key=lambda k: results[k]["pipeline"]["p50_ms"])
        p50 = results[best]["pipeline"]["p50_ms"]
        out.update(fastest=best, fastest_p50_ms=p50, target_p50_le_25ms=p50 <= 25.0)
        if ref:
            out["target_3x_torch"] = ref / p50 >= 3.0
        if acc is not None:
            out["fastest_hc_mae_change_mm"] = acc["hc_mae_change_mm"].get(best)
    return out
