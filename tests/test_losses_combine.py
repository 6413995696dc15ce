"""Tests of scripts.losses.SumLoss and scripts.losses.MultiOutputLoss."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.nn.modules.loss import _Loss

from monai.bundle import ConfigParser
from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss
from scripts.losses import IoULoss, MultiOutputLoss, SoftmaxCrossEntropyLoss, SumLoss

LN2 = math.log(2.0)
G = 1e-5
# Two pixels, two classes: out1 logits give CE = ln 2 (A, label 0) and ln 4 (B, label 1) -> SCE mean = 1.5 ln 2.
OUT1 = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
LABEL = torch.tensor([[[[0.0, 1.0]]]])
# out2 logits 0 everywhere -> softmax .5 everywhere. IoU per class: Σpg = .5, Σp = 1, Σg = 1, union = 1.5
# -> 1 - (.5 + γ)/(1.5 + γ) = 0.666667 for both classes.
OUT2 = torch.zeros(1, 2, 1, 2)
SCE_1 = 1.5 * LN2
IOU_2 = 1 - (0.5 + G) / (1.5 + G)
# out1 under softmax: pixel A p = [.5, .5], pixel B p = [.75, .25].
# class 0: g = [1, 0]: Σpg = .5, Σp = 1.25, Σg = 1, union = 1.75 -> 1 - .5/1.75
# class 1: g = [0, 1]: Σpg = .25, Σp = .75, Σg = 1, union = 1.5  -> 1 - .25/1.5
IOU_1 = ((1 - (0.5 + G) / (1.75 + G)) + (1 - (0.25 + G) / (1.5 + G))) / 2


def sce():
    return SoftmaxCrossEntropyLoss()


def iou():
    return IoULoss(to_onehot_y=True, softmax=True)


def test_sum_loss_hand_computed():
    assert SumLoss([sce(), iou()])(OUT1, LABEL).item() == pytest.approx(SCE_1 + IOU_1, rel=1e-6)
    assert SumLoss([sce(), iou()], weights=[0.5, 2])(OUT1, LABEL).item() == pytest.approx(
        0.5 * SCE_1 + 2 * IOU_1, rel=1e-6
    )


def test_xnet_rule():
    # Loss1 = SCE(out1), Loss2 = IoU(out2), Loss3 = SCE(out3) + IoU(out3); out3 = out1 here
    loss = MultiOutputLoss([sce(), iou(), [sce(), iou()]])
    assert isinstance(loss, _Loss)
    total = loss((OUT1, OUT2, OUT1), LABEL)
    assert total.item() == pytest.approx(SCE_1 + IOU_2 + SCE_1 + IOU_1, rel=1e-6)
    weighted = MultiOutputLoss([sce(), iou(), [sce(), iou()]], weights=[1.0, 0.0, 2.0])((OUT1, OUT2, OUT1), LABEL)
    assert weighted.item() == pytest.approx(SCE_1 + 2 * (SCE_1 + IOU_1), rel=1e-6)


class _Exploding(_Loss):
    def forward(self, input, target):
        raise AssertionError("a loss with weight 0 was computed")


def test_weight_zero_is_not_computed():
    assert SumLoss([sce(), _Exploding()], weights=[1.0, 0.0])(OUT1, LABEL).item() == pytest.approx(SCE_1, rel=1e-6)
    loss = MultiOutputLoss([sce(), _Exploding(), iou()], weights=[1.0, 0.0, 1.0])
    assert loss((OUT1, OUT2, OUT2), LABEL).item() == pytest.approx(SCE_1 + IOU_2, rel=1e-6)


def test_all_weights_zero_gives_zero_with_gradients():
    logits = OUT1.clone().requires_grad_(True)
    total = MultiOutputLoss([_Exploding(), _Exploding()], weights=[0.0, 0.0])((logits, logits * 2), LABEL)
    assert total.item() == 0.0
    total.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0
    assert SumLoss([_Exploding()], weights=[0.0])(logits, LABEL).item() == 0.0


def test_xnet_rule_from_config():
    config = {
        "sce": {"_target_": "scripts.losses.SoftmaxCrossEntropyLoss"},
        "iou": {"_target_": "scripts.losses.IoULoss", "to_onehot_y": True, "softmax": True},
        "loss": {"_target_": "scripts.losses.MultiOutputLoss", "losses": ["@sce", "@iou", ["@sce", "@iou"]]},
    }
    loss = ConfigParser(config).get_parsed_content("loss")
    assert loss((OUT1, OUT2, OUT1), LABEL).item() == pytest.approx(SCE_1 + IOU_2 + SCE_1 + IOU_1, rel=1e-6)


def test_single_tensor_and_per_output_targets():
    assert MultiOutputLoss([sce()])(OUT1, LABEL).item() == pytest.approx(SCE_1, rel=1e-6)
    assert MultiOutputLoss(sce())(OUT1, LABEL).item() == pytest.approx(SCE_1, rel=1e-6)
    # a target per output (e.g. deep supervision): out2 against the label flipped -> same IoU by symmetry
    flipped = 1 - LABEL
    both = MultiOutputLoss([sce(), iou()])([OUT1, OUT2], [LABEL, flipped])
    assert both.item() == pytest.approx(SCE_1 + IOU_2, rel=1e-6)


def test_monai_losses_as_members():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, requires_grad=True)
    label = torch.randint(0, 3, (2, 1, 6, 6)).float()
    members = [
        DiceLoss(to_onehot_y=True, softmax=True),
        TverskyLoss(to_onehot_y=True, softmax=True),
        FocalLoss(to_onehot_y=True),
        DiceCELoss(to_onehot_y=True, softmax=True),
    ]
    expected = sum(w * m(logits, label) for w, m in zip([1.0, 0.5, 2.0, 1.0], members))
    total = SumLoss(members, weights=[1.0, 0.5, 2.0, 1.0])(logits, label)
    torch.testing.assert_close(total, expected)
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_members_follow_to():
    shared = SoftmaxCrossEntropyLoss(weight=[1.0, 2.0])
    loss = MultiOutputLoss([shared, [shared, iou()]]).to(torch.float64)
    assert shared.class_weight.dtype == torch.float64
    assert loss((OUT1.double(), OUT1.double()), LABEL).dtype == torch.float64


def test_output_count_errors():
    with pytest.raises(ValueError, match="returned 1 output"):
        MultiOutputLoss([sce(), iou(), iou()])(OUT1, LABEL)
    with pytest.raises(ValueError, match="returned 2 output"):
        MultiOutputLoss([sce(), iou(), iou()])((OUT1, OUT2), LABEL)
    with pytest.raises(ValueError, match="targets"):
        MultiOutputLoss([sce(), iou()])((OUT1, OUT2), [LABEL])


@pytest.mark.parametrize(
    "cls, args, kwargs, error",
    [
        (SumLoss, ([],), {}, ValueError),
        (SumLoss, (sce(),), {}, TypeError),
        (SumLoss, ([sce(), torch.nn.functional.cross_entropy],), {}, TypeError),
        (SumLoss, ([sce(), iou()],), {"weights": [1.0]}, ValueError),
        (SumLoss, ([sce(), iou()],), {"weights": [1.0, -1.0]}, ValueError),
        (SumLoss, ([sce(), iou()],), {"weights": [1.0, float("nan")]}, ValueError),
        (SumLoss, ([sce(), iou()],), {"weights": "1,1"}, TypeError),
        (SumLoss, ([sce(), iou()],), {"weights": [1.0, "2"]}, ValueError),
        (MultiOutputLoss, ([],), {}, ValueError),
        (MultiOutputLoss, ("sce",), {}, TypeError),
        (MultiOutputLoss, ([sce(), []],), {}, ValueError),
        (MultiOutputLoss, ([sce(), 3],), {}, TypeError),
        (MultiOutputLoss, ([sce(), [iou(), "dice"]],), {}, TypeError),
        (MultiOutputLoss, ([sce(), iou()],), {"weights": [1.0, 1.0, 1.0]}, ValueError),
    ],
)
def test_bad_arguments(cls, args, kwargs, error):
    with pytest.raises(error):
        cls(*args, **kwargs)


def test_trace_round_trip():
    loss = MultiOutputLoss([sce(), iou(), [sce(), iou()]])
    traced = torch.jit.trace(loss, ((OUT1, OUT2, OUT1), LABEL))
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    other = torch.randn(1, 2, 1, 2)
    torch.testing.assert_close(loaded((other, OUT2, other), LABEL), loss((other, OUT2, other), LABEL))
