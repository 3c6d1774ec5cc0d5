"""Patient-level splits: no patient in two splits, deterministic, k-fold covers everyone once."""
import pytest

from fetal_detect.data.splits import assign_splits, check_no_leakage, patient_of
from fetal_detect.errors import FetalDetectError

NAMES = [f"{p:03d}_{k}HC.png" for p in range(1, 61) for k in range(1, 1 + p % 3 + 1)]
PATIENTS = [patient_of(n, r"^(\d{3})") for n in NAMES]


def test_patient_id_comes_from_the_pattern():
    assert patient_of("014_2HC.png", r"^(\d{3})") == "014"
    assert patient_of("Patient00188_Plane3_2_of_3.jpg", r"^(Patient\d+)") == "Patient00188"
    assert patient_of("x.png", None) == "x.png"


def test_holdout_split_never_puts_a_patient_in_two_splits_and_is_seeded():
    splits = assign_splits(PATIENTS, val=0.2, test=0.1, seed=3)
    check_no_leakage(PATIENTS, splits)
    assert splits == assign_splits(PATIENTS, val=0.2, test=0.1, seed=3)
    assert splits != assign_splits(PATIENTS, val=0.2, test=0.1, seed=4)
    frac = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert 0.18 <= frac["val"] <= 0.3 and 0.09 <= frac["test"] <= 0.2


def test_kfold_puts_every_patient_in_exactly_one_validation_fold():
    seen = {}
    for k in range(4):
        splits = assign_splits(PATIENTS, folds=4, fold=k, seed=0)
        check_no_leakage(PATIENTS, splits)
        for p, s in zip(PATIENTS, splits):
            if s == "val":
                assert seen.setdefault(p, k) == k
    assert set(seen) == set(PATIENTS)


def test_leak_check_catches_a_patient_in_two_splits():
    with pytest.raises(AssertionError):
        check_no_leakage(["a", "a"], ["train", "val"])


def test_bad_split_settings_are_user_errors():
    with pytest.raises(FetalDetectError):
        assign_splits(PATIENTS, val=0.7, test=0.5)
    with pytest.raises(FetalDetectError):
        assign_splits(PATIENTS, folds=1)
