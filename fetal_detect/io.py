"""Reading images and DICOM safely: size limits, content sniffing, pixel-size calibration (mm/px).

``load_image(path_or_bytes)`` returns a :class:`LoadedImage` with grey uint8 frames and the pixel
size in mm when the file carries one (DICOM ``PixelSpacing`` or the ultrasound region calibration
``SequenceOfUltrasoundRegions`` / ``PhysicalDeltaX/Y`` in cm). Every failure is a one-line
:class:`FetalDetectError` with an HTTP status (400 corrupt, 413 too large, 415 unsupported).
Patient-identifying DICOM tags are never copied out of this module.

Limits (all checked before decoding): ``max_bytes`` of file, ``max_pixels`` per frame (also Pillow's
``MAX_IMAGE_PIXELS``, its warning an error), ``4 x max_pixels`` bytes per decoded frame, ``max_frames``
and ``4 x max_pixels`` pixels per cine; DICOM: see :mod:`fetal_detect.dicom` (transfer-syntax allow-list,
capped inflation, codec headers checked against Rows/Columns). Paths must be regular files (no FIFO,
device or ``/dev/zero`` symlink) and are read at most ``max_bytes + 1`` bytes.
"""
from __future__ import annotations

import hashlib
import io as _io
import math
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fetal_detect.errors import FetalDetectError, short
from fetal_detect.image_headers import check_pixel_limit, png_header

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # per frame; larger is treated as a decompression bomb
MAX_FRAMES = 300  # per cine
MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff"}
PIXEL_SIZE_RANGE_MM = (0.01, 2.0)  # plausible mm per pixel for 2-D ultrasound; outside is a typo or an attack
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


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

    Text must be a plain ASCII decimal (``0.12``; no ``1_0``, exponents or non-ASCII digits) and the value
    within :data:`PIXEL_SIZE_RANGE_MM`; anything else is a :class:`FetalDetectError` naming ``what``.
    """
    if value is None or str(value).strip() == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
    else:
        text = str(value).strip()
        if text.startswith("-") and _DECIMAL.fullmatch(text[1:]):
            raise FetalDetectError(f"{what} must be > 0 mm, got {short(text)}")
        if not _DECIMAL.fullmatch(text):
            raise FetalDetectError(f"{what} must be a number of mm (ASCII decimal like 0.12), got '{short(text)}'")
        v = float(text)
    return check_pixel_size_mm(v, what)


def check_pixel_size_mm(v: float, what: str = "pixel size") -> float:
    """``v`` if it is a plausible pixel size (finite, in :data:`PIXEL_SIZE_RANGE_MM`), else a one-line error."""
    lo, hi = PIXEL_SIZE_RANGE_MM
    if not (v > 0 and math.isfinite(v)):
        raise FetalDetectError(f"{what} must be > 0 mm, got {short(v)}")
    if not lo <= v <= hi:
        raise FetalDetectError(f"{what} must be between {lo:g} and {hi:g} mm per pixel, got {short(v)}")
    return v


def plausible_pixel_size_mm(v) -> bool:
    """True when ``v`` is a finite mm-per-pixel value inside :data:`PIXEL_SIZE_RANGE_MM`."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and PIXEL_SIZE_RANGE_MM[0] <= v <= PIXEL_SIZE_RANGE_MM[1]


def sniff_format(head: bytes) -> str | None:
    """Format from the first bytes (never from the extension): png, jpeg, bmp, tiff or dicom."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, fmt in MAGIC.items():
        if head.startswith(magic):
            return fmt
    return None


def open_regular_file(path: str | Path, name: str | None = None):
    """Open ``path`` for reading only if it is a regular file (after symlinks): a FIFO, a device (e.g. a
    symlink to ``/dev/zero``) or a folder is a one-line error, and opening never blocks."""
    name = name or Path(path).name
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise FetalDetectError(f"{name}: file not found", status=404) from None
    except IsADirectoryError:
        raise FetalDetectError(f"{name}: is a folder, not an image") from None
    except OSError as e:
        raise FetalDetectError(f"{name}: cannot open ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, device or socket)"
        raise FetalDetectError(f"{name}: is {kind}, not an image")
    return os.fdopen(fd, "rb")


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (symlinks followed); False for FIFOs, devices, sockets, folders, missing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def stream_sha256(f, max_bytes: int | None = None) -> str | None:
    """Hex SHA-256 of a binary stream read in 1 MiB blocks (None once more than ``max_bytes`` were read):
    the one hashing loop of the package (:func:`regular_file_sha256`, ``data.registry.file_sha256``)."""
    h, total = hashlib.sha256(), 0
    while block := f.read(1 << 20):
        total += len(block)
        if max_bytes is not None and total > max_bytes:
            return None
        h.update(block)
    return h.hexdigest()


def regular_file_sha256(path: str | Path, max_bytes: int | None = None) -> str | None:
    """Hex SHA-256 of a regular file (None when it is missing, unreadable, not a regular file or over
    ``max_bytes``): never blocks on a FIFO, never reads a device forever."""
    try:
        with open_regular_file(path) as f:
            return stream_sha256(f, max_bytes)
    except (FetalDetectError, OSError):
        return None


def read_regular_file(path: str | Path, max_bytes: int = MAX_BYTES, name: str | None = None) -> bytes:
    """The bytes of a regular file, reading at most ``max_bytes + 1`` (413 when over)."""
    name = name or Path(path).name
    with open_regular_file(path, name) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise FetalDetectError(f"{name}: file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit",
                                   status=413)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while read
        raise FetalDetectError(f"{name}: file is over the {max_bytes / 1e6:.0f} MB limit", status=413)
    return data


def load_image(src: str | Path | bytes, name: str | None = None, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS, max_frames: int = MAX_FRAMES,
               check: Callable[[], None] | None = None) -> LoadedImage:
    """Decode an image or DICOM file (path or bytes) into grey frames, with limits checked first.

    ``check()`` runs before each DICOM frame is decoded (a deadline or cancellation may raise there).
    """
    if isinstance(src, (str, Path)):
        name = name or Path(src).name
        data = read_regular_file(src, max_bytes, name)
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
        return _load_dicom(data, name, max_pixels, max_frames, check)
    return _load_raster(data, fmt, name, max_pixels)


def pillow_open():
    """Pillow's own ``Image.open`` (Ultralytics replaces it with one that may pip-install a HEIF plugin)."""
    import sys

    from PIL import Image

    opener = Image.open
    if not getattr(opener, "__module__", "").startswith("PIL"):
        original = getattr(sys.modules.get(opener.__module__), "_image_open", None)
        if original is not None and getattr(original, "__module__", "").startswith("PIL"):
            return original
    return opener


def _raster_header(data: bytes, fmt: str, name: str, max_pixels: int) -> tuple[int, int, int]:
    """(width, height, decoded bytes) from the header, with Pillow's bomb warning made an error."""
    from PIL import Image

    # Pillow's bomb limit = the pixel limit, never below MAX_PIXELS: this is process-wide, and a small per-call
    # limit (checked by check_pixel_limit in _load_raster) must not leak into other readers (Ultralytics' dataset checks)
    Image.MAX_IMAGE_PIXELS = max(MAX_PIXELS, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with pillow_open()(_io.BytesIO(data), formats=[fmt.upper()]) as im:
                w, h = im.size
                bands, mode = len(im.getbands()), im.mode
                bits = im.tag_v2.get(258) if fmt == "tiff" else None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FetalDetectError(f"{name}: image is over the {max_pixels:,} pixel limit (decompression bomb)",
                               status=413) from None
    except Exception:
        raise FetalDetectError(f"{name}: corrupt {fmt.upper()} file (header unreadable)") from None
    png = png_header(data) if fmt == "png" else None
    if png is not None:
        return w, h, png.decoded_bytes
    depth = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    if bits:
        depth = max(depth, -(-max(bits if isinstance(bits, tuple) else (bits,)) // 8))
    return w, h, w * h * max(bands, 1) * depth


def _load_raster(data: bytes, fmt: str, name: str, max_pixels: int) -> LoadedImage:
    import cv2

    w, h, decoded = _raster_header(data, fmt, name, max_pixels)
    if w <= 0 or h <= 0:
        raise FetalDetectError(f"{name}: image has no pixels")
    check_pixel_limit(name, w, h, max_pixels)
    _check_frame_bytes(decoded, name, max_pixels)
    # JPEG is 8-bit and its luma is the grey we want: decoding Y alone skips chroma upsampling and the colour
    # conversion (several times faster on colour screenshots; within 1-2 grey levels of colour -> BGR2GRAY)
    flag = cv2.IMREAD_GRAYSCALE if fmt == "jpeg" else cv2.IMREAD_UNCHANGED
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if arr is None:
        raise FetalDetectError(f"{name}: corrupt {fmt.upper()} file (cannot decode)")
    return LoadedImage([to_grey_u8(arr)], format=fmt, name=name)


def max_frame_bytes(max_pixels: int) -> int:
    """Bytes one decoded frame may take: 4 per pixel at the pixel limit (8-bit BGRA)."""
    return 4 * max_pixels


def _check_frame_bytes(decoded: int, name: str, max_pixels: int) -> None:
    if decoded > max_frame_bytes(max_pixels):
        raise FetalDetectError(f"{name}: the image decodes to {decoded / 1e6:.0f} MB, over the "
                               f"{max_frame_bytes(max_pixels) / 1e6:.0f} MB per-frame limit", status=413)


def to_grey_u8(arr: np.ndarray) -> np.ndarray:
    """Any decoded array (grey, BGR, BGRA, 16-bit) -> grey uint8 (colour reduced first: one channel scaled)."""
    import cv2

    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        if arr.dtype not in (np.uint8, np.uint16, np.float32):
            arr = arr.astype(np.float32)
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY if arr.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        arr = ((a - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros(a.shape, np.uint8)
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


def _load_dicom(data: bytes, name: str, max_pixels: int, max_frames: int = MAX_FRAMES,
                check: Callable[[], None] | None = None) -> LoadedImage:
    """Frames and calibration of a DICOM (limits checked before decoding: see :mod:`fetal_detect.dicom`)."""
    from fetal_detect.dicom import read_dicom

    ds, decoded = read_dicom(data, name, max_pixels, max_frames, 4 * max_pixels, max_frame_bytes(max_pixels),
                             check=check)
    invert = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1"
    frames = []
    for arr in decoded:
        grey = to_grey_u8(arr)
        frames.append(255 - grey if invert else grey)
    if not frames:
        raise FetalDetectError(f"{name}: DICOM holds no frames")
    px, how = dicom_pixel_size_mm(ds)
    info = {"modality": str(getattr(ds, "Modality", ""))[:16], "frames": len(frames)}
    return LoadedImage(frames, px, how, "dicom", name, info)
