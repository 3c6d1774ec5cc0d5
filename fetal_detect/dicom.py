"""DICOM from untrusted bytes with bounded memory: limits are checked before anything is inflated or decoded.

1. The file meta is read first and the transfer syntax must be in :data:`TRANSFER_SYNTAXES` (415 otherwise).
2. A Deflated dataset is inflated in steps up to ``max_inflated_bytes`` (413 beyond: a zip bomb).
3. Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated are checked against the pixel, frame,
   cine and bytes-per-frame limits before the pixel data is touched.
4. Each compressed frame's own codec header (JPEG SOF, JPEG 2000 SIZ) must agree with Rows/Columns and
   the pixel limit before that frame is decoded (a 64x64 header around a 12000x12000 JPEG is refused).
5. Frames are decoded one at a time: native data by pydicom's numpy decoder, JPEG/JPEG 2000 by OpenCV
   (never Pillow's ``Image.open``, which Ultralytics patches to pip-install codecs), RLE here with each
   segment capped at Rows x Columns bytes (pydicom's RLE decoder has no cap: 128x expansion).
"""
from __future__ import annotations

import io as _io
import zlib
from typing import Callable, Iterator

import numpy as np

from fetal_detect.errors import FetalDetectError
from fetal_detect.image_headers import check_pixel_limit, codec_header

TRANSFER_SYNTAXES = {  # UID -> how the pixel data is read
    "1.2.840.10008.1.2": "native",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "native",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": "native",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99": "deflated",  # Deflated Explicit VR Little Endian (inflated with a size cap)
    "1.2.840.10008.1.2.5": "rle",  # RLE Lossless (decoded here, each segment capped at its expected size)
    "1.2.840.10008.1.2.4.50": "jpeg",  # JPEG Baseline (8-bit)
    "1.2.840.10008.1.2.4.51": "jpeg",  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.90": "j2k",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "j2k",  # JPEG 2000
}
MAX_INFLATED_BYTES = 128 * 1024 * 1024
INFLATE_STEP = 4 * 1024 * 1024


def read_dicom(data: bytes, name: str, max_pixels: int, max_frames: int, max_cine_pixels: int,
               max_frame_bytes: int, max_inflated_bytes: int = MAX_INFLATED_BYTES,
               check: Callable[[], None] | None = None):
    """-> (dataset, frames): the parsed dataset and an iterator of decoded frames (grey or BGR arrays).

    Every limit is checked before the iterator decodes anything; ``check()`` (e.g. a deadline) runs
    before each frame is decoded.
    """
    ds, ts = _parse(data, name, max_inflated_bytes)
    rows, cols, n_frames, spp, bits = _geometry(ds, name)
    _check_limits(name, rows, cols, n_frames, spp, bits, max_pixels, max_frames, max_cine_pixels, max_frame_bytes)
    if TRANSFER_SYNTAXES[ts] == "rle":
        frames = _rle_frames(ds, name, rows, cols, spp, bits, n_frames, check)
    elif TRANSFER_SYNTAXES[ts] in ("jpeg", "j2k"):
        frames = _compressed_frames(ds, name, rows, cols, n_frames, max_pixels, check)
    else:
        frames = _native_frames(ds, ts, name, rows, cols, spp, bits, n_frames, check)
    return ds, frames


def _parse(data: bytes, name: str, max_inflated_bytes: int):
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
    from pydicom.uid import ExplicitVRLittleEndian

    fp = _io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        ts = str(meta.get("TransferSyntaxUID", "") or "")
    except Exception as e:
        raise FetalDetectError(f"{name}: corrupt DICOM ({type(e).__name__})") from None
    if not ts:
        raise FetalDetectError(f"{name}: corrupt DICOM (no transfer syntax in the file meta)")
    if ts not in TRANSFER_SYNTAXES:
        raise FetalDetectError(f"{name}: DICOM transfer syntax '{ts[:64]}' is not supported "
                               f"(native, Deflated, RLE, JPEG baseline/extended or JPEG 2000)", status=415)
    try:
        if TRANSFER_SYNTAXES[ts] == "deflated":
            body = inflate(data[fp.tell():], max_inflated_bytes, name)
            ds = read_dataset(_io.BytesIO(body), is_implicit_VR=False, is_little_endian=True)
            del body
            meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the inflated dataset now is
            ds.file_meta = meta
            ts = str(ExplicitVRLittleEndian)
        else:
            ds = pydicom.dcmread(_io.BytesIO(data), force=False)
    except FetalDetectError:
        raise
    except Exception as e:
        raise FetalDetectError(f"{name}: corrupt DICOM ({type(e).__name__})") from None
    return ds, ts


def inflate(raw: bytes, cap: int, name: str = "file") -> bytes:
    """Raw-deflate ``raw`` (DICOM's Deflated syntax) into at most ``cap`` bytes; 413 beyond, 400 if cut short."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    buf = raw
    try:
        while True:
            out += d.decompress(buf, INFLATE_STEP)
            if len(out) > cap:
                raise FetalDetectError(f"{name}: the Deflated DICOM dataset inflates to over "
                                       f"{cap / 2**20:.0f} MB (a zip bomb?)", status=413)
            buf = d.unconsumed_tail
            if d.eof or not buf:
                break
    except zlib.error:
        raise FetalDetectError(f"{name}: corrupt DICOM (bad Deflate stream)") from None
    if not d.eof:
        raise FetalDetectError(f"{name}: corrupt DICOM (Deflate stream cut short)")
    return bytes(out)


def _geometry(ds, name: str) -> tuple[int, int, int, int, int]:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(str(ds.get("NumberOfFrames", 1) or 1).strip())
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
    except Exception as e:
        raise FetalDetectError(f"{name}: corrupt DICOM (image header: {type(e).__name__})") from None
    if "PixelData" not in ds:
        raise FetalDetectError(f"{name}: DICOM has no pixel data")
    if rows <= 0 or cols <= 0 or n_frames <= 0:
        raise FetalDetectError(f"{name}: DICOM image has no pixels ({cols}x{rows}, {n_frames} frames)")
    return rows, cols, n_frames, spp, bits


def _check_limits(name, rows, cols, n_frames, spp, bits, max_pixels, max_frames, max_cine_pixels, max_frame_bytes):
    if spp not in (1, 3) or bits not in (8, 16):
        raise FetalDetectError(f"{name}: DICOM with {spp} samples of {bits} bits per pixel is not supported", status=415)
    check_pixel_limit(name, cols, rows, max_pixels)
    if n_frames > max_frames:
        raise FetalDetectError(f"{name}: cine has {n_frames} frames, over the {max_frames} frame limit", status=413)
    if rows * cols * n_frames > max_cine_pixels:
        raise FetalDetectError(f"{name}: {n_frames} frames of {cols}x{rows} px are over the cine limit of "
                               f"{max_cine_pixels:,} pixels", status=413)
    frame_bytes = rows * cols * spp * (bits // 8)
    if frame_bytes > max_frame_bytes:
        raise FetalDetectError(f"{name}: one frame decodes to {frame_bytes / 1e6:.0f} MB, over the "
                               f"{max_frame_bytes / 1e6:.0f} MB per-frame limit", status=413)


def _compressed_frames(ds, name, rows, cols, n_frames, max_pixels, check) -> Iterator[np.ndarray]:
    encoded = _encapsulated(ds, name, n_frames)
    for i, frame in enumerate(encoded):  # every header first, then decode
        h = codec_header(frame[:1 << 20])
        if h is None:
            raise FetalDetectError(f"{name}: frame {i + 1} is not a readable JPEG / JPEG 2000 stream", status=415)
        check_pixel_limit(name, h.width, h.height, max_pixels, frame=i + 1)
        if (h.width, h.height) != (cols, rows):
            raise FetalDetectError(f"{name}: frame {i + 1} is {h.width}x{h.height} px but the DICOM header says "
                                   f"{cols}x{rows}")
    return _decode_compressed(encoded, name, check)


def _encapsulated(ds, name: str, n_frames: int) -> list[bytes]:
    from pydicom.encaps import generate_frames

    try:
        encoded = list(generate_frames(ds.PixelData, number_of_frames=n_frames))
    except Exception as e:
        raise FetalDetectError(f"{name}: corrupt DICOM (encapsulated pixel data: {type(e).__name__})") from None
    if len(encoded) < n_frames:
        raise FetalDetectError(f"{name}: DICOM says {n_frames} frames but holds {len(encoded)}")
    return encoded[:n_frames]


def _rle_frames(ds, name, rows, cols, spp, bits, n_frames, check) -> Iterator[np.ndarray]:
    encoded = _encapsulated(ds, name, n_frames)
    nbytes = bits // 8
    photometric = str(getattr(ds, "PhotometricInterpretation", ""))
    for i in range(n_frames):
        if check:
            check()
        segments = rle_segments(encoded[i], spp * nbytes, rows * cols, f"{name}: RLE frame {i + 1}")
        encoded[i] = b""
        planes = [np.frombuffer(seg, np.uint8).reshape(rows, cols) for seg in segments]
        if nbytes == 2:  # most significant byte first
            planes = [(planes[2 * s].astype(np.uint16) << 8) | planes[2 * s + 1] for s in range(spp)]
        arr = planes[0] if spp == 1 else np.dstack(planes)
        if spp == 3 and photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        yield arr[..., ::-1] if arr.ndim == 3 else arr


def rle_segments(frame: bytes, n_segments: int, segment_len: int, what: str) -> list[bytes]:
    """The decoded segments of one DICOM RLE frame, each exactly ``segment_len`` bytes (400 if it would be longer
    or shorter: a PackBits segment can expand 64x, so it is never decoded past its expected size)."""
    import struct

    if len(frame) < 64:
        raise FetalDetectError(f"{what}: RLE header missing")
    header = struct.unpack("<16I", frame[:64])
    if header[0] != n_segments:
        raise FetalDetectError(f"{what}: {header[0]} RLE segments, expected {n_segments}")
    offsets = [*header[1:1 + n_segments], len(frame)]
    out = []
    for k in range(n_segments):
        seg = _packbits(frame[offsets[k]:offsets[k + 1]], segment_len)
        if len(seg) < segment_len:
            raise FetalDetectError(f"{what}: RLE segment {k + 1} is short")
        out.append(bytes(seg[:segment_len]))
    return out


def _packbits(src: bytes, cap: int) -> bytearray:
    """PackBits-decode ``src``, stopping (not failing) once ``cap`` bytes are out (DICOM pads segments)."""
    out, pos, n = bytearray(), 0, len(src)
    while pos < n and len(out) < cap:
        h = src[pos]
        pos += 1
        if h < 128:  # copy the next h + 1 bytes
            out += src[pos:pos + h + 1]
            pos += h + 1
        elif h > 128:  # repeat the next byte 257 - h times
            out += src[pos:pos + 1] * (257 - h)
            pos += 1
    return out


def _decode_compressed(encoded: list[bytes], name, check) -> Iterator[np.ndarray]:
    import cv2

    for i in range(len(encoded)):
        if check:
            check()
        arr = cv2.imdecode(np.frombuffer(encoded[i], np.uint8), cv2.IMREAD_UNCHANGED)
        encoded[i] = b""  # drop each compressed frame once decoded
        if arr is None:
            raise FetalDetectError(f"{name}: DICOM frame {i + 1} cannot be decoded", status=415)
        yield arr


def _native_frames(ds, ts, name, rows, cols, spp, bits, n_frames, check) -> Iterator[np.ndarray]:
    need = rows * cols * spp * (bits // 8) * n_frames
    if len(ds.PixelData) < need:
        raise FetalDetectError(f"{name}: DICOM pixel data is shorter than Rows x Columns x frames")
    return _decode_native(ds, ts, name, check)


def _decode_native(ds, ts, name, check) -> Iterator[np.ndarray]:
    from pydicom.pixels import get_decoder

    decoder = get_decoder(ts)
    it = decoder.iter_array(ds, as_rgb=True)
    while True:
        if check:
            check()
        try:
            arr, _ = next(it)
        except StopIteration:
            return
        except Exception as e:
            raise FetalDetectError(f"{name}: DICOM pixel data cannot be decoded ({type(e).__name__})",
                                   status=415) from None
        yield arr[..., ::-1] if arr.ndim == 3 and arr.shape[-1] == 3 else arr  # RGB -> BGR like OpenCV
