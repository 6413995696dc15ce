"""Tests of scripts.losses.SoftmaxCrossEntropyLoss."""

from __future__ import annotations

import io
import math

import pytest
import torch

from monai.data import MetaTensor
from scripts.losses import SoftmaxCrossEntropyLoss

LN2 = math.log(2.0)

# Two pixels (1, 2, 1, 2):
#   pixel A logits [0, 0]    -> p = [.5, .5], label 0 -> CE = ln 2
#   pixel B logits [ln 3, 0] -> p = [.75, .25], label 1 -> CE = ln 4 = 2 ln 2
LOGITS = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
IDX_B1 = torch.tensor([[[[0.0, 1.0]]]])  # (B, 1, H, W), float as MONAI loads labels
IDX_B = torch.tensor([[[0, 1]]])  # (B, H, W), long
ONEHOT = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (B, C, H, W)


@pytest.mark.parametrize("target", [IDX_B1, IDX_B, ONEHOT, MetaTensor(IDX_B1)])
@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, 1.5 * LN2),  # (ln2 + 2 ln2) / 2
        ({"weight": [1.0, 3.0]}, 7 / 4 * LN2),  # (1 ln2 + 3 * 2 ln2) / (1 + 3)
        ({"weight": (1.0, 3.0), "reduction": "sum"}, 7 * LN2),  # 1 ln2 + 3 * 2 ln2
        ({"weight": torch.tensor([1.0, 3.0])}, 7 / 4 * LN2),
        ({"ignore_index": 1}, LN2),  # only pixel A counts
    ],
)
def test_hand_computed(kwargs, expected, target):
    assert SoftmaxCrossEntropyLoss(**kwargs)(LOGITS, target).item() == pytest.approx(expected, rel=1e-6)


def test_reduction_none_is_per_pixel():
    out = SoftmaxCrossEntropyLoss(weight=[1.0, 3.0], reduction="none")(LOGITS, IDX_B1)
    assert out.shape == (1, 1, 1, 2)
    torch.testing.assert_close(out.flatten(), torch.tensor([LN2, 3 * 2 * LN2]))


def test_matches_torch_on_random_3d_input():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, 6)
    label = torch.randint(0, 4, (2, 1, 3, 5, 6))
    w = [0.5, 1.0, 2.0, 4.0]
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(w))(logits, label[:, 0])
    torch.testing.assert_close(SoftmaxCrossEntropyLoss(weight=w)(logits, label.float()), ref)


def test_perfect_confident_prediction_is_near_zero():
    label = torch.tensor([[[[0, 1], [2, 1]]]])
    logits = 50.0 * torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).float()
    assert SoftmaxCrossEntropyLoss()(logits, label).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_finite_with_absent_class():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    SoftmaxCrossEntropyLoss(weight=[1.0, 2.0, 0.0])(logits, torch.zeros(1, 1, 4, 4)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_weight_is_a_buffer_following_to():
    loss = SoftmaxCrossEntropyLoss(weight=[1.0, 3.0])
    assert "class_weight" in dict(loss.named_buffers())
    assert loss.to(torch.float64).class_weight.dtype == torch.float64
    assert loss(LOGITS.double(), IDX_B1).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"weight": [1.0, -3.0]}, ValueError),
        ({"weight": [[1.0, 3.0]]}, ValueError),
        ({"weight": 2.0}, ValueError),  # one value per class is required
        ({"weight": [1.0, float("inf")]}, ValueError),
        ({"weight": ["a", "b"]}, TypeError),
        ({"reduction": "avg"}, ValueError),
        ({"ignore_index": 1.5}, ValueError),
        ({"ignore_index": True}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        SoftmaxCrossEntropyLoss(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="3 values but the input has 2 classes"):
        SoftmaxCrossEntropyLoss(weight=[1.0, 2.0, 3.0])(LOGITS, IDX_B1)
    with pytest.raises(ValueError, match="C >= 2"):
        SoftmaxCrossEntropyLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        SoftmaxCrossEntropyLoss()(LOGITS, torch.zeros(1, 3, 1, 2))
    with pytest.raises(ValueError, match="differs"):
        SoftmaxCrossEntropyLoss()(LOGITS, torch.zeros(1, 1, 1, 3))


def test_torchscript_round_trip():
    loss = SoftmaxCrossEntropyLoss(weight=[1.0, 3.0])
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(loss), buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    for target in (IDX_B1, IDX_B, ONEHOT):
        torch.testing.assert_close(loaded(LOGITS, target), loss(LOGITS, target))
