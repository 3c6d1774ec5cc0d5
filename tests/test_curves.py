"""Scores on scores and masks: AUROC / PR (perfect, reversed, missing class, one-vs-rest), HC QC, IoU vs Dice."""
import numpy as np
import pytest

from fetal_detect.evaluate.curves import one_vs_rest, roc_pr
from fetal_detect.measure.hc_scoring import confidence_as_qc


def test_perfect_and_reversed_rankings_give_auroc_one_and_zero():
    pos = np.array([0, 0, 1, 1], bool)
    assert roc_pr(pos, [0.1, 0.2, 0.8, 0.9])["auroc"] == 1.0
    assert roc_pr(pos, [0.9, 0.8, 0.2, 0.1])["auroc"] == 0.0


def test_a_class_without_positives_has_no_auroc_instead_of_a_crash():
    r = roc_pr(np.zeros(5, bool), np.arange(5))
    assert r["auroc"] is None and r["n_positive"] == 0 and r["n_negative"] == 5


def test_one_vs_rest_from_softmax_dicts_writes_the_plot(tmp_path):
    truth = ["a", "a", "b", "b", "c"]
    probs = [{"a": .8, "b": .1, "c": .1}, {"a": .6, "b": .3, "c": .1}, {"a": .2, "b": .7, "c": .1},
             {"a": .1, "b": .8, "c": .1}, {"a": .1, "b": .2, "c": .7}]
    r = one_vs_rest(truth, probs, ["a", "b", "c", "unseen"], tmp_path / "roc.png", "t")
    assert r["macro_auroc"] == 1.0 and r["per_class"]["unseen"]["auroc"] is None
    assert (tmp_path / "roc.png").exists()


def test_hc_confidence_qc_flags_the_measurements_off_by_more_than_the_tolerance():
    rows = [{"hc_err_mm": e, "confidence": c} for e, c in [(0.5, .9), (-1, .8), (6, .2), (-4, .3), (2, .7)]]
    m = confidence_as_qc(rows, tolerance_mm=3.0)
    assert m["qc_n_off"] == 2 and m["qc_auroc"] == 1.0


def test_iou_and_dice_agree_on_a_half_overlap():
    from fetal_detect.measure.geometry import dice, iou

    a = np.zeros((10, 10), bool); a[:, :6] = True
    b = np.zeros((10, 10), bool); b[:, 3:9] = True
    assert iou(a, b) == 30 / 90 and dice(a, b) == 60 / 120
    assert iou(a, b) == pytest.approx(dice(a, b) / (2 - dice(a, b)))
    assert iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
