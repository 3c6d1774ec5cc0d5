"""Torch-free YOLOv8 runtime on onnxruntime: letterbox, NMS, mask protos and class scores in numpy/OpenCV.

:class:`OnnxPredictor` is a :class:`fetal_detect.runtime.base.Predictor` (sidecar, imgsz, preprocessing,
timing and kind check come from the base) and reproduces Ultralytics' ``predict(retina_masks=True)`` step by step:

- preprocess: letterbox to ``imgsz`` (minimum stride-32 rectangle when the model has dynamic axes,
  else the full square), bilinear resize, pad 114, BGR->RGB, /255, NCHW float32;
- detect/segment: best class per anchor, ``conf`` filter, class-aware NMS (``cv2.dnn.NMSBoxes``
  with a per-class offset), boxes mapped back to image px, masks = coefficients @ protos, padding
  cropped, bilinear upsampling to the image, > 0, cropped to the box;
- classify: the model already outputs softmax probabilities (shortest side -> imgsz, centre crop).

Only onnxruntime, OpenCV and numpy are imported here: deployments need no torch or ultralytics.
"""
from __future__ import annotations

import ast
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.runtime.base import Instance, Prediction, Predictor, to_bgr
from fetal_detect.tasks import Task

PAD_VALUE = 114
MAX_WH = 7680  # per-class box offset (px) that makes one NMS call class-aware, as Ultralytics does
MAX_NMS = 30000


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed in the network input: scale ``gain_xy`` and top-left padding ``pad_xy`` (px)."""

    shape_hw: tuple[int, int]  # original image
    input_hw: tuple[int, int]  # network input
    gain_xy: tuple[float, float]
    pad_xy: tuple[int, int]


def letterbox_shape(shape_hw: tuple[int, int], imgsz: int, rect: bool, stride: int = 32) -> tuple[int, int]:
    """Network input (h, w) for an image: ``imgsz`` square, or the smallest stride multiple (``rect``)."""
    h, w = shape_hw
    r = min(imgsz / h, imgsz / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if not rect:
        return imgsz, imgsz
    return new_h + (imgsz - new_h) % stride, new_w + (imgsz - new_w) % stride


def letterbox(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad (centred, value 114) to ``input_hw``, exactly as Ultralytics."""
    h, w = image.shape[:2]
    r = min(input_hw[0] / h, input_hw[1] / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (input_hw[1] - new_w) / 2, (input_hw[0] - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, Letterbox((h, w), input_hw, (new_w / w, new_h / h), (left, top))


def to_blob(images: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 images of one size -> RGB float32 NCHW in [0, 1] (one vectorised OpenCV call)."""
    return cv2.dnn.blobFromImages(images, scalefactor=1 / 255.0, swapRB=True, crop=False, ddepth=cv2.CV_32F)


def preprocess_detect(images: list[np.ndarray], imgsz: int, rect: bool, stride: int = 32
                      ) -> tuple[np.ndarray, list[Letterbox]]:
    """Letterbox a batch; ``rect`` (dynamic models) only when every image has the same shape, like Ultralytics."""
    same = len({im.shape[:2] for im in images}) == 1
    input_hw = letterbox_shape(images[0].shape[:2], imgsz, rect and same, stride)
    boxed = [letterbox(im, input_hw) for im in images]  # grey stays grey until it is small: 3x less resizing
    return to_blob([to_bgr(b) for b, _ in boxed]), [lb for _, lb in boxed]


def preprocess_classify(images: list[np.ndarray], imgsz: int) -> np.ndarray:
    """Shortest side -> ``imgsz`` (area/bilinear), centre crop ``imgsz`` square, RGB, /255 (Ultralytics classify)."""
    out = []
    for im in map(to_bgr, images):
        h, w = im.shape[:2]
        r = imgsz / min(h, w)
        nh, nw = max(round(h * r), imgsz), max(round(w * r), imgsz)
        im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
        top, left = int(round((nh - imgsz) / 2.0)), int(round((nw - imgsz) / 2.0))
        out.append(im[top:top + imgsz, left:left + imgsz])
    return to_blob(out)


def nms(pred: np.ndarray, nc: int, conf: float, iou: float, max_det: int = 300) -> np.ndarray:
    """One image's raw head output ``(4 + nc + extra, anchors)`` -> rows ``x1 y1 x2 y2 conf cls extra...``.

    Best class per anchor, ``conf`` filter, class-aware NMS (``cv2.dnn.NMSBoxes`` on boxes offset by
    class * 7680 px), highest scores first, at most ``max_det`` rows. Boxes in network-input px.
    """
    scores = pred[4:4 + nc]
    cls = scores.argmax(0)
    score = scores[cls, np.arange(scores.shape[1])] if nc > 1 else scores[0]
    keep = score > conf
    if not keep.any():
        return np.zeros((0, pred.shape[0] + 2 - nc), np.float32)
    x = pred[:, keep].T
    score, cls = score[keep], cls[keep].astype(np.float32)
    if len(x) > MAX_NMS:
        top = np.argsort(-score, kind="stable")[:MAX_NMS]
        x, score, cls = x[top], score[top], cls[top]
    xy, wh = x[:, :2], x[:, 2:4]
    xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    offset = xyxy[:, :2] + cls[:, None] * MAX_WH
    rects = np.concatenate([offset, wh], 1).astype(np.float64)
    idx = np.asarray(cv2.dnn.NMSBoxes(rects.tolist(), score.astype(float).tolist(), float(conf), float(iou)),
                     dtype=int).reshape(-1)[:max_det]
    return np.concatenate([xyxy[idx], score[idx, None], cls[idx, None], x[idx, 4 + nc:]], 1).astype(np.float32)


def scale_boxes(xyxy: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Network-input px -> original image px, clipped to the image."""
    out = xyxy.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad_xy[0]) / lb.gain_xy[0]
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad_xy[1]) / lb.gain_xy[1]
    h, w = lb.shape_hw
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def _resize_stack(masks: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (n, h, w) float stack in one OpenCV call per 512 channels."""
    out = [cv2.resize(np.ascontiguousarray(masks[i:i + 512].transpose(1, 2, 0)), size_wh, interpolation=cv2.INTER_LINEAR)
           .reshape(size_wh[1], size_wh[0], -1).transpose(2, 0, 1) for i in range(0, len(masks), 512)]
    return np.concatenate(out, 0)


def masks_native(protos: np.ndarray, coeffs: np.ndarray, boxes: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Full-resolution instance masks (n, H, W) bool: protos (32, mh, mw), coefficients (n, 32), boxes in image px.

    Same steps as Ultralytics ``process_mask_native``: logits at proto resolution, upsampled 1/2/4x so
    the letterbox padding falls on whole pixels, padding cropped, bilinear to the image, > 0, box crop.
    """
    c, mh, mw = protos.shape
    h, w = shape_hw
    if len(coeffs) == 0:
        return np.zeros((0, h, w), bool)
    logits = (coeffs @ protos.reshape(c, -1)).reshape(-1, mh, mw).astype(np.float32)
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    if f > 1:
        logits = _resize_stack(logits, (mw * f, mh * f))
    ih, iw = logits.shape[1:]
    g = min(ih / h, iw / w)
    pad_w, pad_h = (iw - max(round(w * g), 1)) / 2, (ih - max(round(h * g), 1)) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = top + max(round(h * g), 1), left + max(round(w * g), 1)
    masks = _resize_stack(logits[:, top:bottom, left:right], (w, h)) > 0
    cols, rows = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    masks &= ((cols >= x1) & (cols < x2))[:, None, :]
    masks &= ((rows >= y1) & (rows < y2))[:, :, None]
    return masks


def _onnx_metadata(session) -> dict:
    """Ultralytics writes stride, imgsz, names, task into the ONNX metadata as Python literals."""
    meta = {}
    for k, v in session.get_modelmeta().custom_metadata_map.items():
        try:
            meta[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            meta[k] = v
    return meta


def default_threads() -> int:
    """onnxruntime intra-op threads: ``$FETAL_DETECT_THREADS`` or every CPU core."""
    return int(os.environ.get("FETAL_DETECT_THREADS") or os.cpu_count() or 1)


def make_session(weights: Path, threads: int | None = None, providers: list[str] | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if os.environ.get("FETAL_DETECT_ORT_SPIN", "0") != "1":  # spinning workers starve on a shared CPU
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    avail = ort.get_available_providers()
    providers = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in avail]
    try:
        return ort.InferenceSession(str(weights), opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # corrupt file, not an ONNX model, unsupported opset
        raise FetalDetectError(f"{weights}: cannot load ONNX model ({type(e).__name__}: {str(e).splitlines()[0]})") from None


class OnnxPredictor(Predictor):
    """YOLOv8 detect / segment / classify exported to ONNX, run with onnxruntime (no torch)."""

    backend = "onnx"

    def __init__(self, task: Task, weights: str | Path, conf: float = 0.25, iou: float = 0.7,
                 imgsz: int | None = None, threads: int | None = None, providers: list[str] | None = None,
                 max_det: int = 300):
        self.iou, self.max_det = iou, max_det
        super().__init__(task, weights, conf, imgsz, threads=threads, providers=providers)

    def _load(self, threads: int | None = None, providers: list[str] | None = None) -> str | None:
        self.session = make_session(self.weights, threads, providers)
        onnx_meta = _onnx_metadata(self.session)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.dynamic = not all(isinstance(d, int) for d in inp.shape[2:])
        fixed = inp.shape[2] if isinstance(inp.shape[2], int) else None
        self.imgsz = int(self._imgsz_arg or fixed or self.meta.get("imgsz") or _first(onnx_meta.get("imgsz"))
                         or self.task.imgsz)
        self.stride = int(onnx_meta.get("stride", 32))
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        names = self.meta.get("names") or onnx_meta.get("names") or {}
        self.names = list(names.values()) if isinstance(names, dict) else list(names)
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        return onnx_meta.get("task")

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        if self.fixed_batch and len(images) > self.fixed_batch:  # a fixed-batch export: one call per chunk
            return [p for i in range(0, len(images), self.fixed_batch) for p in self.predict_batch(images[i:i + self.fixed_batch])]
        return super().predict_batch(images)

    def _infer(self, images: list[np.ndarray]) -> list[Prediction]:
        if self.kind == "classify":
            outs = self.run(preprocess_classify(images, self.imgsz))
            return [Prediction(probs={n: float(v) for n, v in zip(self.names, p)}) for p in outs[0]]
        blob, boxes = preprocess_detect(images, self.imgsz, rect=self.dynamic, stride=self.stride)
        outs = self.run(blob)
        return [self.decode(outs[0][i], None if len(outs) < 2 else outs[1][i], lb) for i, lb in enumerate(boxes)]

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """The model alone: NCHW float32 in [0, 1] -> raw outputs."""
        return self.session.run(None, {self.input_name: blob.astype(self.input_dtype, copy=False)})

    def decode(self, raw: np.ndarray, protos: np.ndarray | None, lb: Letterbox) -> Prediction:
        """One image's raw outputs -> :class:`Prediction` with boxes (and masks) in original image px."""
        raw = raw.astype(np.float32, copy=False)
        det = nms(raw, len(self.names), self.conf, self.iou, self.max_det)
        xyxy = scale_boxes(det[:, :4], lb)
        masks = None
        if protos is not None:
            masks = masks_native(protos.astype(np.float32, copy=False), det[:, 6:], xyxy, lb.shape_hw)
            keep = masks.any((1, 2))
            det, xyxy, masks = det[keep], xyxy[keep], masks[keep]
        return Prediction(instances=[
            Instance(self.names[int(d[5])], float(d[4]), tuple(map(float, b)), None if masks is None else masks[i])
            for i, (d, b) in enumerate(zip(det, xyxy))])


def _first(v):
    return v[0] if isinstance(v, (list, tuple)) else v

