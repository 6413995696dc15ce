"""Baselines the X-Net paper compares with: Double U-Net (two U-Nets in series) and Ensemble U-Net (two U-Nets in
parallel, averaged). Both are built from :class:`~scripts.networks.UNet` and support ``padding="same"`` only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Tuple, Union

import torch
import torch.nn as nn
from scripts.networks.blocks import check_network_args
from scripts.networks.checkpoint import CheckpointLoadMixin
from scripts.networks.config import init_args
from scripts.networks.size_rule import SizeRuleMixin, receptive_field
from scripts.networks.unet import UNet

__all__ = ["DoubleUNet", "EnsembleUNet"]


def _check_same_padding(name: str, padding: str) -> None:
    if padding != "same":
        raise ValueError(
            f"{name} supports padding='same' only, got {padding!r}; valid padding is implemented for UNet and "
            "XNet (use one of them with an overlap-tile inferer)."
        )


class DoubleUNet(CheckpointLoadMixin, nn.Module, SizeRuleMixin):
    """Double U-Net: two U-Nets in series, the second refining the first.

    The first :class:`~scripts.networks.UNet` segments the image; the second takes the image concatenated with the
    first one's class probabilities (softmax over channels; a sigmoid when ``out_channels == 1``) and segments
    again. Probabilities, not logits, are passed on: they are bounded and on the same scale whatever the first
    network's logit magnitude, and they are what the first output means, so the second network starts from
    "what the first one believes". The gradient of the second output flows through the softmax into the first
    network.

    Baseline of Fujii et al., "X-Net with Different Loss Functions for Cell Image Segmentation", CVPR Workshops
    2021 (related: Jha et al., "DoubleU-Net", CBMS 2020, which also chains two encoder-decoders, with a VGG
    encoder and ASPP); each stage is the U-Net of Ronneberger et al., MICCAI 2015.

    ``forward`` returns ``(output1, output2)`` in training mode (so each can be supervised) and ``output2`` in eval
    mode. Raw logits.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3). Defaults to 2.
        in_channels: number of input channels. Defaults to 1.
        out_channels: number of output channels (classes). Defaults to 2; the bundle's configs pass ``@num_classes``.
        features: channels per level of each U-Net. Defaults to ``(64, 128, 256, 512, 1024)``.
        padding: must be ``"same"`` (default).
        batch_norm: batch norm after each 3x3 convolution. Defaults to False.
        dropout: dropout rate at the end of each contracting path. Defaults to 0.

    Shapes:
        input ``(B, in_channels, *spatial)``; each output ``(B, out_channels, *spatial)``.

    Attributes:
        num_outputs: 2, the length of the training-mode output tuple.
        padding, depth, size_divisor, margin, receptive_field: the size rule (the receptive field is that of the
            two U-Nets in series).

    Raises:
        ValueError: for a bad argument, or ``padding != "same"``.
    """

    num_outputs: int = 2

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        padding: str = "same",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        features = check_network_args(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)
        self.init_args = init_args(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)
        _check_same_padding("DoubleUNet", padding)
        self._init_size_rule(padding, len(features) - 1)
        self.receptive_field = receptive_field(self.depth, padding, stages=2)  # two U-Nets in series
        self.unet1 = UNet(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)
        self.unet2 = UNet(
            spatial_dims, in_channels + out_channels, out_channels, features, padding, batch_norm, dropout
        )

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        out1 = self.unet1(x)
        probs = torch.sigmoid(out1) if out1.shape[1] == 1 else torch.softmax(out1, dim=1)
        out2 = self.unet2(torch.cat([x, probs], dim=1))
        if self.training:
            return out1, out2
        return out2


class EnsembleUNet(CheckpointLoadMixin, nn.Module, SizeRuleMixin):
    """Ensemble U-Net: two independent U-Nets on the same input, their logits averaged.

    Baseline of Fujii et al., "X-Net with Different Loss Functions for Cell Image Segmentation", CVPR Workshops
    2021; each member is the U-Net of Ronneberger et al., MICCAI 2015. The two members are initialised
    independently (different random weights) and trained jointly, each with its own loss.

    The ensemble output is the mean of the two members' logits (raw logits, like every network of the bundle;
    the softmax of the mean logits is a normalised geometric mean of the two members' probabilities).
    ``forward`` returns ``(output1, output2, mean)`` in training mode and ``mean`` in eval mode.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3). Defaults to 2.
        in_channels: number of input channels. Defaults to 1.
        out_channels: number of output channels (classes). Defaults to 2; the bundle's configs pass ``@num_classes``.
        features: channels per level of each U-Net. Defaults to ``(64, 128, 256, 512, 1024)``.
        padding: must be ``"same"`` (default).
        batch_norm: batch norm after each 3x3 convolution. Defaults to False.
        dropout: dropout rate at the end of each contracting path. Defaults to 0.

    Shapes:
        input ``(B, in_channels, *spatial)``; each output ``(B, out_channels, *spatial)``.

    Attributes:
        num_outputs: 3, the length of the training-mode output tuple.

    Raises:
        ValueError: for a bad argument, or ``padding != "same"``.
    """

    num_outputs: int = 3

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        padding: str = "same",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        features = check_network_args(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)
        self.init_args = init_args(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)
        _check_same_padding("EnsembleUNet", padding)
        self._init_size_rule(padding, len(features) - 1)
        self.unet1 = UNet(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)
        self.unet2 = UNet(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        out1 = self.unet1(x)
        out2 = self.unet2(x)
        mean = 0.5 * (out1 + out2)
        if self.training:
            return out1, out2, mean
        return mean
