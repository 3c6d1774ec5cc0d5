"""Plane data: the FETAL_PLANES_DB converter (six planes, three brain planes) and class folders."""
import numpy as np
import pytest

from fetal_detect.data.registry import DatasetEntry, get_entry, prepare, read_records
from fetal_detect.errors import FetalDetectError

ROWS = [  # Image_name, Patient_num, Plane, Brain_plane, Operator, US_Machine, Train
    ("Patient00001_Plane1_1_of_2", 1, "Fetal brain", "Trans-thalamic", "Op. 1", "Voluson E6", 1),
    ("Patient00001_Plane1_2_of_2", 1, "Fetal brain", "Trans-ventricular", "Op. 1", "Voluson E6", 1),
    ("Patient00002_Plane2_1_of_1", 2, "Fetal abdomen", "Not A Brain", "Op. 2", "Aloka", 1),
    ("Patient00003_Plane3_1_of_1", 3, "Fetal femur", "Not A Brain", "Op. 2", "Aloka", 1),
    ("Patient00004_Plane4_1_of_1", 4, "Fetal thorax", "Not A Brain", "Op. 3", "Voluson S10", 0),
    ("Patient00005_Plane5_1_of_1", 5, "Maternal cervix", "Not A Brain", "Op. 3", "Voluson S10", 0),
    ("Patient00006_Plane6_1_of_1", 6, "Other", "Not A Brain", "Other", "Other", 1),
    ("Patient00007_Plane1_1_of_1", 7, "Fetal brain", "Trans-cerebellum", "Op. 1", "Voluson E6", 0),
    ("Patient00008_Plane1_1_of_1", 8, "Fetal brain", "Other", "Op. 1", "Voluson E6", 1),
]


def _fpdb(root, rows=ROWS, sep=";"):
    import cv2

    (root / "Images").mkdir(parents=True)
    lines = [sep.join(["Image_name", "Patient_num", "Plane", "Brain_plane", "Operator", "US_Machine", "Train "])]
    for r in rows:
        lines.append(sep.join(str(v) for v in r))
        cv2.imwrite(str(root / "Images" / f"{r[0]}.png"), np.full((40, 50), 90, np.uint8))
    (root / "FETAL_PLANES_DB_data.csv").write_text("\n".join(lines) + "\n")
    return root


def test_fetal_planes_db_folder_gives_six_planes_by_patient(tmp_path):
    root = _fpdb(tmp_path / "FETAL_PLANES_DB")
    entry = get_entry(root)
    assert entry.layout == "fetal-planes-db"
    recs = read_records(entry, "classify")
    assert len(recs) == len(ROWS)
    assert {r.label for r in recs} == {"Fetal brain", "Fetal abdomen", "Fetal femur", "Fetal thorax",
                                       "Maternal cervix", "Other"}
    assert {r.patient_id for r in recs if r.label == "Fetal brain"} == {"Patient1", "Patient7", "Patient8"}
    assert recs[0].meta["us_machine"] == "Voluson E6"
    prepared = prepare(root, "classify")
    assert sum(c["images"] for c in prepared.manifest["counts"].values()) == len(ROWS)


def test_fetal_planes_db_brain_labels_give_three_brain_planes(tmp_path):
    root = _fpdb(tmp_path / "db")
    entry = DatasetEntry(name="fpdb-brain", layout="fetal-planes-db", source={"path": str(root)},
                         names=["Trans-thalamic", "Trans-ventricular", "Trans-cerebellum"], options={"labels": "brain"})
    recs = read_records(entry, "classify")
    assert sorted(r.label for r in recs) == ["Trans-cerebellum", "Trans-thalamic", "Trans-ventricular"]
    assert {r.split for r in recs} == {"train", "val"}  # Train=0 (the official test half) is held out


def test_fetal_planes_db_with_commas_is_a_one_line_error(tmp_path):
    root = _fpdb(tmp_path / "db", sep=",")
    with pytest.raises(FetalDetectError, match="missing column"):
        read_records(get_entry(root), "classify")


def test_class_folders_are_read_as_labels(tmp_path):
    import cv2

    for c in ("mid-sagittal", "other"):
        (tmp_path / "d" / c).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "d" / c / "a.png"), np.zeros((8, 8), np.uint8))
    entry = get_entry(tmp_path / "d")
    assert entry.layout == "imagefolder"
    assert sorted(r.label for r in read_records(entry, "classify")) == ["mid-sagittal", "other"]
