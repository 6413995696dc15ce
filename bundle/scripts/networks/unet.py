"""The original U-Net (Ronneberger et al. 2015), with ``"same"`` or ``"valid"`` (paper) padding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv
from scripts.networks.blocks import UNetDecoder, UNetEncoder, check_network_args, crop_to, he_init, pad_to_multiple
from scripts.networks.checkpoint import CheckpointLoadMixin
from scripts.networks.config import init_args
from scripts.networks.size_rule import SizeRuleMixin, check_valid_input_size

__all__ = ["UNet"]


class UNet(CheckpointLoadMixin, nn.Module, SizeRuleMixin):
    """The original U-Net, 1D/2D/3D.

    Based on:

        Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation".
        MICCAI 2015, LNCS 9351, pp. 234-241. https://arxiv.org/abs/1505.04597

    Per level two 3x3 convolutions, each followed by a ReLU (and optionally a batch norm between them), a 2x2 max
    pool (stride 2) between levels, a 2x2 stride-2 transposed convolution up to the channel count of the level
    above, concatenation with the skip feature map of that level, and a final 1x1 convolution to ``out_channels``.
    The output is raw logits. Weights use the paper's He initialisation (Gaussian, std ``sqrt(2 / fan_in)``).

    Padding:

    - ``"valid"`` (the paper): unpadded convolutions, the output is smaller than the input and the skip maps are
      centre-cropped. Only some input sizes are valid (``valid_input_size()``, ``output_size()``); with depth 4 a
      572 input gives a 388 output (``margin`` 92 pixels per side). Use it with an overlap-tile inferer.
    - ``"same"``: zero-padded convolutions; to take ANY input size the input is first padded (reflect, or replicate
      when an axis is too small to reflect) up to a multiple of ``size_divisor = 2 ** depth``, split evenly on both
      sides, and the logits are cropped back, so the output has the input's size.

    Dropout (``dropout > 0``): the paper puts it "at the end of the contracting path"; as in the authors' released
    Caffe model, it is applied to the output of the deepest encoder level (before its skip connection and last
    pooling) and to the bottleneck output.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3). Defaults to 2.
        in_channels: number of input channels. Defaults to 1.
        out_channels: number of output channels (classes). Defaults to 2; the bundle's configs pass ``@num_classes``.
        features: channels at each resolution level, shallowest first; the last entry is the bottleneck, and
            ``len(features) - 1`` is the number of poolings (``depth``). Defaults to the paper's
            ``(64, 128, 256, 512, 1024)``.
        padding: ``"same"`` or ``"valid"``, see above. Defaults to ``"same"``.
        batch_norm: batch norm after each 3x3 convolution (which then has no bias). Defaults to False (the paper).
        dropout: dropout rate, see above. Defaults to 0 (none).

    Shapes:
        input ``(B, in_channels, *spatial)``; output ``(B, out_channels, *spatial_out)`` with
        ``spatial_out = spatial`` (same) or ``output_size(s)`` for each axis (valid).

    Attributes:
        num_outputs: 1, the length of what ``forward`` returns in training mode (one tensor).
        padding, depth, size_divisor, margin, receptive_field: the size rule, see
            :class:`scripts.networks.size_rule.SizeRuleMixin`.

    Raises:
        ValueError: for a bad argument (see :func:`scripts.networks.blocks.check_network_args`), and in ``forward``
            (valid mode) for an invalid input size.

    Examples::

        >>> net = UNet(spatial_dims=2, in_channels=1, out_channels=2, padding="valid")
        >>> net.output_size(572), net.margin, net.valid_input_size(388)
        (388, 92, 572)
    """

    num_outputs: int = 1

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
        self._init_size_rule(padding, len(features) - 1)
        conv_padding = 1 if padding == "same" else 0
        self.encoder = UNetEncoder(spatial_dims, in_channels, features, conv_padding, batch_norm, dropout)
        self.decoder = UNetDecoder(spatial_dims, features[-1], features[:-1], features[:-1], conv_padding, batch_norm)
        self.head = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)
        self.apply(he_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            x, starts, size = pad_to_multiple(x, self.size_divisor)
            skips = self.encoder(x)
            return crop_to(self.head(self.decoder(skips[-1], skips[:-1])), starts, size)
        check_valid_input_size(x, self.smallest_input, self.size_divisor)
        skips = self.encoder(x)
        return self.head(self.decoder(skips[-1], skips[:-1]))
