"""Tests of scripts.losses.KappaLoss (soft Cohen's kappa, one-vs-rest per class)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from scripts.losses import KappaLoss

G = 1e-5

# Binary 2x2: p = [1, .5, 0, .5], g = [1, 1, 0, 0], N = 4: I = Σpg = 1.5, P = Σp = 2, G = Σg = 2, PG/N = 1
# Cohen: κ = 2(I - PG/N)/(P + G - 2PG/N) = 2(0.5)/(2) = 0.5 -> loss 0.5
#   check with the 2x2 table: TP = 1.5, FP = .5, FN = .5, TN = N - P - G + I = 1.5;
#   po = 3/4, pe = (2*2 + 2*2)/16 = 1/2, κ = (3/4 - 1/2)/(1/2) = 0.5
# zhang2020: 1 - (2I - PG/N)/(P + G - 2I/N) = 1 - (3 - 1)/(4 - 0.75) = 1 - 2/3.25 = 0.384615
P_BIN = torch.tensor([[[[1.0, 0.5], [0.0, 0.5]]]])
G_BIN = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])


def cohen_kappa_2x2(pred: np.ndarray, truth: np.ndarray) -> float:
    """Cohen's kappa of two binary maps from their 2x2 agreement table (independent reference)."""
    pred, truth = pred.astype(bool).ravel(), truth.astype(bool).ravel()
    n = pred.size
    a = np.sum(pred & truth)  # both positive
    b = np.sum(pred & ~truth)
    c = np.sum(~pred & truth)
    d = np.sum(~pred & ~truth)
    po = (a + d) / n
    pe = ((a + b) * (a + c) + (c + d) * (b + d)) / n**2
    return float((po - pe) / (1 - pe))


@pytest.mark.parametrize(
    "kwargs, pred, target, expected",
    [
        ({}, P_BIN, G_BIN, 1 - (1.0 + G) / (2.0 + G)),
        ({"smooth_nr": 0.0, "smooth_dr": 0.0}, P_BIN, G_BIN, 0.5),
        # opposite prediction: I = 0, P = G = 2, κ = 2(0 - 1)/(4 - 2) = -1 -> loss 2
        ({"smooth_nr": 0.0, "smooth_dr": 0.0}, 1 - G_BIN, G_BIN, 2.0),
        ({"variant": "zhang2020", "smooth_nr": 0.0, "smooth_dr": 0.0}, P_BIN, G_BIN, 1 - 2 / 3.25),
        # zhang2020 at a perfect prediction p = g = [1, 0, 0, 0]: I = P = G = 1, N = 4:
        # 1 - (2 - 1/4)/(2 - 2/4) = 1 - 1.75/1.5 = -0.166667 (not 0: it is not Cohen's kappa)
        (
            {"variant": "zhang2020", "smooth_nr": 0.0, "smooth_dr": 0.0},
            torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]),
            torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]),
            1 - 1.75 / 1.5,
        ),
    ],
)
def test_hand_computed(kwargs, pred, target, expected):
    assert KappaLoss(**kwargs)(pred, target).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_hard_onehot_equals_one_minus_cohen_kappa_per_class():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, size=(2, 9, 9))
    pred = np.where(rng.random((2, 9, 9)) < 0.7, truth, rng.integers(0, 4, size=(2, 9, 9)))
    pred_onehot = torch.nn.functional.one_hot(torch.from_numpy(pred), 4).permute(0, 3, 1, 2).float()
    loss = KappaLoss(to_onehot_y=True, reduction="none", smooth_nr=0.0, smooth_dr=0.0)
    out = loss(pred_onehot, torch.from_numpy(truth)[:, None].float())
    assert out.shape == (2, 4, 1, 1)
    expected = [[1 - cohen_kappa_2x2(pred[b] == c, truth[b] == c) for c in range(4)] for b in range(2)]
    np.testing.assert_allclose(out[:, :, 0, 0].numpy(), np.array(expected), rtol=1e-5, atol=1e-6)
    # batch=True: one table over both images
    out_batch = KappaLoss(to_onehot_y=True, reduction="none", smooth_nr=0.0, smooth_dr=0.0, batch=True)(
        pred_onehot, torch.from_numpy(truth)[:, None].float()
    )
    expected_batch = [1 - cohen_kappa_2x2(pred == c, truth == c) for c in range(4)]
    np.testing.assert_allclose(out_batch.flatten().numpy(), np.array(expected_batch), rtol=1e-5, atol=1e-6)


def test_zhang2020_differs_from_cohen():
    assert KappaLoss(variant="zhang2020")(P_BIN, G_BIN).item() != pytest.approx(KappaLoss()(P_BIN, G_BIN).item())


def test_perfect_prediction_is_zero_with_absent_and_full_classes():
    label = torch.zeros(1, 1, 3, 3)  # class 0 everywhere, classes 1, 2 absent: 0/0 cases handled by smoothing
    onehot = torch.nn.functional.one_hot(label[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    assert KappaLoss(to_onehot_y=True)(onehot, label).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_finite_with_absent_class():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    label = torch.zeros(1, 1, 4, 4)
    label[0, 0, 0, 0] = 1  # class 2 absent
    KappaLoss(to_onehot_y=True, softmax=True)(logits, label).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_class_weight_and_reductions():
    pred = torch.cat([P_BIN, 1 - P_BIN], 1)
    target = torch.cat([G_BIN, 1 - G_BIN], 1)
    # one-vs-rest of the complement is the same table mirrored: both classes have κ = 0.5
    per_class = KappaLoss(reduction="none", smooth_nr=0.0, smooth_dr=0.0)(pred, target).flatten()
    torch.testing.assert_close(per_class, torch.tensor([0.5, 0.5]))
    weighted = KappaLoss(weight=[1.0, 3.0], reduction="sum", smooth_nr=0.0, smooth_dr=0.0)(pred, target)
    assert weighted.item() == pytest.approx(0.5 + 1.5)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"variant": "report"}, ValueError),
        ({"variant": "COHEN"}, ValueError),
        ({"sigmoid": True, "softmax": True}, ValueError),
        ({"other_act": 3}, TypeError),
        ({"reduction": "max"}, ValueError),
        ({"smooth_dr": -1e-5}, ValueError),
        ({"weight": [-0.5]}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        KappaLoss(**kwargs)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="different shape"):
        KappaLoss()(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4))


def test_torchscript_round_trip():
    for variant in ("cohen", "zhang2020"):
        loss = KappaLoss(to_onehot_y=True, softmax=True, variant=variant)
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(loss), buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
        logits = torch.randn(2, 3, 5, 5)
        label = torch.randint(0, 3, (2, 1, 5, 5)).float()
        torch.testing.assert_close(loaded(logits, label), loss(logits, label))
