"""Patient-level splits and k-fold: every image of a patient lands in the same split, always.

Patients are shuffled once with a seed; hold-out splits take whole patients until the requested
fraction of *images* is reached, and k-fold assigns whole patients to folds round-robin.
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from fetal_detect.errors import FetalDetectError


def patient_of(name: str, pattern: str | None) -> str:
    """Patient id from a file name with a regex whose first group is the id (no pattern: the name)."""
    if not pattern:
        return name
    m = re.search(pattern, name)
    return m.group(1) if m else name


def _shuffled_patients(patients: list[str], seed: int) -> list[str]:
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    return [unique[i] for i in order]


def assign_splits(patients: list[str], val: float = 0.15, test: float = 0.0, seed: int = 0,
                  folds: int | None = None, fold: int = 0) -> list[str]:
    """Split name (``train``/``val``/``test``) for each item, grouped by its patient id.

    With ``folds=K`` the ``fold``-th group of patients is ``val`` and the rest ``train``
    (``test`` is then not used: cross-validation reports mean +- SD over folds instead).
    """
    if not patients:
        return []
    order = _shuffled_patients(patients, seed)
    if folds:
        if folds < 2 or not 0 <= fold < folds:
            raise FetalDetectError(f"--folds must be >= 2 and fold in 0..{folds - 1}, got folds={folds} fold={fold}")
        if len(order) < folds:
            raise FetalDetectError(f"{len(order)} patients cannot make {folds} folds")
        fold_of = {p: i % folds for i, p in enumerate(order)}
        return ["val" if fold_of[p] == fold else "train" for p in patients]
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise FetalDetectError(f"split fractions must be in [0, 1) and sum below 1, got val={val} test={test}")
    counts = Counter(patients)
    total = len(patients)
    split_of: dict[str, str] = {}
    n_test = n_val = 0
    for p in order:
        if n_test < test * total:
            split_of[p], n_test = "test", n_test + counts[p]
        elif n_val < val * total:
            split_of[p], n_val = "val", n_val + counts[p]
        else:
            split_of[p] = "train"
    return [split_of[p] for p in patients]


def assign_by_rule(patients: list[str], rule: dict | None, folds: int | None = None, fold: int = 0) -> list[str]:
    """:func:`assign_splits` with a dataset entry's ``split:`` rule (``val``, ``test``, ``seed``; defaults
    0.15, 0, 0): the one reading of that rule, for preparing a set and for re-deriving its splits."""
    rule = rule or {}
    return assign_splits(patients, val=float(rule.get("val", 0.15)), test=float(rule.get("test", 0.0)),
                         seed=int(rule.get("seed", 0)), folds=folds, fold=fold)


def check_no_leakage(patients: list[str], splits: list[str]) -> None:
    """Raise if any patient appears in two splits (a guard run on every converted dataset)."""
    seen: dict[str, str] = {}
    for p, s in zip(patients, splits):
        if seen.setdefault(p, s) != s:
            raise AssertionError(f"patient {p} is in both {seen[p]} and {s}")
