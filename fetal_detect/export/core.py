"""Export a trained model (ONNX, TensorRT, OpenVINO, TorchScript) with its sidecar; see the package doc."""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

from fetal_detect import __version__, settings
from fetal_detect.errors import FetalDetectError
from fetal_detect.export.int8 import DEFAULT_EXCLUDE, EXCLUDE, quantize_onnx
from fetal_detect.export.parity import parity
from fetal_detect.runtime import read_sidecar, resolve_weights
from fetal_detect.tasks import Task, get_task

FORMATS = ("onnx", "engine", "openvino", "torchscript")
SUFFIX = {"onnx": ".onnx", "engine": ".engine", "openvino": "_openvino_model", "torchscript": ".torchscript"}
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
        from fetal_detect.export.openvino import ir_path, to_openvino

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
    same_size = kw.get("imgsz") is None or meta.get("imgsz") == kw["imgsz"]
    if path.exists() and meta.get("source_sha256") == file_sha256(Path(weights)) and same_quant and same_size:
        return path
    return Path(export(t, fmt, weights=weights, int8=int8, out=out, **kw)["path"])


def export_path(t: Task, fmt: str, int8: bool, out: str | Path) -> Path:
    """Where ``export`` writes the model (the ``.xml`` inside the folder for OpenVINO)."""
    stem = f"{t.name}{'-int8' if int8 else ''}"
    if fmt == "openvino":
        from fetal_detect.export.openvino import ir_path

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
