"""Reading images and DICOM safely: size limits, content sniffing, pixel-size calibration (mm/px).

``load_image(path_or_bytes)`` returns a :class:`LoadedImage` with grey uint8 frames and the pixel
size in mm when the file carries one (DICOM ``PixelSpacing`` or the ultrasound region calibration
``SequenceOfUltrasoundRegions`` / ``PhysicalDeltaX/Y`` in cm). Every failure is a one-line
:class:`FetalDetectError` with an HTTP status (400 corrupt, 413 too large, 415 unsupported).
Patient-identifying DICOM tags are never copied out of this module.
"""
from __future__ import annotations

import io as _io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetal_detect.errors import FetalDetectError

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # per frame; larger is treated as a decompression bomb
MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff"}


@dataclass
class LoadedImage:
    """Grey frames (H x W uint8), one for a still image, several for a cine loop."""

    frames: list[np.ndarray]
    pixel_size_mm: float | None = None
    pixel_size_source: str | None = None
    format: str = ""
    name: str = ""
    info: dict = field(default_factory=dict)  # non-identifying facts only (modality, frame count)

    @property
    def image(self) -> np.ndarray:
        return self.frames[0]


def parse_pixel_size_mm(value, what: str = "pixel size") -> float | None:
    """A user-given pixel size -> mm per pixel; None or blank -> None (no calibration).

    Anything that is not a finite number > 0 is a :class:`FetalDetectError` naming ``what``.
    """
    if value is None or str(value).strip() == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FetalDetectError(f"{what} must be a number of mm, got '{str(value)[:40]}'") from None
    if not (v > 0 and math.isfinite(v)):
        raise FetalDetectError(f"{what} must be > 0 mm, got {value}")
    return v


def sniff_format(head: bytes) -> str | None:
    """Format from the first bytes (never from the extension): png, jpeg, bmp, tiff or dicom."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, fmt in MAGIC.items():
        if head.startswith(magic):
            return fmt
    return None


def load_image(src: str | Path | bytes, name: str | None = None, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode an image or DICOM file (path or bytes) into grey frames, with limits checked first."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        name = name or path.name
        if not path.exists():
            raise FetalDetectError(f"{name}: file not found", status=404)
        if path.is_dir():
            raise FetalDetectError(f"{name}: is a folder, not an image")
        size = path.stat().st_size
        if size > max_bytes:
            raise FetalDetectError(f"{name}: file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit", status=413)
        data = path.read_bytes()
    else:
        data, name = bytes(src), name or "upload"
        if len(data) > max_bytes:
            raise FetalDetectError(f"{name}: upload is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit", status=413)
    if not data:
        raise FetalDetectError(f"{name}: file is empty")
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise FetalDetectError(f"{name}: not a supported image (PNG, JPEG, BMP, TIFF or DICOM)", status=415)
    if fmt == "dicom":
        return _load_dicom(data, name, max_pixels)
    return _load_raster(data, fmt, name, max_pixels)


def _check_pixels(w: int, h: int, name: str, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise FetalDetectError(f"{name}: image has no pixels")
    if w * h > max_pixels:
        raise FetalDetectError(f"{name}: {w}x{h} px is over the {max_pixels:,} pixel limit", status=413)


def _load_raster(data: bytes, fmt: str, name: str, max_pixels: int) -> LoadedImage:
    import cv2
    from PIL import Image

    try:  # read the header only, so a decompression bomb is refused before it is decoded
        with Image.open(_io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise FetalDetectError(f"{name}: image is over Pillow's decompression-bomb pixel limit", status=413) from None
    except Exception:
        raise FetalDetectError(f"{name}: corrupt {fmt.upper()} file (header unreadable)") from None
    _check_pixels(w, h, name, max_pixels)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise FetalDetectError(f"{name}: corrupt {fmt.upper()} file (cannot decode)")
    return LoadedImage([to_grey_u8(arr)], format=fmt, name=name)


def to_grey_u8(arr: np.ndarray) -> np.ndarray:
    """Any decoded array (grey, BGR, BGRA, 16-bit) -> grey uint8."""
    import cv2

    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        arr = ((a - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros(a.shape, np.uint8)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY if arr.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return arr


def dicom_pixel_size_mm(ds) -> tuple[float | None, str | None]:
    """Pixel size (mm) from a DICOM dataset: PixelSpacing, ImagerPixelSpacing, or the US region calibration."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        v = getattr(ds, tag, None)
        if v is not None and len(v) >= 2:
            try:
                r, c = float(v[0]), float(v[1])
            except (TypeError, ValueError):
                continue
            if r > 0 and c > 0:
                return (r + c) / 2, tag
    for region in getattr(ds, "SequenceOfUltrasoundRegions", None) or []:
        units_x = getattr(region, "PhysicalUnitsXDirection", None)
        dx, dy = getattr(region, "PhysicalDeltaX", None), getattr(region, "PhysicalDeltaY", None)
        if dx and dy and units_x in (3, None):  # 3 = cm
            dx, dy = abs(float(dx)) * 10, abs(float(dy)) * 10
            if dx > 0 and dy > 0:
                return (dx + dy) / 2, "SequenceOfUltrasoundRegions.PhysicalDeltaX/Y"
    return None, None


def _load_dicom(data: bytes, name: str, max_pixels: int) -> LoadedImage:
    import pydicom

    try:
        ds = pydicom.dcmread(_io.BytesIO(data), force=False)
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except Exception as e:
        raise FetalDetectError(f"{name}: corrupt DICOM ({type(e).__name__})") from None
    _check_pixels(cols, rows, name, max_pixels)
    if rows * cols * n_frames > 4 * max_pixels:  # a compressed cine can be a decompression bomb too
        raise FetalDetectError(f"{name}: {n_frames} frames of {cols}x{rows} px are over the cine limit of "
                               f"{4 * max_pixels:,} pixels", status=413)
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise FetalDetectError(f"{name}: DICOM pixel data cannot be decoded ({type(e).__name__})", status=415) from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    if n_frames > 1:
        frames = [to_grey_u8(_rgb_to_bgr(f)) for f in arr]
    else:
        frames = [to_grey_u8(_rgb_to_bgr(arr))]
    if photometric == "MONOCHROME1":
        frames = [255 - f for f in frames]
    px, how = dicom_pixel_size_mm(ds)
    info = {"modality": str(getattr(ds, "Modality", "")), "frames": len(frames)}
    return LoadedImage(frames, px, how, "dicom", name, info)


def _rgb_to_bgr(a: np.ndarray) -> np.ndarray:
    return a[..., ::-1] if a.ndim == 3 and a.shape[-1] == 3 else a
