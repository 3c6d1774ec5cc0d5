"""Image size from a codec's header bytes, read before anything is decoded (no decoder involved).

Each parser takes the first bytes of a stream and returns :class:`Header` (width, height, channels,
bytes per sample) or None when the header is missing or malformed. Used to refuse decompression bombs
and files whose embedded image disagrees with what the container (DICOM Rows/Columns) declares;
:func:`check_pixel_limit` is the one pixel-limit check of every reader (raster, DICOM, DICOM frame).
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from fetal_detect.errors import FetalDetectError

# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}  # colour type -> channels as OpenCV decodes them (BGR/BGRA)


class Header(NamedTuple):
    width: int
    height: int
    channels: int
    bytes_per_sample: int

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.channels * self.bytes_per_sample


def check_pixel_limit(name: str, width: int, height: int, max_pixels: int, frame: int | None = None) -> None:
    """The one pixel limit (a decompression bomb otherwise): 413 when ``width x height`` is over ``max_pixels``.

    Used by every reader before it decodes: a raster's header (:mod:`fetal_detect.io`), a DICOM's
    Rows/Columns and each compressed DICOM frame's own codec header (``frame``: its 1-based number)."""
    if width * height > max_pixels:
        what = f"frame {frame} is {width}x{height} px," if frame is not None else f"{width}x{height} px is"
        raise FetalDetectError(f"{name}: {what} over the {max_pixels:,} pixel limit", status=413)


def png_header(data: bytes) -> Header | None:
    """PNG IHDR: width, height, bit depth, colour type."""
    if len(data) < 26 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    depth, colour = data[24], data[25]
    if colour not in _PNG_CHANNELS:
        return None
    return Header(w, h, _PNG_CHANNELS[colour], 2 if depth == 16 else 1)


def jpeg_header(data: bytes, scan_limit: int = 1 << 20) -> Header | None:
    """JPEG SOFn segment: precision, height, width, components (segments walked up to the first scan)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, end = 2, min(len(data), scan_limit)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 10 > len(data) or length < 8:
                return None
            precision, h, w, comps = struct.unpack(">BHHB", data[i + 4:i + 10])
            return Header(w, h, comps, 2 if precision > 8 else 1)
        i += 2 + length
    return None


def j2k_header(data: bytes, scan_limit: int = 1 << 16) -> Header | None:
    """JPEG 2000 SIZ segment (raw codestream, or the codestream inside a JP2 file)."""
    at = data.find(b"\xff\x4f\xff\x51", 0, scan_limit)
    if at < 0 or at + 4 + 38 > len(data):
        return None
    siz = data[at + 4:]
    _, _, xsiz, ysiz, xo, yo = struct.unpack(">HHIIII", siz[:20])
    (comps,) = struct.unpack(">H", siz[36:38])
    if xsiz <= xo or ysiz <= yo or comps == 0 or len(siz) < 38 + 3 * comps:
        return None
    depth = max((siz[38 + 3 * c] & 0x7F) + 1 for c in range(comps))
    return Header(xsiz - xo, ysiz - yo, comps, 2 if depth > 8 else 1)


def codec_header(data: bytes) -> Header | None:
    """The header of whichever of JPEG, JPEG 2000 or PNG ``data`` is, else None."""
    if data.startswith(b"\xff\xd8"):
        return jpeg_header(data)
    if data.startswith(b"\x89PNG"):
        return png_header(data)
    if data.startswith(b"\xff\x4f\xff\x51") or data[4:8] == b"jP  ":
        return j2k_header(data)
    return None
