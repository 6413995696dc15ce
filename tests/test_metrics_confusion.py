"""Confusion-matrix metrics: hand-computed values, NaN handling, MONAI cumulative-metric behaviour."""

import math

import pytest
import torch

from scripts.metrics import SegmentationConfusionMatrix, confusion_matrix, per_image_scores, scores_from_confusion

# 2x2 image, 3 classes.  truth [[0, 1], [2, 2]], prediction [[0, 1], [1, 2]]
PRED = torch.tensor([[[[0, 1], [1, 2]]]])
TRUTH = torch.tensor([[[[0, 1], [2, 2]]]])


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(PRED, TRUTH, 3)
    # rows = truth, cols = prediction: the truth-2 pixel predicted 1 is the only error
    expected = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 1, 1]]])
    assert torch.equal(cm, expected)


def test_one_hot_and_index_inputs_agree():
    one_hot = torch.nn.functional.one_hot(PRED[:, 0], 3).permute(0, 3, 1, 2).float()
    assert torch.equal(confusion_matrix(one_hot, TRUTH, 3), confusion_matrix(PRED, TRUTH, 3))


def test_scores_hand_computed():
    s = scores_from_confusion(confusion_matrix(PRED, TRUTH, 3)[0])
    # class 1: tp 1, fp 1, fn 0 -> IoU 1/2, Dice 2/3, precision 1/2, recall 1
    # class 2: tp 1, fp 0, fn 1 -> IoU 1/2, Dice 2/3, precision 1, recall 1/2
    assert torch.allclose(s["iou"], torch.tensor([1.0, 0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(s["dice"], torch.tensor([1.0, 2 / 3, 2 / 3], dtype=torch.float64))
    assert torch.allclose(s["precision"], torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(s["recall"], torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64))


def test_absent_class_is_nan_not_zero():
    # class 2 appears in neither image
    s = scores_from_confusion(confusion_matrix(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3)[0])
    assert s["iou"][0] == 1.0 and math.isnan(s["iou"][2]) and math.isnan(s["precision"][2])


def test_accumulated_differs_from_per_image_mean():
    # image A: all 4 pixels class 0, predicted right; image B: 1 pixel of class 1, predicted 0
    pred = torch.zeros(2, 1, 2, 2)
    truth = torch.zeros(2, 1, 2, 2)
    truth[1, 0, 0, 0] = 1
    cms = confusion_matrix(pred, truth, 2)
    acc = scores_from_confusion(cms.sum(0))["iou"]
    # accumulated: class 0 tp 7, fn 0, fp 1 -> 7/8; class 1 tp 0 -> 0
    assert torch.allclose(acc, torch.tensor([7 / 8, 0.0], dtype=torch.float64))
    img = per_image_scores(cms)
    # per image: A -> class0 IoU 1 (class 1 undefined); B -> class0 3/4, class1 0
    assert torch.allclose(img["iou"], torch.tensor([(1 + 0.75) / 2, 0.0], dtype=torch.float64))
    # per-image mIoU: A = 1, B = (0.75 + 0) / 2 -> mean 0.6875
    assert float(img["mean_iou"]) == pytest.approx(0.6875)


def test_cumulative_metric_accumulates_and_resets():
    m = SegmentationConfusionMatrix(num_classes=3)
    m(PRED, TRUTH)
    m(TRUTH, TRUTH)
    # summed matrix [[2,0,0],[0,2,0],[0,1,3]]: IoU 1, 2/3, 3/4
    assert float(m.aggregate()) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m.get_buffer().shape == (2, 3, 3)
    m.reset()
    with pytest.raises(RuntimeError, match="no data"):
        m.aggregate()


def test_exclude_background_and_per_class():
    m = SegmentationConfusionMatrix(num_classes=3, include_background=False, reduction="none")
    m(PRED, TRUTH)
    assert torch.allclose(m.aggregate(), torch.tensor([0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_classes": 1}, "at least 2"), ({"num_classes": 3, "reduction": "sum"}, "reduction")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentationConfusionMatrix(**kwargs)


def test_out_of_range_and_shape_errors():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(PRED, TRUTH + 5, 3)
    with pytest.raises(ValueError, match="same pixels"):
        confusion_matrix(PRED, torch.zeros(1, 1, 3, 3), 3)
