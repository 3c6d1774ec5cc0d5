"""Export a trained model (ONNX, TensorRT, OpenVINO, TorchScript), quantise ONNX to INT8, check parity.

``export(task, fmt)`` wraps Ultralytics export with the task's dataset (``data=`` is always passed, so
nothing reaches for COCO) and writes ``runs/export/<task>/<task>[-int8|-fp16].<ext>`` plus a JSON
sidecar (task, classes, imgsz, preprocessing, pixel-size handling, source weights hash, HC
calibration, quantisation, parity metrics) that :class:`fetal_detect.runtime.onnx_predictor.OnnxPredictor` reads.

INT8 ONNX: Ultralytics' ONNX export has no INT8, so the FP32 graph is quantised with
``onnxruntime.quantization.quantize_static`` (QDQ, per-channel weights) calibrated on real images of
the task's *training* split (the validation split stays clean for the parity check). The head's last convs, mask
protos and box/mask decode tail stay in float (see :data:`EXCLUDE`).

``verify=True`` scores the exported model and the PyTorch model on the validation split: Dice and
HC MAE through the real HC pipeline for ``hc-seg``, mAP50 for detection/segmentation, top-1 accuracy
for classification. An INT8 (or any) export that loses more than :data:`TOLERANCE` fails.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fetal_detect import __version__, settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime import read_sidecar, resolve_weights
from fetal_detect.tasks import Task, get_task

log = logging.getLogger(__name__)

FORMATS = ("onnx", "engine", "openvino", "torchscript")
SUFFIX = {"onnx": ".onnx", "engine": ".engine", "openvino": "_openvino_model", "torchscript": ".torchscript"}
# Allowed metric change of an export against the PyTorch FP32 model (worse direction only).
TOLERANCE = {"hc_mae_mm": 0.2, "map50": 0.01, "accuracy": 0.01, "dice": 0.01}
# Quantisation exclusion levels for the YOLO head: "decode" keeps the DFL/box decode, class sigmoid and
# concat tail in float; "head" also the last 1x1 conv of every branch and the mask protos.
EXCLUDE = ("none", "decode", "head")
# decode: with the shipped hc-seg it agreed better with FP32 than "head" (HC MAE +0.012 vs +0.028 mm, Dice
# -0.0005 vs -0.0007 on the 120 HC18 val images) and its model ran ~12 % faster: docs/export.md
DEFAULT_EXCLUDE = "decode"
ENGINE_HINT = ("TensorRT engine needs an NVIDIA GPU with CUDA and the tensorrt package (pip install tensorrt); "
               "none found: use --format onnx")


# ---------------------------------------------------------------------------------------------
# checks done before any work


def check_request(t: Task, fmt: str, int8: bool, half: bool) -> None:
    """Refuse an impossible export at once, with what is missing and what to install."""
    if fmt not in FORMATS:
        raise FetalDetectError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if t.kind not in ("detect", "segment", "classify"):
        raise FetalDetectError(f"task {t.name} ({t.kind}) has no exportable YOLO model")
    if int8 and half:
        raise FetalDetectError("choose one of --int8 and --half")
    if fmt == "engine":
        # the package first: without it there is no need to import torch to look for a GPU
        missing = ["the tensorrt package"] if not _has("tensorrt") else [] if settings.cuda_available() else ["a CUDA GPU"]
        if missing:
            raise FetalDetectError(f"{ENGINE_HINT} (missing: {', '.join(missing)})")
    if fmt == "openvino":
        need = ["openvino"] + (["nncf"] if int8 else [])
        missing = [m for m in need if not _has(m)]
        if missing:
            raise FetalDetectError(f"OpenVINO export needs {' and '.join(missing)} (pip install 'fetal-detect[openvino]'"
                                   f"{' nncf' if 'nncf' in missing else ''}); not installed: use --format onnx")
    if half and fmt in ("onnx", "torchscript") and not settings.cuda_available():
        raise FetalDetectError(f"--half {fmt} export needs a CUDA GPU (none found); use --int8 for a smaller CPU model")
    if int8 and fmt == "torchscript":
        raise FetalDetectError("--int8 is available for onnx, engine and openvino, not torchscript")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------------------------------------
# export


def export(task: str | Task, fmt: str = "onnx", weights: str | Path | None = None, imgsz: int | None = None,
           int8: bool = False, half: bool = False, data: str | None = None, verify: bool = False,
           verify_n: int | None = None, calib_n: int = 64, exclude: str = DEFAULT_EXCLUDE, out: str | Path | None = None,
           dynamic: bool = True, simplify: bool = True) -> dict:
    """Export ``weights`` (default ``weights/<task>.pt``) and return the sidecar dict (``path`` = the model)."""
    t = get_task(task) if isinstance(task, str) else task
    check_request(t, fmt, int8, half)
    if exclude not in EXCLUDE:
        raise FetalDetectError(f"--exclude must be one of {', '.join(EXCLUDE)}, got '{exclude}'")
    src = resolve_weights(t, weights)
    if src.suffix != ".pt":
        raise FetalDetectError(f"{src}: export needs the PyTorch .pt checkpoint, got '{src.suffix}'")
    from fetal_detect.data import registry

    src_meta = read_sidecar(src)
    imgsz = int(imgsz or src_meta.get("imgsz") or t.imgsz)
    prepared = registry.prepare(data or t.data, t.kind)
    out_dir = Path(out or settings.RUNS_DIR / "export" / t.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = "int8" if int8 else "fp16" if half else "fp32"
    stem = t.name if precision == "fp32" else f"{t.name}-{precision}"
    t0 = time.perf_counter()

    fp32_work = (fmt == "onnx" and int8) or fmt == "openvino"  # an intermediate FP32 ONNX, never the user's
    work = out_dir / f"{stem}{'.fp32' if fp32_work else ''}.pt"  # Ultralytics exports beside its input
    if src.resolve() != work.resolve():
        shutil.copyfile(src, work)
    quant = None
    if fmt == "openvino":  # from our own dynamic FP32 ONNX: the runtime feeds the letterboxed rectangle
        from fetal_detect.export_openvino import ir_path, to_openvino

        path = ir_path(out_dir, stem)
        fp32, made = _fp32_onnx(out_dir, t, src, work, imgsz, prepared, simplify, dynamic)
        quant = to_openvino(fp32, path, prepared, t, imgsz, int8=int8, n=calib_n, exclude=exclude, meta=src_meta)
        if made:
            fp32.unlink(missing_ok=True)
    elif fmt == "onnx" and int8:
        path = out_dir / f"{stem}.onnx"
        fp32, made = _fp32_onnx(out_dir, t, src, work, imgsz, prepared, simplify, dynamic)
        quant = quantize_onnx(fp32, path, prepared, t, imgsz, n=calib_n, exclude=exclude)
        if made:
            fp32.unlink(missing_ok=True)
    else:
        path = _ultralytics_export(work, t, fmt, imgsz, prepared, int8=int8, half=half,
                                   dynamic=dynamic and fmt == "onnx", simplify=simplify)
        if int8:
            quant = {"method": f"Ultralytics {fmt} INT8", "calibration_data": prepared.manifest["dataset"],
                     "split": "train"}
    work.unlink(missing_ok=True)

    meta = sidecar(t, src, src_meta, fmt, precision, imgsz, path, prepared, dynamic and fmt in ("onnx", "openvino"),
                   quant)
    meta["export_s"] = round(time.perf_counter() - t0, 1)
    sidecar_path = _sidecar_path(path)
    sidecar_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if verify:
        meta["metrics"] = parity(t, src, path, prepared, n=verify_n)
        sidecar_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        if not meta["metrics"]["passed"]:
            raise FetalDetectError(f"export failed the parity check: {meta['metrics']['failures']} "
                                   f"(model kept for inspection: {path})", status=422)
    meta["path"], meta["sidecar"] = str(path), str(sidecar_path)
    return meta


def _reusable_fp32(path: Path, src: Path, imgsz: int, dynamic: bool) -> Path | None:
    """An FP32 ONNX export of the same weights, size and axes already in the output folder, to quantise from."""
    from fetal_detect.data.registry import file_sha256

    meta = read_sidecar(path) if path.is_file() else {}
    ok = (meta.get("precision") == "fp32" and meta.get("imgsz") == imgsz and meta.get("dynamic") == dynamic
          and meta.get("source_sha256") == file_sha256(src))
    return path if ok else None


def _fp32_onnx(out_dir: Path, t: Task, src: Path, work: Path, imgsz: int, prepared, simplify: bool,
               dynamic: bool = True) -> tuple[Path, bool]:
    """The FP32 ONNX to quantise or convert from: a reusable one in ``out_dir``, else a new export (made=True)."""
    fp32 = _reusable_fp32(out_dir / f"{t.name}.onnx", src, imgsz, dynamic)
    if fp32 is not None:
        return fp32, False
    return _ultralytics_export(work, t, "onnx", imgsz, prepared, dynamic=dynamic, simplify=simplify), True


def ensure_export(task: str | Task, fmt: str, weights: str | Path, out: str | Path, int8: bool = False,
                  **kw) -> Path:
    """The export of ``weights`` in ``out``, made only if absent or made from other weights (sha256)."""
    from fetal_detect.data.registry import file_sha256

    t = get_task(task) if isinstance(task, str) else task
    check_request(t, fmt, int8, False)
    path = export_path(t, fmt, int8, out)
    meta = read_sidecar(path) if path.is_file() else {}
    same_quant = not int8 or (meta.get("quantization") or {}).get("excluded") == kw.get("exclude", DEFAULT_EXCLUDE)
    if path.exists() and meta.get("source_sha256") == file_sha256(Path(weights)) and same_quant:
        return path
    return Path(export(t, fmt, weights=weights, int8=int8, out=out, **kw)["path"])


def export_path(t: Task, fmt: str, int8: bool, out: str | Path) -> Path:
    """Where ``export`` writes the model (the ``.xml`` inside the folder for OpenVINO)."""
    stem = f"{t.name}{'-int8' if int8 else ''}"
    if fmt == "openvino":
        from fetal_detect.export_openvino import ir_path

        return ir_path(Path(out), stem)
    return Path(out) / f"{stem}{SUFFIX[fmt]}"


def _sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json") if path.is_file() else path.with_name(path.name + ".json")


def _ultralytics_export(pt: Path, t: Task, fmt: str, imgsz: int, prepared, **kw) -> Path:
    YOLO = settings.import_ultralytics().YOLO
    args = dict(format=fmt, imgsz=imgsz, data=str(prepared.data), device=settings.torch_device(), batch=1)
    if fmt == "onnx":
        args.update(dynamic=kw.get("dynamic", True), simplify=kw.get("simplify", True) and _has("onnxslim"))
    if kw.get("int8"):
        args.update(int8=True, split="train")
    if kw.get("half"):
        args["half"] = True
    try:
        out = YOLO(str(pt), task=t.kind).export(**args)
    except FetalDetectError:
        raise
    except Exception as e:  # Ultralytics raises plain exceptions for unsupported combinations
        raise FetalDetectError(f"{pt.name}: {fmt} export failed ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return Path(out)


def sidecar(t: Task, src: Path, src_meta: dict, fmt: str, precision: str, imgsz: int, path: Path, prepared,
            dynamic: bool, quant: dict | None) -> dict:
    """What a deployment needs to run and trust the exported model, without the .pt beside it."""
    from fetal_detect.data.registry import file_sha256

    if t.kind == "classify":
        pre = {"resize": f"shortest side to {imgsz} px, centre crop {imgsz}x{imgsz}", "color": "BGR->RGB",
               "scale": "1/255", "layout": "NCHW float32"}
    else:
        pre = {"resize": f"letterbox: longest side to {imgsz} px, aspect kept, bilinear", "pad": 114,
               "input": "smallest multiple of 32 around the image (dynamic axes)" if dynamic else f"{imgsz}x{imgsz}",
               "color": "grey->BGR->RGB", "scale": "1/255", "layout": "NCHW float32"}
    keep = {k: v for k, v in src_meta.items() if k not in ("ultralytics_metrics",)}
    return {**keep, "task": t.name, "kind": t.kind, "format": fmt, "precision": precision,
            "names": src_meta.get("names") or prepared.names, "imgsz": imgsz, "dynamic": dynamic,
            "preprocessing": pre,
            "pixel_size_handling": ("the model sees pixels only: masks and boxes come back in original-image px and "
                                    "are converted to mm with pixel_size_mm (DICOM calibration or --pixel-size) after "
                                    "the ellipse fit; the HC calibration line below is applied to HC in mm"),
            "calibration": src_meta.get("calibration"),
            "source_weights": str(src), "source_sha256": file_sha256(src),
            "quantization": quant, "file": path.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "fetal_detect": __version__, "versions": _versions()}


def _versions() -> dict:
    from fetal_detect.settings import package_versions

    return package_versions("ultralytics", "torch", "onnx", "onnxruntime", "openvino", "nncf")


# ---------------------------------------------------------------------------------------------
# INT8


def calibration_images(prepared, n: int, split: str = "train") -> list[Path]:
    """``n`` images spread evenly over one split of a prepared dataset (deterministic)."""
    folder = prepared.root / split if prepared.manifest["kind"] == "classify" else prepared.root / "images" / split
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    if not files:
        raise FetalDetectError(f"dataset '{prepared.manifest['dataset']}' has no {split} images to calibrate INT8 on")
    idx = np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(idx))]


def head_nodes(model, level: str) -> list[str]:
    """Names of the YOLO head nodes kept in float for an exclusion ``level`` (see :data:`EXCLUDE`)."""
    if level == "none":
        return []
    heads = [int(m.group(1)) for n in model.graph.node if (m := re.match(r"/model\.(\d+)/", n.name))]
    if not heads:
        return []
    prefix = f"/model.{max(heads)}/"
    branch = re.compile(r"/(cv2|cv3|cv4)\.\d+/|/proto/")
    last = re.compile(r"/(cv2|cv3|cv4)\.\d+/(cv\d\.\d+\.2|\d+)/")  # the final 1x1 conv of a branch
    out = []
    for n in model.graph.node:
        if not n.name.startswith(prefix):
            continue
        if not branch.search(n.name) or (level == "head" and (last.search(n.name) or "/proto/" in n.name)):
            out.append(n.name)
    return out


@contextlib.contextmanager
def _in_temp_dir():
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="fetal-detect-quant-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(cwd)


def quantize_onnx(fp32: Path, out: Path, prepared, t: Task, imgsz: int, n: int = 64, exclude: str = DEFAULT_EXCLUDE,
                  per_channel: bool = True, method: str = "MinMax") -> dict:
    """Static INT8 (QDQ) quantisation of an ONNX model, calibrated on ``n`` training images of the task's data."""
    import cv2
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from fetal_detect.runtime.onnx_predictor import preprocess_classify, preprocess_detect

    fp32, out = Path(fp32).resolve(), Path(out).resolve()
    files = calibration_images(prepared, n)
    inp = onnx.load(str(fp32), load_external_data=False)
    input_name = inp.graph.input[0].name
    dynamic = not all(d.dim_value for d in inp.graph.input[0].type.tensor_type.shape.dim[2:])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.files = iter(files)

        def get_next(self):
            f = next(self.files, None)
            if f is None:
                return None
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise FetalDetectError(f"{f}: cannot read calibration image")
            blob = (preprocess_classify([img], imgsz) if t.kind == "classify"
                    else preprocess_detect([img], imgsz, rect=dynamic)[0])
            return {input_name: blob}

    nodes = head_nodes(inp, exclude)
    pre = out.with_name(out.stem + ".pre.onnx")
    try:  # shape inference + graph clean-up, recommended before static quantisation
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with _in_temp_dir():
            try:
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
            except Exception:  # noqa: BLE001  dynamic axes defeat symbolic inference: ONNX shape inference only
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        source = pre
    except Exception as e:  # noqa: BLE001  an optional step: quantise the raw graph instead
        log.warning("quant_pre_process skipped (%s)", e)
        source = fp32
    t0 = time.perf_counter()
    with _in_temp_dir():  # onnxruntime's quantiser drops external-data files into the working folder
        quantize_static(str(source.resolve()), str(out.resolve()), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=nodes,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    pre.unlink(missing_ok=True)
    return {"method": f"onnxruntime quantize_static, QDQ, uint8 activations ({method}), int8 weights"
                      + (" per channel" if per_channel else ""),
            "calibration_data": prepared.manifest["dataset"], "split": "train", "n_images": len(files),
            "excluded": exclude, "n_excluded_nodes": len(nodes), "seconds": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------------------------------------
# parity


def exported_predictor(t: Task, path: Path, conf: float = 0.25):
    """A predictor on an exported file: onnxruntime for .onnx, Ultralytics' own back-ends otherwise."""
    from fetal_detect.runtime import TorchPredictor

    if Path(path).suffix == ".onnx":
        from fetal_detect.runtime.onnx_predictor import OnnxPredictor

        return OnnxPredictor(t, path, conf=conf)
    if Path(path).suffix == ".xml":
        from fetal_detect.runtime.openvino_predictor import OpenVinoPredictor

        return OpenVinoPredictor(t, path, conf=conf)
    return TorchPredictor(t, path, conf=conf)


def parity(t: Task, pt: Path, exported: Path, prepared, n: int | None = None) -> dict:
    """The task's metric for the PyTorch model and the export on the validation split, and the change."""
    if t.measure == "hc":
        ref, exp = _hc_parity(t, pt, exported, prepared, n)
    else:
        ref, exp = _ultralytics_metrics(t, pt, prepared), _ultralytics_metrics(t, exported, prepared)
    delta = {k: exp[k] - ref[k] for k in ref if isinstance(ref.get(k), float) and isinstance(exp.get(k), float)}
    failures = []
    for k, tol in TOLERANCE.items():
        if k not in delta:
            continue
        worse = delta[k] if k.endswith("_mm") else -delta[k]  # errors must not grow, scores must not drop
        if worse > tol:
            failures.append(f"{k} {ref[k]:.4g} -> {exp[k]:.4g} (allowed change {tol:g})")
    return {"split": "val", "n_images": ref.get("n_images"), "pytorch": ref, "exported": exp,
            "delta": delta, "tolerance": {k: v for k, v in TOLERANCE.items() if k in delta},
            "passed": not failures, "failures": "; ".join(failures)}


def _hc_parity(t: Task, pt: Path, exported: Path, prepared, n: int | None) -> tuple[dict, dict]:
    """Dice and HC MAE of both models through the HC pipeline, on the val images both measured (paired)."""
    from fetal_detect.evaluate.hc_seg import score, split_items, summarise
    from fetal_detect.pipeline.hc import HCMeasurer

    items = split_items(prepared, "val")
    items = items[:n] if n else items
    rows = {}
    for key, w in (("ref", pt), ("exp", exported)):
        measurer = HCMeasurer(predictor=exported_predictor(t, w))
        rows[key] = score(items, measurer, progress=False)[0]
    both = [i for i, (a, b) in enumerate(zip(rows["ref"], rows["exp"])) if a["status"] == b["status"] == "ok"]
    out = []
    for key in ("ref", "exp"):
        m = summarise([rows[key][i] for i in both])
        out.append({"n_images": len(items), "n_failed": sum(r["status"] != "ok" for r in rows[key]),
                    "n_paired": len(both), **{k: m.get(k) for k in ("dice", "hc_mae_mm", "hc_bias_mm")}})
    diff = [abs(rows["exp"][i]["hc_mm"] - rows["ref"][i]["hc_mm"]) for i in both]
    out[1]["hc_abs_diff_to_pytorch_mm"] = float(np.mean(diff)) if diff else None
    return out[0], out[1]


def _ultralytics_metrics(t: Task, weights: Path, prepared) -> dict:
    """mAP50 (box, or mask for segment) or top-1 accuracy from Ultralytics val on the whole val split."""
    YOLO = settings.import_ultralytics().YOLO
    args = dict(data=str(prepared.data), imgsz=read_sidecar(weights).get("imgsz") or t.imgsz, batch=1, split="val",
                plots=False, verbose=False, device=settings.torch_device(), workers=0,
                project=str((settings.RUNS_DIR / "export" / "val").resolve()), name=Path(weights).stem, exist_ok=True)
    r = YOLO(str(weights), task=t.kind).val(**args)
    if t.kind == "classify":
        return {"accuracy": float(r.top1), "n_images": None}
    box = r.seg if t.kind == "segment" else r.box
    return {"map50": float(box.map50), "map50_95": float(box.map), "n_images": None}
