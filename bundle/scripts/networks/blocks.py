"""Building blocks shared by the bundle's U-Net family (:class:`UNet`, :class:`XNet`,
:class:`DoubleUNet`, :class:`EnsembleUNet`).

Every network of the family is made of the same parts, taken from the original U-Net (Ronneberger et al. 2015):

- :class:`ConvBlock`: two 3x3 convolutions, each followed by an optional batch norm and a ReLU;
- :class:`UNetEncoder`: the contracting path, ``len(features)`` conv blocks with a 2x2 max pool (stride 2) between
  them, so ``depth = len(features) - 1`` poolings; the last block is the bottleneck;
- :class:`UNetDecoder`: the expanding path, per level a 2x2 stride-2 transposed convolution (to the channel count of
  that level), concatenation with the (centre-cropped) skip feature map, and a conv block.

The size rule these blocks obey (valid and same padding) lives in :mod:`scripts.networks.size_rule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool
from scripts.checks import check_option, check_positive_int, is_int

__all__ = [
    "PADDING_MODES",
    "ConvBlock",
    "UNetDecoder",
    "UNetEncoder",
    "UpBlock",
    "centre_crop",
    "check_network_args",
    "crop_to",
    "he_init",
    "pad_to_multiple",
]

PADDING_MODES = ("same", "valid")


def check_network_args(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    features: Sequence[int],
    padding: str,
    batch_norm: bool,
    dropout: float,
) -> tuple[int, ...]:
    """Validate the arguments every network of the family takes; return ``features`` as a tuple of ints.

    Raises:
        ValueError: when ``spatial_dims`` is not 1, 2 or 3, a channel count or a feature count is not a positive
            int, ``features`` has fewer than 2 entries, ``padding`` is not ``"same"``/``"valid"`` or ``dropout`` is
            not in ``[0, 1)``.
        TypeError: when ``features`` is not a sequence of ints or ``batch_norm`` is not a bool.
    """
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
    check_positive_int("in_channels", in_channels)
    check_positive_int("out_channels", out_channels)
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise TypeError(f"features must be a sequence of positive ints, got {type(features).__name__}.")
    if len(features) < 2:
        raise ValueError(
            f"features must have at least 2 entries (one per resolution level, len(features) - 1 poolings), "
            f"got {tuple(features)!r}; the paper's U-Net uses (64, 128, 256, 512, 1024)."
        )
    if not all(is_int(f, 1) for f in features):
        raise ValueError(f"features must all be positive ints, got {tuple(features)!r}.")
    check_option("padding", padding, PADDING_MODES)
    if not isinstance(batch_norm, bool):
        raise TypeError(f"batch_norm must be a bool, got {type(batch_norm).__name__}.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}.")
    return tuple(int(f) for f in features)


def he_init(module: nn.Module) -> None:
    """Initialise convolution weights as in the U-Net paper: Gaussian with std ``sqrt(2 / N)``, ``N`` the number of
    incoming values of one output value (He et al. 2015); biases to 0. Meant for ``module.apply(he_init)``.

    For a transposed convolution whose stride equals its kernel (the 2x2 up-convolution), each output value sees
    one input pixel per input channel, so ``N = in_channels * prod(kernel) / prod(stride)``.
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        if module.transposed:
            fan_in = module.in_channels * kernel / math.prod(module.stride)
        else:
            fan_in = module.in_channels // module.groups * kernel
        nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by an optional batch norm and a ReLU.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels (of both convolutions).
        conv_padding: zero padding of the convolutions, 1 (size preserving) or 0 (valid, loses 2 pixels per conv).
        batch_norm: add a batch norm after each convolution (the convolutions then have no bias).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, conv_padding: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(
                Conv[Conv.CONV, spatial_dims](
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel_size=3,
                    padding=conv_padding,
                    bias=not batch_norm,
                )
            )
            if batch_norm:
                layers.append(Norm[Norm.BATCH, spatial_dims](out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNetEncoder(nn.Module):
    """Contracting path of a U-Net.

    ``len(features)`` conv blocks with a 2x2 max pool (stride 2) before every block but the first. Dropout (as in the
    paper, "at the end of the contracting path"; as in the authors' Caffe model and the common Keras port, with
    rate ``dropout``) is applied to the outputs of the last two blocks: the deepest encoder level (which feeds both
    its skip connection and the last pooling) and the bottleneck.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        features: output channels of each block, shallowest first; the last entry is the bottleneck.
        conv_padding: 1 (same) or 0 (valid).
        batch_norm: batch norm after each convolution.
        dropout: dropout rate on the last two block outputs (0 disables it).

    Returns (forward):
        the list of the ``len(features)`` block outputs, shallowest first (the last one is the bottleneck).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int],
        conv_padding: int,
        batch_norm: bool,
        dropout: float,
    ):
        super().__init__()
        blocks = []
        channels = in_channels
        for f in features:
            blocks.append(ConvBlock(spatial_dims, channels, f, conv_padding, batch_norm))
            channels = f
        self.blocks = nn.ModuleList(blocks)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.first_dropout_level = len(features) - 2

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outputs: List[torch.Tensor] = []
        for level, block in enumerate(self.blocks):
            if level > 0:
                x = self.pool(x)
            x = block(x)
            if level >= self.first_dropout_level:
                x = self.dropout(x)
            outputs.append(x)
        return outputs


def centre_crop(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Crop the spatial dimensions of ``x`` (``(B, C, *spatial)``) around their centre to ``size``."""
    for d in range(len(size)):
        start = (x.shape[d + 2] - size[d]) // 2
        x = x.narrow(d + 2, start, size[d])
    return x


def crop_to(x: torch.Tensor, starts: List[int], size: List[int]) -> torch.Tensor:
    """Crop the spatial dimensions of ``x`` to ``[starts[d], starts[d] + size[d])``."""
    for d in range(len(size)):
        x = x.narrow(d + 2, starts[d], size[d])
    return x


class UpBlock(nn.Module):
    """One expanding-path level: 2x2 stride-2 transposed conv to ``out_channels``, concatenation
    ``[skip, upsampled]`` with the skip map centre-cropped to the upsampled size, then a :class:`ConvBlock`."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        conv_padding: int,
        batch_norm: bool,
    ):
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(spatial_dims, skip_channels + out_channels, out_channels, conv_padding, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = centre_crop(skip, x.shape[2:])
        return self.conv(torch.cat([skip, x], dim=1))


class UNetDecoder(nn.Module):
    """Expanding path of a U-Net.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of the bottleneck map it starts from.
        skip_channels: channels of the skip map at each level, shallowest first (``depth`` entries).
        features: output channels at each level, shallowest first (``depth`` entries).
        conv_padding: 1 (same) or 0 (valid).
        batch_norm: batch norm after each convolution.

    Returns (forward ``(x, skips)``, ``skips`` shallowest first):
        the shallowest decoder map, ``features[0]`` channels.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: Sequence[int],
        features: Sequence[int],
        conv_padding: int,
        batch_norm: bool,
    ):
        super().__init__()
        ups = []
        channels = in_channels
        for level in reversed(range(len(features))):
            ups.append(UpBlock(spatial_dims, channels, skip_channels[level], features[level], conv_padding, batch_norm))
            channels = features[level]
        self.ups = nn.ModuleList(ups)
        self.depth = len(features)

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        for i, up in enumerate(self.ups):
            x = up(x, skips[self.depth - 1 - i])
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, List[int], List[int]]:
    """Pad each spatial dimension of ``x`` up to a multiple of ``multiple``, split evenly before/after.

    Reflect padding where the input allows it (pad smaller than the size of that dimension), replicate otherwise
    (tiny inputs).

    Returns:
        the padded tensor, the pad before each spatial dimension (crop starts) and the original spatial size,
        for :func:`crop_to`.
    """
    size: List[int] = list(x.shape[2:])
    nd = len(size)
    starts: List[int] = []
    for d in range(nd):
        total = (multiple - size[d] % multiple) % multiple
        before = total // 2
        starts.append(before)
        # traced (ONNX export): pad even by 0, so that the graph records the pad amounts computed from the input's
        # size and takes any size, not only the one it was traced with
        if total > 0 or torch.jit.is_tracing():
            pad = [0] * (2 * nd)
            pad[2 * (nd - 1 - d)] = before
            pad[2 * (nd - 1 - d) + 1] = total - before
            mode = "reflect" if total - before < size[d] else "replicate"
            x = F.pad(x, pad, mode=mode)
    return x, starts, size
