"""Batch inputs: DICOM folders (calibrated, no patient tags out), CSV lists with pixel sizes, clear errors."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetal_detect.batch import collect_inputs, run_batch
from fetal_detect.data.phantom import make_hc
from fetal_detect.errors import FetalDetectError

PATIENT = {"PatientName": "DOE^JANE", "PatientID": "PID-778899", "PatientBirthDate": "19870304",
           "InstitutionName": "St Example Hospital"}


def write_dicom(path: Path, image: np.ndarray, spacing_mm: float) -> Path:
    """A minimal ultrasound DICOM with PixelSpacing and identifying patient tags."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # US Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.PixelData = image.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_folder_is_calibrated_and_patient_tags_never_reach_the_output(tiny_hc_model, tmp_path):
    src = tmp_path / "study"
    (src / "series1").mkdir(parents=True)
    write_dicom(src / "series1" / "IM_0001", make_hc(1, size=(320, 216)).image, 0.21)  # no suffix: sniffed
    write_dicom(src / "series1" / "IM_0002.dcm", make_hc(2, size=(320, 216)).image, 0.33)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "rows.csv"
    summary = run_batch(src, out, task="hc", workers=0, weights=[str(tiny_hc_model)], overlays=tmp_path / "ov",
                        progress=False)
    assert summary["new"] == 2
    import pandas as pd

    df = pd.read_csv(out).sort_values("path")
    assert df["pixel_size_mm"].tolist() == [0.21, 0.33]
    assert set(df["pixel_size_source"]) == {"dicom"}
    text = out.read_text()
    for value in ("DOE", "JANE", "PID-778899", "19870304", "Example Hospital"):
        assert value not in text


def test_csv_input_gives_pixel_size_per_image(tiny_hc_model, tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"a{i}.png"), make_hc(i, size=(320, 216)).image)
    (tmp_path / "list.csv").write_text("path,pixel_size_mm\na0.png,0.15\na1.png,\n")
    items = collect_inputs(tmp_path / "list.csv")
    assert [(Path(i.path).name, i.pixel_size_mm) for i in items] == [("a0.png", 0.15), ("a1.png", None)]
    out = tmp_path / "rows.parquet"
    run_batch(tmp_path / "list.csv", out, task="hc", workers=0, weights=[str(tiny_hc_model)], pixel_size_mm=0.4,
              progress=False)
    import pandas as pd

    df = pd.read_parquet(out).sort_values("path")
    assert df["pixel_size_mm"].tolist() == [0.15, 0.4]
    assert df["pixel_size_source"].tolist() == ["user", "user"]


def test_glob_input_selects_matching_files(tmp_path):
    for name in ("x1.png", "x2.png", "y1.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8), np.uint8))
    assert [Path(i.path).name for i in collect_inputs(str(tmp_path / "x*.png"))] == ["x1.png", "x2.png"]


@pytest.mark.parametrize("content, message", [(None, "no such file"), ("file,px\na.png,1\n", "'path' column"),
                                              ("path,pixel_size_mm\na.png,-1\n", "must be > 0")])
def test_bad_input_is_a_one_line_error(tmp_path, content, message):
    src = tmp_path / "list.csv"
    if content is not None:
        src.write_text(content)
    with pytest.raises(FetalDetectError, match=message):
        collect_inputs(src)


def test_cli_batch_rejects_missing_weights(tmp_path, capsys):
    from fetal_detect.cli import main

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    rc = main(["batch", str(tmp_path), "--out", str(tmp_path / "o.parquet"), "--weights", str(tmp_path / "no.pt")])
    assert rc == 2 and "weights file not found" in capsys.readouterr().err
