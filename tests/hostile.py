"""Hostile inputs made in memory by the tests: DICOM zip bombs, lying codec headers, PNG-then-HTML.

Small and fast: a "1 GB" Deflate bomb is a few hundred kB, made by streaming zeros through zlib.
"""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np

DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K = "1.2.840.10008.1.2.4.90"
PNG_THEN_HTML = b"\x89PNG\r\n\x1a\n" + b"<!doctype html><html><body><script>alert(1)</script></body></html>\n" * 4


def _meta(ts: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    return meta


def _image_ds(rows: int, cols: int, frames: int = 1, spp: int = 1, photometric: str = "MONOCHROME2"):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.Modality, ds.PatientName = "US", "Doe^Jane"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = spp, photometric
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelSpacing = [0.2, 0.2]
    return ds


def _encode(ds) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _file_head(ts: str) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, _meta(ts), enforce_standard=True)
    return fp.getvalue()


def deflated_bomb(zeros_mb: int = 1024, rows: int = 8, cols: int = 8) -> bytes:
    """A Deflated DICOM whose dataset holds a private OB element of ``zeros_mb`` MB of zeros (inflates to
    that much; the file itself is ~1 kB per MB), then a tiny valid image."""
    ds = _image_ds(rows, cols)
    ds.PixelData = np.zeros((rows, cols), np.uint8).tobytes()
    before = _encode(ds[:0x00090000])  # groups 0008 ... before the private group 0009
    creator = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4) + b"BOMB"
    ob_len = zeros_mb * 1024 * 1024
    ob_head = struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, ob_len)
    after = _encode(ds[0x00090000:])
    z = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [z.compress(before + creator + ob_head)]
    chunk = bytes(1024 * 1024)
    for _ in range(zeros_mb):
        parts.append(z.compress(chunk))
    parts += [z.compress(after), z.flush()]
    return _file_head(DEFLATED) + b"".join(parts)


def deflated_dicom(image: np.ndarray) -> bytes:
    """A valid Deflated DICOM of a grey frame (the allow-listed syntax must keep working)."""
    ds = _image_ds(*image.shape)
    ds.PixelData = image.astype(np.uint8).tobytes()
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return _file_head(DEFLATED) + z.compress(_encode(ds)) + z.flush()


def encapsulated_dicom(frames: list[bytes], rows: int, cols: int, ts: str = JPEG_BASELINE, spp: int = 1) -> bytes:
    """A DICOM whose Rows/Columns say ``rows x cols`` around the given compressed frames (which may lie)."""
    from pydicom.dataset import FileDataset
    from pydicom.encaps import encapsulate

    ds = FileDataset(None, _image_ds(rows, cols, len(frames), spp, "YBR_FULL_422" if spp == 3 else "MONOCHROME2"),
                     file_meta=_meta(ts), preamble=b"\0" * 128)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def jpeg_sof_only(width: int, height: int) -> bytes:
    """A JPEG that is only a start-of-frame header claiming ``width x height`` (never decodable)."""
    sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def big_zero_jpeg(width: int, height: int) -> bytes:
    """A real all-black JPEG of ``width x height`` (small file; keep the size modest: it is made in memory)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, "JPEG", quality=10)
    return buf.getvalue()


def rle_dicom(image: np.ndarray, bomb_mb: int = 0) -> bytes:
    """An RLE Lossless DICOM of ``image`` (grey or RGB, 8/16-bit) encoded by pydicom; with ``bomb_mb``, the
    first segment gets that many MB of PackBits runs appended (a 64x expansion if decoded without a cap)."""
    from pydicom.dataset import FileDataset
    from pydicom.uid import RLELossless

    spp = 3 if image.ndim == 3 else 1
    ds = FileDataset(None, _image_ds(image.shape[0], image.shape[1], 1, spp, "RGB" if spp == 3 else "MONOCHROME2"),
                     file_meta=_meta(EXPLICIT_LE), preamble=b"\0" * 128)
    bits = 16 if image.dtype == np.uint16 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelData = image.tobytes()
    ds.compress(RLELossless, image)
    if bomb_mb:
        from pydicom.encaps import encapsulate, generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        n = struct.unpack("<I", frame[:4])[0]
        runs = b"\x81\x00" * (bomb_mb * 512 * 1024)  # each pair -> 128 zero bytes
        bombed = struct.pack("<16I", n, 64, *([64 + len(runs)] * (n - 1)), *([0] * (15 - n))) + runs + frame[64:]
        ds.PixelData = encapsulate([bombed])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
