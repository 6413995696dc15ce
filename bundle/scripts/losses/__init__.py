"""Losses for multi-class cell-image segmentation, MONAI style (``torch.nn.modules.loss._Loss`` subclasses).

- :class:`IoULoss`: soft IoU (Jaccard), Fujii et al. (X-Net) eq. 2.
- :class:`KappaLoss`: 1 - soft Cohen's kappa per class (one-vs-rest).
- :class:`SoftmaxCrossEntropyLoss`: class-weighted softmax cross-entropy; :func:`compute_class_weights`.
- :class:`BorderWeightedCELoss`: U-Net's pixel-weighted cross-entropy (weight map from
  :class:`scripts.transforms.UNetBorderWeightMapd`).
- :class:`SumLoss`, :class:`MultiOutputLoss`: weighted sums on one output / one loss per network output.
"""

from .border import BorderWeightedCELoss
from .class_weights import CLASS_WEIGHT_MODES, compute_class_weights
from .combine import MultiOutputLoss, SumLoss
from .cross_entropy import SoftmaxCrossEntropyLoss
from .iou import IoULoss
from .kappa import KappaLoss

__all__ = [
    "BorderWeightedCELoss",
    "CLASS_WEIGHT_MODES",
    "IoULoss",
    "KappaLoss",
    "MultiOutputLoss",
    "SoftmaxCrossEntropyLoss",
    "SumLoss",
    "compute_class_weights",
]
