"""Tests for the difficult-pixel refinement (Matsuzuki & Hotta), hand-computed 5x5 examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from scripts.transforms import (
    DifficultPixelRefine,
    DifficultPixelRefined,
    confidence_map,
    difficult_pixel_mask,
    refine_difficult_pixels,
)

# 5x5 arg-max map; -1 marks a difficult pixel (max probability 0.4, on class 2), the others are confident (0.9).
#   mean confidence = (15 * 0.9 + 10 * 0.4) / 25 = 0.7, so exactly the -1 pixels are below the mean.
GRID = np.array(
    [
        [1, 1, -1, -1, 0],
        [0, 0, -1, 0, 0],
        [0, -1, -1, 0, 3],
        [-1, 0, 0, -1, -1],
        [-1, -1, 0, 0, 2],
    ]
)
DIFFICULT = GRID == -1

#: the bundle's refinement (inference.json's refine_priorities / refine_fallback): membrane, then mitochondria;
#: the rest to intracellular. The transform itself has no dataset default.
PAPER = {"priorities": (1, 3), "fallback": 0}


def make_prob(grid: np.ndarray = GRID, num_classes: int = 5) -> np.ndarray:
    prob = np.full((num_classes, *grid.shape), 0.025, dtype=np.float32)
    for (r, c), v in np.ndenumerate(grid):
        if v < 0:
            prob[:, r, c] = 0.15
            prob[2, r, c] = 0.4
        else:
            prob[v, r, c] = 0.9
    return prob


# 4-connectivity, until nothing changes. Membrane (1) grows from (0,1): pass 1 takes (0,2); pass 2 (0,3),(1,2);
# pass 3 (2,2); pass 4 (2,1); pass 5 nothing. Mitochondria (3) grows from (2,4): (3,4) then (3,3).
# (3,0), (4,0), (4,1) are reached by neither and go to the fallback.
EXPECTED_4 = np.array(
    [
        [1, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 1, 0, 3],
        [0, 0, 0, 3, 3],
        [0, 0, 0, 0, 2],
    ]
)
# same, fallback=None: the unreached difficult pixels keep their arg-max (2)
EXPECTED_4_KEEP = EXPECTED_4.copy()
EXPECTED_4_KEEP[[3, 4, 4], [0, 0, 1]] = 2
# 8-connectivity: membrane reaches every difficult pixel ((2,2)->(3,3) diagonally, (2,1)->(3,0)->(4,0),(4,1),
# (3,3)->(3,4)) before mitochondria gets its turn.
EXPECTED_8 = np.where(DIFFICULT, 1, GRID)
# one pass per class: membrane takes (0,2) only, mitochondria (3,4) only, the rest falls back to 0
EXPECTED_4_ONE_PASS = np.where(DIFFICULT, 0, GRID)
EXPECTED_4_ONE_PASS[0, 2] = 1
EXPECTED_4_ONE_PASS[3, 4] = 3
# mitochondria first, 8-conn: from (2,4) it takes (3,3),(3,4); then (2,2); (1,2),(2,1); (0,2),(0,3),(3,0);
# (4,0),(4,1): every difficult pixel, nothing left for membrane
EXPECTED_8_MITO_FIRST = np.where(DIFFICULT, 3, GRID)

CASES = [
    ({"connectivity": 4}, EXPECTED_4),
    ({"connectivity": 4, "fallback": None}, EXPECTED_4_KEEP),
    ({"connectivity": 8}, EXPECTED_8),
    ({}, EXPECTED_8),  # PAPER with the default 8-connectivity
    ({"connectivity": 4, "max_passes": 1}, EXPECTED_4_ONE_PASS),
    ({"connectivity": 8, "priorities": (3, 1)}, EXPECTED_8_MITO_FIRST),
    ({"connectivity": 4, "priorities": 1, "fallback": 4}, np.where(DIFFICULT & (EXPECTED_4 != 1), 4, EXPECTED_4)),
]


@pytest.mark.parametrize("kwargs,expected", CASES)
def test_hand_computed_refinement(kwargs, expected):
    prob = make_prob()
    out = DifficultPixelRefine(**{**PAPER, **kwargs})(prob)
    assert isinstance(out, np.ndarray)
    assert out.shape == (1, 5, 5)
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize("kwargs,expected", CASES[:3])
def test_torch_in_torch_out(kwargs, expected):
    prob = torch.as_tensor(make_prob(), dtype=torch.float64)
    out, conf, diff = DifficultPixelRefine(**{**PAPER, **kwargs})(prob, return_maps=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_array_equal(out[0].numpy(), expected)
    np.testing.assert_allclose(conf[0].numpy(), np.where(DIFFICULT, 0.4, 0.9), rtol=1e-6)
    assert diff.dtype == torch.bool
    np.testing.assert_array_equal(diff[0].numpy(), DIFFICULT)


def test_metatensor_keeps_meta():
    prob = MetaTensor(torch.as_tensor(make_prob()), meta={"filename_or_obj": "a.png"})
    out = DifficultPixelRefine(**PAPER, connectivity=4)(prob)
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "a.png"
    np.testing.assert_array_equal(out[0].numpy(), EXPECTED_4)


def test_softmax_on_logits_matches_probabilities():
    logits = np.log(make_prob()) + 3.0  # softmax(log p + c) == p
    out = DifficultPixelRefine(**PAPER, connectivity=4, softmax=True)(logits)
    np.testing.assert_array_equal(out[0], EXPECTED_4)


def test_threshold_and_scale():
    conf = confidence_map(make_prob())
    assert conf.shape == (1, 5, 5)
    np.testing.assert_array_equal(difficult_pixel_mask(conf)[0], DIFFICULT)
    np.testing.assert_array_equal(difficult_pixel_mask(conf, threshold=0.3)[0], np.zeros((5, 5), bool))
    np.testing.assert_array_equal(difficult_pixel_mask(conf, threshold=0.95)[0], np.ones((5, 5), bool))
    # alpha = 0.5 * 0.7 = 0.35 < 0.4: nothing difficult, the arg-max is returned unchanged
    out = DifficultPixelRefine(**PAPER, scale=0.5)(make_prob())
    np.testing.assert_array_equal(out[0], np.argmax(make_prob(), axis=0))
    # uniform confidence: f == mean everywhere, strict inequality -> nothing difficult
    assert not difficult_pixel_mask(np.full((1, 3, 3), 0.5)).any()


def test_refine_function_3d():
    labels = np.zeros((3, 3, 3), dtype=np.int64)
    labels[0, 0, 0] = 1
    difficult = np.zeros((3, 3, 3), bool)
    difficult[1, 1, 1] = difficult[2, 2, 2] = True
    # 6-connectivity: (1,1,1) does not touch (0,0,0) -> fallback 0; 26-connectivity: chain of diagonals -> 1
    np.testing.assert_array_equal(refine_difficult_pixels(labels, difficult, (1,), 0, 6), np.where(difficult, 0, labels))
    np.testing.assert_array_equal(refine_difficult_pixels(labels, difficult, (1,), 0, 26), np.where(difficult, 1, labels))


def test_dictionary_version():
    prob = torch.as_tensor(make_prob())
    d = {"pred": prob, "other": 1}
    out = DifficultPixelRefined(
        "pred", refined_keys="refined", confidence_keys="conf", difficult_keys="diff", connectivity=4, **PAPER
    )(d)
    assert out["pred"] is prob and out["other"] == 1
    np.testing.assert_array_equal(out["refined"][0].numpy(), EXPECTED_4)
    np.testing.assert_array_equal(out["diff"][0].numpy(), DIFFICULT)
    np.testing.assert_allclose(out["conf"][0].numpy(), np.where(DIFFICULT, 0.4, 0.9), rtol=1e-6)
    # default: overwrite the input key, store no maps
    out = DifficultPixelRefined("pred", connectivity=4, **PAPER)({"pred": prob})
    assert set(out) == {"pred"}
    np.testing.assert_array_equal(out["pred"][0].numpy(), EXPECTED_4)


# keep_other_classes: confident classes in CONFIDENT (-1 = difficult), the difficult pixels' arg-max in ARGMAX.
#   7 difficult pixels at 0.4, 18 confident at 0.9: mean confidence 0.76, so exactly the difficult ones are below it.
CONFIDENT = np.array(
    [
        [1, -1, 0, 0, -1],
        [0, 0, 0, 0, -1],
        [-1, 0, 3, -1, 0],
        [-1, 0, 0, 0, -1],
        [0, 0, 0, 0, 0],
    ]
)
ARGMAX = np.where(CONFIDENT >= 0, CONFIDENT, 0)
ARGMAX[0, 1] = ARGMAX[3, 4] = 1  # membrane (a priority class)
ARGMAX[0, 4] = ARGMAX[1, 4] = 4  # synapse
ARGMAX[2, 0] = ARGMAX[3, 0] = ARGMAX[2, 3] = 2  # glia/extracellular


def make_prob_argmax() -> np.ndarray:
    prob = np.full((5, 5, 5), 0.025, dtype=np.float32)
    for (r, c), v in np.ndenumerate(ARGMAX):
        if CONFIDENT[r, c] < 0:
            prob[:, r, c] = 0.15
            prob[v, r, c] = 0.4
        else:
            prob[v, r, c] = 0.9
    return prob


# 4-connectivity, priorities (1, 3), fallback 0. Membrane grows from (0,0) into (0,1); mitochondria from (2,2) into
# (2,3) (a glia arg-max: the priority classes still take adjacent difficult pixels of other classes). Unreached:
# (0,4), (1,4) synapse, (2,0), (3,0) glia, (3,4) membrane.
EXPECTED_OTHERS_TO_FALLBACK = np.where(CONFIDENT >= 0, CONFIDENT, 0)
EXPECTED_OTHERS_TO_FALLBACK[0, 1] = 1
EXPECTED_OTHERS_TO_FALLBACK[2, 3] = 3
# keep_other_classes: synapse and glia keep their arg-max; the unreached membrane pixel (3,4) still falls back to 0
EXPECTED_KEEP_OTHERS = EXPECTED_OTHERS_TO_FALLBACK.copy()
EXPECTED_KEEP_OTHERS[[0, 1, 2, 3], [4, 4, 0, 0]] = [4, 4, 2, 2]
# fallback=None keeps every unreached arg-max, the membrane one at (3,4) too
EXPECTED_KEEP_ALL = EXPECTED_KEEP_OTHERS.copy()
EXPECTED_KEEP_ALL[3, 4] = 1


@pytest.mark.parametrize(
    "keep,fallback,expected",
    [
        (False, 0, EXPECTED_OTHERS_TO_FALLBACK),
        (True, 0, EXPECTED_KEEP_OTHERS),
        (True, None, EXPECTED_KEEP_ALL),
    ],
)
def test_keep_other_classes(keep, fallback, expected):
    prob = make_prob_argmax()
    np.testing.assert_array_equal(np.argmax(prob, axis=0), ARGMAX)
    out = DifficultPixelRefine((1, 3), fallback, connectivity=4, keep_other_classes=keep)(prob)
    np.testing.assert_array_equal(out[0], expected)
    d = DifficultPixelRefined("pred", priorities=(1, 3), fallback=fallback, connectivity=4, keep_other_classes=keep)(
        {"pred": torch.as_tensor(prob)}
    )
    np.testing.assert_array_equal(d["pred"][0].numpy(), expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"priorities": (1, 1)},
        {"priorities": (-1,)},
        {"fallback": -2},
        {"connectivity": 5},
        {"max_passes": 0},
        {"threshold": 0.5, "scale": 2.0},
        {"scale": 0.0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DifficultPixelRefine(**kwargs)


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({}, (1, 5, 5)),  # one channel: an arg-max map, not probabilities
        ({}, (5, 5)),  # no channel dimension
        ({}, (1, 5, 5, 5, 5)),  # batch dimension left in
        ({"priorities": (1, 7)}, (5, 5, 5)),  # class 7 does not exist
        ({"fallback": 5}, (5, 5, 5)),
        ({"connectivity": 6}, (5, 5, 5)),  # 3D connectivity on a 2D image
    ],
)
def test_bad_inputs(kwargs, shape):
    with pytest.raises(ValueError):
        DifficultPixelRefine(**kwargs)(np.random.rand(*shape).astype(np.float32))


def test_check_num_classes_says_what_to_change():
    DifficultPixelRefine(priorities=(1, 3), fallback=0).check_num_classes(4)
    DifficultPixelRefine().check_num_classes(1)  # no refinement: any class count
    with pytest.raises(ValueError, match=r"must be class indices < num_classes \(3\), got priorities \[1, 3\], fallback 0"):
        DifficultPixelRefine(priorities=(1, 3), fallback=0).check_num_classes(3)
    # a config adds its own keys (inference.json: the flags)
    with pytest.raises(ValueError, match=r"fallback 2: .*filler class.* --refine_fallback$"):
        DifficultPixelRefine(priorities=1, fallback=2).check_num_classes(2, hint=" --refine_fallback")


def test_defaults_refine_nothing():
    """No dataset in the transform: without priorities and fallback the maps are computed, the labels kept."""
    out, conf, diff = DifficultPixelRefine()(make_prob(), return_maps=True)
    np.testing.assert_array_equal(out[0], np.argmax(make_prob(), axis=0))
    np.testing.assert_array_equal(diff[0], DIFFICULT)
    assert not np.array_equal(out[0], EXPECTED_8)
