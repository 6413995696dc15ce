"""Tests of scripts.losses.compute_class_weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.losses import compute_class_weights

# Known histogram, num_classes = 4 (class 3 absent):
#   L1 (2x3): 0 0 0 / 0 1 1 -> n0 = 4, n1 = 2
#   L2 (2x2): 0 1 / 2 2     -> n0 = 1, n1 = 1, n2 = 2
# totals n = [5, 3, 2, 0], N = 10, C = 4
L1 = np.array([[0, 0, 0], [0, 1, 1]], dtype=np.uint8)
L2 = np.array([[0, 1], [2, 2]], dtype=np.uint8)

# inverse N / (C n_c): [10/20, 10/12, 10/8] = [0.5, 0.833333, 1.25]; absent class 3 -> max = 1.25
INVERSE = [0.5, 10 / 12, 1.25, 1.25]
# median frequency: f_c = n_c / N_c, N_c = pixels of the images holding c:
#   f0 = 5/10 = .5, f1 = 3/10 = .3, f2 = 2/4 = .5; median .5 -> w = [1, .5/.3, 1], absent -> max = 1.666667
MEDIAN = [1.0, 0.5 / 0.3, 1.0, 0.5 / 0.3]


@pytest.fixture()
def label_files(tmp_path):
    paths = []
    for name, arr in (("l1.png", L1), ("l2.png", L2)):
        Image.fromarray(arr).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


@pytest.mark.parametrize("mode, expected", [("inverse", INVERSE), ("median", MEDIAN), ("none", [1.0] * 4)])
def test_known_histogram_arrays(mode, expected):
    out = compute_class_weights([L1, torch.from_numpy(L2)], 4, mode=mode)
    assert isinstance(out, list) and all(isinstance(w, float) for w in out)
    np.testing.assert_allclose(out, expected, rtol=1e-9)


def test_files_and_datalist_dicts(label_files):
    np.testing.assert_allclose(compute_class_weights(label_files, 4), INVERSE, rtol=1e-9)
    datalist = [{"image": "unused.tif", "label": p} for p in label_files]
    np.testing.assert_allclose(compute_class_weights(datalist, 4, mode="median"), MEDIAN, rtol=1e-9)


def test_absent_weight_and_single_item():
    np.testing.assert_allclose(compute_class_weights([L1, L2], 4, absent_weight=0.0), INVERSE[:3] + [0.0])
    # one array: n = [4, 2], N = 6, C = 2 -> [6/8, 6/4]
    np.testing.assert_allclose(compute_class_weights(L1, 2), [0.75, 1.5])


def test_balanced_histogram_gives_ones():
    np.testing.assert_allclose(compute_class_weights([np.array([[0, 1], [2, 3]])], 4), [1.0] * 4)


def test_out_of_range_value_names_the_file(label_files, tmp_path):
    bad = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).save(bad)
    with pytest.raises(ValueError, match="grey.png"):
        compute_class_weights(label_files + [str(bad)], 4)
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        compute_class_weights([np.array([[-1, 0]])], 4)
    with pytest.raises(ValueError, match="non-integer"):
        compute_class_weights([np.array([[0.5, 0.0]])], 4)


@pytest.mark.parametrize(
    "labels, kwargs, error",
    [
        ([L1], {"num_classes": 0}, ValueError),
        ([L1], {"num_classes": 2.0}, ValueError),
        ([L1], {"num_classes": 2, "mode": "log"}, ValueError),
        ([L1], {"num_classes": 2, "absent_weight": -1.0}, ValueError),
        ([L1], {"num_classes": 2, "absent_weight": float("inf")}, ValueError),
        ([], {"num_classes": 2}, ValueError),
        ([{"image": "x.tif"}], {"num_classes": 2}, ValueError),
        ([3], {"num_classes": 2}, TypeError),
        ([np.zeros((0,))], {"num_classes": 2}, ValueError),
    ],
)
def test_bad_arguments(labels, kwargs, error):
    with pytest.raises(error):
        compute_class_weights(labels, **kwargs)
