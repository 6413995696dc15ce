"""Tests of the U-Net border weight map (scripts.transforms.UNetBorderWeightMap[d]) and
scripts.losses.BorderWeightedCELoss."""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai.data import MetaTensor
from monai.transforms import Compose, Flipd, RandAffined, Randomizable, Rotate90d
from scripts.losses import BorderWeightedCELoss
from scripts.transforms import UNetBorderWeightMap, UNetBorderWeightMapd, border_distances

W0, SIGMA = 10.0, 5.0


def border(d1: float, d2: float) -> float:
    return W0 * math.exp(-((d1 + d2) ** 2) / (2 * SIGMA**2))


def two_squares(gap: int) -> np.ndarray:
    """12x12 membrane (class 1) with two 4x4 cells (class 0) at rows 2-5, cols 1-4 and cols 5+gap..8+gap."""
    lab = np.ones((12, 12), dtype=np.int64)
    lab[2:6, 1:5] = 0
    lab[2:6, 5 + gap : 9 + gap] = 0
    return lab[None]


def test_one_pixel_gap_values():
    # distance convention: Euclidean distance between pixel centres, 1 for a pixel next to an object
    w = UNetBorderWeightMap(class_weights=None)(two_squares(gap=1))[0]
    assert w.shape == (12, 12) and w.dtype == np.float32
    assert w[3, 5] == pytest.approx(border(1, 1), rel=1e-6)  # gap pixel: d1 = d2 = 1 -> 10 exp(-4/50) = 9.2312
    # corner (0, 0): nearest cell pixel (2, 1) at sqrt(5), other cell's (2, 6) at sqrt(40)
    assert w[0, 0] == pytest.approx(border(math.sqrt(5), math.sqrt(40)), rel=1e-6)
    assert w[3, 2] == 0.0  # inside a cell: no border term and no class term (class_weights=None)


def test_two_pixel_gap_values():
    w = UNetBorderWeightMap(class_weights=None)(two_squares(gap=2))[0]
    # first gap pixel: d1 = 1 (its own side), d2 = 2 -> 10 exp(-9/50) = 8.3527; both gap columns alike
    assert w[3, 5] == pytest.approx(border(1, 2), rel=1e-6)
    assert w[3, 6] == pytest.approx(border(1, 2), rel=1e-6)


def test_frequency_class_weights_are_added():
    lab = two_squares(gap=1)
    # 144 px: class 0 = 32 px, class 1 = 112 px, K = 2 -> w_c = 144/(2*32) = 2.25 and 144/(2*112) = 0.642857
    w = UNetBorderWeightMap()(lab)[0]
    assert w[3, 2] == pytest.approx(2.25, rel=1e-6)
    assert w[3, 5] == pytest.approx(144 / 224 + border(1, 1), rel=1e-6)
    given = UNetBorderWeightMap(class_weights=[2.0, 0.5, 7.0])(lab)[0]
    assert given[3, 2] == pytest.approx(2.0) and given[3, 5] == pytest.approx(0.5 + border(1, 1), rel=1e-6)
    assert UNetBorderWeightMap(w0=0.0, class_weights=[2.0, 0.5])(lab)[0, 3, 5] == pytest.approx(0.5)


def test_single_object_has_no_border_term():
    lab = np.ones((1, 10, 10), dtype=np.int64)
    lab[0, 3:6, 3:6] = 0
    assert np.all(UNetBorderWeightMap(class_weights=None)(lab) == 0)


def test_object_classes():
    lab = two_squares(gap=1)
    lab[0, 2:6, 5] = 3  # the gap becomes mitochondria: with default objects the three regions merge into one
    assert np.all(UNetBorderWeightMap(class_weights=None)(lab) == 0)
    # objects = class 0 only: the class-3 gap separates two cells again
    w = UNetBorderWeightMap(class_weights=None, object_classes=[0])(lab)[0]
    assert w[3, 5] == pytest.approx(border(1, 1), rel=1e-6)


def brute_force_border(objects: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    comps, n = ndimage.label(objects)
    dists = np.sort(np.stack([ndimage.distance_transform_edt(comps != i) for i in range(1, n + 1)]), axis=0)
    out = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))
    return np.where(objects, 0.0, out)


def test_matches_brute_force_within_truncation():
    rng = np.random.default_rng(0)
    lab = np.ones((48, 48), dtype=np.int64)
    for _ in range(12):
        r, c, h, w = rng.integers(0, 44), rng.integers(0, 44), rng.integers(2, 8), rng.integers(2, 8)
        lab[r : r + h, c : c + w] = 0
    sigma = 2.0  # short reach: truncation (bounding box + 8.6 px) matters on this image
    ours = UNetBorderWeightMap(w0=W0, sigma=sigma, class_weights=None)(lab[None])[0]
    ref = brute_force_border(lab != 1, W0, sigma)
    assert ref.max() > 1.0
    np.testing.assert_allclose(ours, ref, atol=W0 * 1e-4 + 1e-6, rtol=1e-5)


def test_border_distances_convention():
    objects = np.zeros((1, 7), dtype=bool)
    objects[0, 0] = objects[0, 6] = True  # two one-pixel objects 6 apart
    d1, d2 = border_distances(objects, max_distance=100)
    np.testing.assert_allclose(d1[0], [0, 1, 2, 3, 2, 1, 0])
    np.testing.assert_allclose(d2[0], [6, 5, 4, 3, 4, 5, 6])
    d1, d2 = border_distances(objects, max_distance=2)  # beyond reach: inf
    assert np.isinf(d2[0, 3]) and d1[0, 1] == 1


def grid_cells(size: int = 256, step: int = 26) -> np.ndarray:
    lab = np.zeros((size, size), dtype=np.int64)
    lab[np.random.default_rng(0).random((size, size)) < 0.002] = 3  # mitochondria specks inside the cells
    for i in range(0, size, step):
        lab[i : i + 2, :] = 1
        lab[:, i : i + 2] = 1
    return lab


def test_timing_256_with_many_cells():
    lab = grid_cells()
    assert ndimage.label(lab != 1)[1] >= 90
    transform = UNetBorderWeightMap()
    start = time.perf_counter()
    w = transform(lab[None])
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"weight map took {elapsed:.2f} s"
    # a 2-px membrane between two cells: d1 = 1, d2 = 2 on both membrane pixels, plus w_c of membrane
    counts = np.bincount(lab.ravel())
    w_membrane = lab.size / (np.count_nonzero(counts) * counts[1])
    assert w[0, 26, 10] == pytest.approx(w_membrane + border(1, 2), rel=1e-5)
    assert w[0, 27, 10] == pytest.approx(w_membrane + border(1, 2), rel=1e-5)


def test_dict_appends_channel_to_metatensor_and_numpy():
    lab = MetaTensor(torch.from_numpy(two_squares(gap=1)).float(), meta={"filename_or_obj": "x.png"})
    ref = UNetBorderWeightMap()(two_squares(gap=1))
    out = UNetBorderWeightMapd(keys="label")({"label": lab, "image": "untouched"})
    assert isinstance(out["label"], MetaTensor) and out["label"].shape == (2, 12, 12)
    assert out["label"].meta["filename_or_obj"] == "x.png" and out["image"] == "untouched"
    torch.testing.assert_close(out["label"][0], lab[0])
    np.testing.assert_allclose(out["label"][1].numpy(), ref[0], rtol=1e-6)
    out_np = UNetBorderWeightMapd(keys="label")({"label": two_squares(gap=1).astype(np.uint8)})["label"]
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32 and out_np.shape == (2, 12, 12)
    np.testing.assert_allclose(out_np[1], ref[0], rtol=1e-6)


def test_dict_weight_key_leaves_label():
    lab = torch.from_numpy(two_squares(gap=1))
    out = UNetBorderWeightMapd(keys="label", weight_key="weight")({"label": lab})
    assert out["label"] is lab and out["weight"].shape == (1, 12, 12)
    with pytest.raises(ValueError, match="one label key"):
        UNetBorderWeightMapd(keys=["label", "label2"], weight_key="weight")


def test_deterministic_cacheable_and_survives_nearest_augmentation():
    transform = UNetBorderWeightMapd(keys="label")
    assert not isinstance(transform, Randomizable)
    lab = torch.from_numpy(grid_cells(64, 13)[None]).float()
    first = transform({"label": lab})["label"]
    torch.testing.assert_close(first, transform({"label": lab})["label"])
    # flips/rot90 commute with the map: the carried channel equals the map of the moved label
    moved = Compose([Flipd("label", spatial_axis=1), Rotate90d("label")])({"label": first})["label"]
    np.testing.assert_allclose(
        np.asarray(moved[1]), np.asarray(UNetBorderWeightMap()(moved[:1]))[0], rtol=1e-5, atol=1e-6
    )
    # a nearest-neighbour affine only copies values (zero padding aside): classes stay whole, weights stay valid
    aff = RandAffined("label", prob=1.0, rotate_range=0.5, mode="nearest", padding_mode="zeros")
    aff.set_random_state(0)
    out = aff({"label": first})["label"]
    assert set(np.unique(np.asarray(out[0]))) <= set(np.unique(np.asarray(first[0])))
    assert set(np.unique(np.asarray(out[1]))) <= set(np.unique(np.asarray(first[1]))) | {0.0}
    # and the loss takes the batch
    logits = torch.randn(1, 5, 64, 64, requires_grad=True)
    loss = BorderWeightedCELoss()(logits, torch.as_tensor(out)[None])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"w0": -1.0},
        {"w0": float("nan")},
        {"sigma": 0.0},
        {"object_classes": []},
        {"object_classes": "02"},
        {"object_classes": [0, -1]},
        {"object_classes": [0.5]},
        {"class_weights": "inverse"},
        {"class_weights": [1.0, -2.0]},
        {"class_weights": [[1.0, 2.0]]},
        {"class_weights": ["a"]},
    ],
)
def test_transform_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        UNetBorderWeightMap(**kwargs)


def test_transform_bad_labels():
    with pytest.raises(ValueError, match="one channel"):
        UNetBorderWeightMap()(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="one channel"):
        UNetBorderWeightMap()(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="non-integer"):
        UNetBorderWeightMap()(np.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        UNetBorderWeightMap()(np.full((1, 4, 4), -1))
    with pytest.raises(ValueError, match="only 2 values"):
        UNetBorderWeightMap(class_weights=[1.0, 1.0])(np.full((1, 4, 4), 3))


# BorderWeightedCELoss. Two pixels (1, 2, 1, 2): pixel A logits [0, 0], label 0 -> CE = ln 2;
# pixel B logits [ln 3, 0], label 1 -> p1 = 1/4, CE = ln 4 = 2 ln 2.
LN2 = math.log(2.0)
LOGITS = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
TARGET = torch.tensor([[[[0.0, 1.0]], [[2.0, 0.5]]]])  # channel 0 classes [0, 1], channel 1 weights [2, .5]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, 1.5 * LN2),  # (2 ln2 + .5 * 2 ln2) / 2 pixels
        ({"reduction": "sum"}, 3 * LN2),
        ({"weight": [1.0, 3.0]}, 5 * LN2),  # weights [2 + 1, .5 + 3]: (3 ln2 + 3.5 * 2 ln2) / 2
    ],
)
def test_loss_hand_computed(kwargs, expected):
    assert BorderWeightedCELoss(**kwargs)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_loss_none_unit_map_and_zero_weight():
    out = BorderWeightedCELoss(reduction="none")(LOGITS, TARGET)
    assert out.shape == (1, 1, 1, 2)
    torch.testing.assert_close(out.flatten(), torch.tensor([2 * LN2, 0.5 * 2 * LN2]))
    torch.manual_seed(0)
    logits, label = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4)).float()
    ones = torch.cat([label, torch.ones_like(label)], 1)
    ref = torch.nn.functional.cross_entropy(logits, label[:, 0].long())
    torch.testing.assert_close(BorderWeightedCELoss()(logits, ones), ref)
    zero_b = TARGET.clone()
    zero_b[0, 1, 0, 1] = 0.0  # pixel B does not count: (2 ln2 + 0) / 2
    assert BorderWeightedCELoss()(LOGITS, zero_b).item() == pytest.approx(LN2, rel=1e-6)


def test_loss_bad_arguments_and_inputs():
    with pytest.raises(ValueError):
        BorderWeightedCELoss(weight=[1.0, -1.0])
    with pytest.raises(ValueError):
        BorderWeightedCELoss(weight=2.0)
    with pytest.raises(ValueError):
        BorderWeightedCELoss(reduction="mean_batch")
    with pytest.raises(ValueError, match="UNetBorderWeightMapd"):
        BorderWeightedCELoss()(LOGITS, TARGET[:, :1])
    with pytest.raises(ValueError, match="3 values"):
        BorderWeightedCELoss(weight=[1.0, 2.0, 3.0])(LOGITS, TARGET)
    with pytest.raises(ValueError, match="C >= 2"):
        BorderWeightedCELoss()(LOGITS[:, :1], TARGET)
    with pytest.raises(ValueError, match="differs"):
        BorderWeightedCELoss()(LOGITS, torch.zeros(1, 2, 1, 3))


def test_loss_torchscript_round_trip():
    loss = BorderWeightedCELoss(weight=[1.0, 3.0])
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(loss), buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(LOGITS, TARGET), loss(LOGITS, TARGET))
