"""Tests for the before/after refinement scores: precision/recall and the membrane adapted Rand error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scripts.data.classes import CLASS_NAMES, MEMBRANE
from scripts.metrics.refinement import RefinementEvaluation, cell_regions, format_refinement_table, membrane_rand_error
from scripts.transforms import DifficultPixelRefine

# 3 x 5, membrane (1) in column 2: two cells of 6 pixels
TRUE = np.zeros((3, 5), np.int64)
TRUE[:, 2] = 1


def test_cell_regions_four_connected():
    labels = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    regions = cell_regions(labels, MEMBRANE)
    assert regions[0, 1] == regions[1, 0] == 0  # membrane
    assert regions.max() == 2 and regions[0, 0] != regions[1, 1]  # the diagonal does not join (0,0) to the rest
    assert cell_regions(torch.as_tensor(TRUE)[None], MEMBRANE).max() == 2


@pytest.mark.parametrize(
    "pred,expected",
    [
        (TRUE, 0.0),
        # no membrane: one predicted cell over two true cells of 6. sum p_ij^2 - n = 72 - 12 = 60 = sum a_i^2 - n;
        # sum b_j^2 - n = 144 - 12 = 132; error = 1 - 60 / (0.5 * 60 + 0.5 * 132) = 0.375
        (np.zeros((3, 5), np.int64), 0.375),
        # thicker membrane (columns 1..3): its pixels go to the nearest cell, the cells are the same -> 0
        (np.where(np.isin(np.arange(5), [1, 2, 3]), 1, 0) * np.ones((3, 1), np.int64), 0.0),
    ],
)
def test_membrane_rand_error_hand_computed(pred, expected):
    assert membrane_rand_error(pred, TRUE, MEMBRANE) == pytest.approx(expected)


def test_membrane_rand_error_split():
    # 3 x 8 truth: membrane column 2, cells columns 0..1 (6 px) and 3..7 (15 px)
    true = np.zeros((3, 8), np.int64)
    true[:, 2] = 1
    pred = true.copy()
    pred[:, 4:6] = 1  # a spurious 2-px membrane: column 4 joins column 3 (nearest), column 5 joins 6..7
    # pred cells over the true pixels: 6 | 6 + 9; n = 21; sum p^2 - n = 36 + 36 + 81 - 21 = 132;
    # true: 36 + 225 - 21 = 240; pred: 132; error = 1 - 132 / (0.5 * 240 + 0.5 * 132)
    assert membrane_rand_error(pred, true, MEMBRANE) == pytest.approx(1 - 132 / 186)


def test_membrane_rand_error_undefined_and_bad_shapes():
    assert math.isnan(membrane_rand_error(np.zeros((2, 2)), np.ones((2, 2)), MEMBRANE))  # no true cell
    with pytest.raises(ValueError):
        membrane_rand_error(np.zeros((2, 3)), np.zeros((3, 2)), MEMBRANE)
    with pytest.raises(ValueError):
        membrane_rand_error(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), MEMBRANE)


def gap_example():
    """5 x 5, membrane column 2 in the truth; the prediction misses it at row 2 with low confidence."""
    true = np.zeros((5, 5), np.int64)
    true[:, 2] = 1
    prob = np.full((5, 5, 5), 0.025, np.float32)
    for (r, c), v in np.ndenumerate(true):
        prob[v, r, c] = 0.9
    prob[:, 2, 2] = 0.15
    prob[0, 2, 2] = 0.4  # arg-max intracellular, confidence 0.4 < mean 0.88: difficult
    return prob, true


def test_refinement_evaluation_closes_the_gap():
    prob, true = gap_example()
    ev = RefinementEvaluation(DifficultPixelRefine((MEMBRANE, 3), 0, connectivity=4), num_classes=5, membrane_class=MEMBRANE)
    per_image = ev.update(torch.as_tensor(prob), torch.as_tensor(true)[None])
    # before: one merged cell over two true cells of 10: (200 - 20) / (0.5 * 180 + 0.5 * 380) -> error 5 / 14
    assert per_image["rand_error_before"] == pytest.approx(5 / 14)
    assert per_image["rand_error_after"] == pytest.approx(0.0)
    assert per_image["difficult_fraction"] == pytest.approx(1 / 25)
    res = ev.aggregate()
    assert res["images"] == 1 and res["difficult_fraction"] == pytest.approx(1 / 25)
    b, a = res["before"], res["after"]
    assert b["recall"][1] == pytest.approx(4 / 5) and b["precision"][1] == pytest.approx(1.0)
    assert b["precision"][0] == pytest.approx(20 / 21) and b["recall"][0] == pytest.approx(1.0)
    assert a["recall"][1] == pytest.approx(1.0) and a["precision"][0] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in b["precision"][2:])  # classes 2..4 never predicted: undefined
    assert b["mean_iou"] == pytest.approx((20 / 21 + 4 / 5) / 2) and a["mean_iou"] == pytest.approx(1.0)
    # a second, perfect image: errors averaged over images, confusion summed
    ev.update(np.eye(5, dtype=np.float32)[true].transpose(2, 0, 1), true)
    res = ev.aggregate()
    assert res["before"]["rand_error"] == pytest.approx(5 / 28)
    assert res["before"]["recall"][1] == pytest.approx(9 / 10)
    table = format_refinement_table(res, CLASS_NAMES)
    assert "membrane" in table and "0.9000" in table and "before 0.1786, after 0.0000" in table
    ev.reset()
    assert ev.aggregate()["images"] == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        RefinementEvaluation(DifficultPixelRefine(), num_classes=1, membrane_class=0)
    with pytest.raises(ValueError):
        RefinementEvaluation(DifficultPixelRefine(), num_classes=3, membrane_class=3)
