"""Tests of scripts.losses.IoULoss (Fujii et al., X-Net, eq. 2)."""

from __future__ import annotations

import io

import pytest
import torch

from monai.losses import DiceLoss
from scripts.losses import IoULoss

G = 1e-5  # default smoothing γ

# Binary, one channel, 2x2: p = [1, .5, 0, .5], g = [1, 1, 0, 0]
# Σpg = 1 + .5 = 1.5, Σp = 2, Σg = 2, union = 2 + 2 - 1.5 = 2.5 -> loss = 1 - (1.5 + γ)/(2.5 + γ)
P_BIN = torch.tensor([[[[1.0, 0.5], [0.0, 0.5]]]])
G_BIN = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])

# Two classes, probabilities, class indices [[0, 0], [1, 1]]:
# class 0: p = [.8, .6, .3, .1], g = [1, 1, 0, 0]: Σpg = 1.4, Σp = 1.8, Σg = 2, union = 2.4 -> 1 - 1.4/2.4 = 0.416667
# class 1: p = [.2, .4, .7, .9], g = [0, 0, 1, 1]: Σpg = 1.6, Σp = 2.2, Σg = 2, union = 2.6 -> 1 - 1.6/2.6 = 0.384615
P_2C = torch.tensor([[[[0.8, 0.6], [0.3, 0.1]], [[0.2, 0.4], [0.7, 0.9]]]])
Y_2C = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]]]])
L0 = 1 - (1.4 + G) / (2.4 + G)
L1 = 1 - (1.6 + G) / (2.6 + G)

CASES = [
    ({}, P_BIN, G_BIN, 1 - (1.5 + G) / (2.5 + G)),
    ({"to_onehot_y": True}, P_2C, Y_2C, (L0 + L1) / 2),  # 0.400641
    ({"to_onehot_y": True, "include_background": False}, P_2C, Y_2C, L1),
    ({"to_onehot_y": True, "weight": [1.0, 3.0]}, P_2C, Y_2C, (L0 + 3 * L1) / 2),  # 0.785256
    ({"to_onehot_y": True, "reduction": "sum"}, P_2C, Y_2C, L0 + L1),
    # smoothing 0: exactly 1 - 1.5/2.5 = 0.4
    ({"smooth_nr": 0.0, "smooth_dr": 0.0}, P_BIN, G_BIN, 0.4),
    # sigmoid of logit 0 is .5 everywhere: Σpg = 1, Σp = 2, Σg = 2, union = 3 -> 1 - 1/3
    ({"sigmoid": True}, torch.zeros(1, 1, 2, 2), G_BIN, 1 - (1 + G) / (3 + G)),
]


@pytest.mark.parametrize("kwargs, pred, target, expected", CASES)
def test_hand_computed(kwargs, pred, target, expected):
    assert IoULoss(**kwargs)(pred, target).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_reduction_none_shape_and_values():
    out = IoULoss(to_onehot_y=True, reduction="none")(P_2C, Y_2C)
    assert out.shape == (1, 2, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([L0, L1]), rtol=1e-5, atol=1e-7)


def test_batch_sums_before_dividing():
    # item A: the binary case (loss 0.4); item B: p = 0, g = [0, 0, 0, 1]: Σpg = 0, union = 1 -> loss 1 - γ/(1 + γ)
    pred = torch.cat([P_BIN, torch.zeros(1, 1, 2, 2)])
    target = torch.cat([G_BIN, torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])])
    per_item = IoULoss()(pred, target).item()
    assert per_item == pytest.approx(((1 - (1.5 + G) / (2.5 + G)) + (1 - G / (1 + G))) / 2, rel=1e-5)
    # batch=True: Σpg = 1.5, Σp = 2, Σg = 3, union = 3.5 -> 1 - 1.5/3.5 = 0.571429
    assert IoULoss(batch=True)(pred, target).item() == pytest.approx(1 - (1.5 + G) / (3.5 + G), rel=1e-5)
    assert IoULoss(batch=True, reduction="none")(pred, target).shape == (1, 1, 1, 1)


def test_perfect_prediction_is_zero_even_with_absent_class():
    label = torch.tensor([[[[0, 1, 1], [0, 0, 1], [1, 1, 0]]]])  # class 2 absent
    onehot = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).float()
    assert IoULoss(to_onehot_y=True)(onehot, label).item() == pytest.approx(0.0, abs=1e-6)


def test_matches_monai_jaccard_without_smoothing():
    torch.manual_seed(0)
    pred = torch.softmax(torch.randn(2, 3, 6, 6), 1)
    label = torch.randint(0, 3, (2, 1, 6, 6))
    ours = IoULoss(to_onehot_y=True, smooth_nr=0.0, smooth_dr=0.0)(pred, label)
    ref = DiceLoss(to_onehot_y=True, jaccard=True, smooth_nr=0.0, smooth_dr=0.0)(pred, label)
    torch.testing.assert_close(ours, ref)


def test_gradient_finite_with_absent_class():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    label = torch.zeros(1, 1, 4, 4)  # classes 1 and 2 absent
    IoULoss(to_onehot_y=True, softmax=True)(logits, label).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_scalar_weight_applies_to_all_classes():
    base = IoULoss(to_onehot_y=True)(P_2C, Y_2C)
    assert IoULoss(to_onehot_y=True, weight=2.0)(P_2C, Y_2C).item() == pytest.approx(2 * base.item(), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"other_act": "tanh"}, TypeError),
        ({"sigmoid": True, "softmax": True}, ValueError),
        ({"softmax": True, "other_act": torch.tanh}, ValueError),
        ({"reduction": "average"}, ValueError),
        ({"smooth_nr": -1.0}, ValueError),
        ({"smooth_dr": float("nan")}, ValueError),
        ({"weight": [1.0, -1.0]}, ValueError),
        ({"weight": [[1.0, 2.0]]}, ValueError),
        ({"weight": []}, ValueError),
        ({"weight": "heavy"}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        IoULoss(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="different shape"):
        IoULoss()(P_2C, Y_2C)  # 2 channels vs 1 without to_onehot_y
    with pytest.raises(ValueError, match="weight"):
        IoULoss(to_onehot_y=True, weight=[1.0, 2.0, 3.0])(P_2C, Y_2C)
    with pytest.raises(ValueError, match="weight"):  # include_background=False leaves one class
        IoULoss(to_onehot_y=True, include_background=False, weight=[1.0, 2.0])(P_2C, Y_2C)


def test_weight_buffer_follows_to():
    loss = IoULoss(weight=[1.0, 2.0]).to(torch.float64)
    assert loss.class_weight.dtype == torch.float64


def test_torchscript_round_trip():
    loss = IoULoss(to_onehot_y=True, softmax=True, weight=[1.0, 2.0])
    scripted = torch.jit.script(loss)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    logits = torch.randn(2, 2, 5, 5)
    label = torch.randint(0, 2, (2, 1, 5, 5)).float()
    torch.testing.assert_close(loaded(logits, label), loss(logits, label))
