"""Building blocks and the size rule shared by the bundle's U-Net family (:class:`UNet`, :class:`XNet`,
:class:`DoubleUNet`, :class:`EnsembleUNet`).

Every network of the family is made of the same parts, taken from the original U-Net (Ronneberger et al. 2015):

- :class:`ConvBlock`: two 3x3 convolutions, each followed by an optional batch norm and a ReLU;
- :class:`UNetEncoder`: the contracting path, ``len(features)`` conv blocks with a 2x2 max pool (stride 2) between
  them, so ``depth = len(features) - 1`` poolings; the last block is the bottleneck;
- :class:`UNetDecoder`: the expanding path, per level a 2x2 stride-2 transposed convolution (to the channel count of
  that level), concatenation with the (centre-cropped) skip feature map, and a conv block.

Size rule (``padding="valid"``, unpadded 3x3 convolutions as in the paper). Each conv block loses
``L = 4`` pixels (2 per side), a max pool needs an even size. With ``m = 2 ** depth`` the sizes walk as
``s -> s - 4 -> (s - 4) / 2 -> ...`` down and ``b -> 2b - 4`` up, which gives

- an input size ``s`` is valid iff ``s = m * a + L * (m - 1)`` for an integer ``a`` (the size entering the
  bottleneck block) with ``m * a - L * (2m - 1) >= 1`` (at least one output pixel);
- the output size is ``s - 2 * margin`` with ``margin = L * (3m - 2) / 2`` pixels lost per side.

For ``depth = 4`` (the paper): valid inputs are 188, 204, ..., 572, ...; 572 -> 388 and margin 92, as in Fig. 1 of the
paper. With ``padding="same"`` the convolutions are zero-padded by 1 and the network pads its input internally (see
:func:`pad_to_multiple`), so any size is valid and the margin is 0.

:class:`SizeRuleMixin` exposes the rule on each network (``padding``, ``depth``, ``size_divisor``, ``margin``,
``receptive_field``, ``output_size()``, ``valid_input_size()``); an overlap-tile inferer reads it from there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

__all__ = [
    "BLOCK_LOSS",
    "PADDING_MODES",
    "ConvBlock",
    "SizeRuleMixin",
    "UNetDecoder",
    "UNetEncoder",
    "UpBlock",
    "centre_crop",
    "check_network_args",
    "check_valid_input_size",
    "crop_to",
    "dependency_interval",
    "he_init",
    "pad_to_multiple",
    "receptive_field",
    "valid_mode_sizes",
]

PADDING_MODES = ("same", "valid")
#: Pixels lost along each axis by one conv block (two unpadded 3x3 convolutions) in ``padding="valid"`` mode.
BLOCK_LOSS = 4


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
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise TypeError(f"features must be a sequence of positive ints, got {type(features).__name__}.")
    if len(features) < 2:
        raise ValueError(
            f"features must have at least 2 entries (one per resolution level, len(features) - 1 poolings), "
            f"got {tuple(features)!r}; the paper's U-Net uses (64, 128, 256, 512, 1024)."
        )
    for f in features:
        if isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise ValueError(f"features must all be positive ints, got {tuple(features)!r}.")
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}.")
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
        if total > 0:
            pad = [0] * (2 * nd)
            pad[2 * (nd - 1 - d)] = before
            pad[2 * (nd - 1 - d) + 1] = total - before
            mode = "reflect" if total - before < size[d] else "replicate"
            x = F.pad(x, pad, mode=mode)
    return x, starts, size


def check_valid_input_size(x: torch.Tensor, smallest: int, divisor: int) -> None:
    """Raise ``ValueError`` if a spatial size of ``x`` is not a valid ``padding="valid"`` input size
    (``smallest + k * divisor``, ``k >= 0``)."""
    for size in x.shape[2:]:
        if size < smallest or (size - smallest) % divisor != 0:
            raise ValueError(
                "spatial size {} is not a valid input size for padding='valid': valid sizes are {} + k * {}; "
                "use network.valid_input_size() to choose one.".format(size, smallest, divisor)
            )


def _smallest_valid_input(depth: int) -> int:
    """Smallest valid ``padding="valid"`` input size (see the module docstring)."""
    m = 2**depth
    bottleneck_input = -(-(BLOCK_LOSS * (2 * m - 1) + 1) // m)  # ceil: at least one output pixel
    return m * bottleneck_input + BLOCK_LOSS * (m - 1)


def valid_mode_sizes(depth: int, input_size: int) -> tuple[list[int], list[int], int] | None:
    """Walk a valid-mode input size through the network, layer by layer.

    Returns:
        ``(encoder, upsampled, output)``: the size of each encoder block output (``depth + 1`` entries, shallowest
        first, the last is the bottleneck), of each transposed-conv output (``depth`` entries, shallowest first) and
        the output size; ``None`` when a size would drop below 1 or a max pool would get an odd size.
    """
    encoder: list[int] = []
    size = input_size
    for level in range(depth + 1):
        if level > 0:
            if size % 2:
                return None
            size //= 2
        size -= BLOCK_LOSS
        if size < 1:
            return None
        encoder.append(size)
    upsampled = [0] * depth
    for level in reversed(range(depth)):
        # 2 * size < encoder[level] and both are even, so the centre crop of the skip map is exact.
        upsampled[level] = 2 * size
        size = 2 * size - BLOCK_LOSS
        if size < 1:
            return None
    return encoder, upsampled, size


def dependency_interval(depth: int, padding: str, position: int) -> tuple[int, int]:
    """Input interval ``[lo, hi]`` (along one axis, inclusive) that output pixel ``position`` depends on.

    Coordinates: in ``"valid"`` mode output pixel 0 and input pixel 0 are the first pixels of the valid-mode tensors;
    in ``"same"`` mode both are the same pixel of the (internally padded) tensor and the plane is taken as unbounded.
    The interval is the hull of every path through the network: the deep path through the bottleneck and each skip
    connection (with its centre-crop offset in valid mode). It depends on ``position`` modulo ``2 ** depth`` only up
    to a shift, because pooling and up-convolution make the network periodic, not shift-invariant.
    """
    if padding == "valid":
        # the crop offsets do not depend on the input size; read them off the smallest valid input
        encoder, upsampled, _ = valid_mode_sizes(depth, _smallest_valid_input(depth))  # type: ignore[misc]
        offsets = [(encoder[level] - upsampled[level]) // 2 for level in range(depth)]
        conv_lo, conv_hi = 0, 2  # unpadded 3x3 conv: output i reads inputs i .. i + 2
    else:
        offsets = [0] * depth
        conv_lo, conv_hi = -1, 1  # padded 3x3 conv: output i reads inputs i - 1 .. i + 1

    def block(lo: int, hi: int) -> tuple[int, int]:
        return lo + 2 * conv_lo, hi + 2 * conv_hi

    def from_encoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = block(lo, hi)
        for _ in range(level):
            lo, hi = block(2 * lo, 2 * hi + 1)  # max pool 2x2 stride 2, then the conv block below it
        return lo, hi

    def from_decoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = block(lo, hi)  # interval on the concatenation [skip, upsampled] at this level
        skip_lo, skip_hi = from_encoder(level, lo + offsets[level], hi + offsets[level])
        lo, hi = lo // 2, hi // 2  # 2x2 stride-2 up-convolution: output j reads input j // 2
        if level + 1 == depth:
            deep_lo, deep_hi = from_encoder(depth, lo, hi)
        else:
            deep_lo, deep_hi = from_decoder(level + 1, lo, hi)
        return min(skip_lo, deep_lo), max(skip_hi, deep_hi)

    return from_decoder(0, position, position)


def receptive_field(depth: int, padding: str, stages: int = 1) -> int:
    """Theoretical receptive field (pixels, along one axis) of a U-Net-family network: the largest
    :func:`dependency_interval` over the ``2 ** depth`` output phases.

    ``stages > 1``: that many such networks in series, each reading the previous one's output aligned pixel for
    pixel (same padding). Both ends of :func:`dependency_interval` are non-decreasing in the position, so the
    interval of a chain is the first stage's interval of the ends of the later stages' interval.
    """
    widths = []
    for position in range(2**depth):
        lo, hi = position, position
        for _ in range(stages):
            lo, hi = dependency_interval(depth, padding, lo)[0], dependency_interval(depth, padding, hi)[1]
        widths.append(hi - lo + 1)
    return max(widths)


class SizeRuleMixin:
    """Size rule of a U-Net-family network: which input sizes it takes and what output size it returns.

    Attributes (set by :meth:`_init_size_rule`):
        padding: ``"same"`` or ``"valid"``.
        depth: number of poolings (``len(features) - 1``).
        size_divisor: ``2 ** depth``. In valid mode valid input sizes are spaced by it; in same mode the input is
            padded internally to a multiple of it.
        margin: pixels lost per side (``(input - output) / 2``), 0 in same mode.
        receptive_field: theoretical receptive field in pixels along one axis (see :func:`receptive_field`).
    """

    padding: str
    depth: int
    size_divisor: int
    margin: int
    receptive_field: int
    smallest_input: int

    def _init_size_rule(self, padding: str, depth: int) -> None:
        self.padding = padding
        self.depth = depth
        self.size_divisor = 2**depth
        m = self.size_divisor
        self.margin = BLOCK_LOSS * (3 * m - 2) // 2 if padding == "valid" else 0
        self.smallest_input = _smallest_valid_input(depth) if padding == "valid" else 1
        self.receptive_field = receptive_field(depth, padding)

    def _check_size_arg(self, name: str, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")

    def output_size(self, input_size: int) -> int:
        """Output size (along one axis) for an input of ``input_size`` pixels.

        Raises:
            ValueError: when ``input_size`` is not a positive int, or (valid mode) not a valid input size; the
                message names the nearest valid sizes.
        """
        self._check_size_arg("input_size", input_size)
        if self.padding == "same":
            return input_size
        k = (input_size - self.smallest_input) / self.size_divisor
        if input_size < self.smallest_input or not k.is_integer():
            below = self.smallest_input + math.floor(k) * self.size_divisor
            above = self.smallest_input + max(math.ceil(k), 0) * self.size_divisor
            nearest = f"{below} or {above}" if below >= self.smallest_input else f"{above} (the smallest)"
            raise ValueError(
                f"input size {input_size} is not valid for padding='valid' with depth {self.depth}: valid sizes are "
                f"{self.smallest_input} + k * {self.size_divisor} (k >= 0); the nearest are {nearest}."
            )
        return input_size - 2 * self.margin

    def valid_input_size(self, min_output_size: int) -> int:
        """Smallest valid input size (along one axis) whose output size is at least ``min_output_size``.

        Raises:
            ValueError: when ``min_output_size`` is not a positive int.
        """
        self._check_size_arg("min_output_size", min_output_size)
        if self.padding == "same":
            return min_output_size
        k = max(-(-(min_output_size + 2 * self.margin - self.smallest_input) // self.size_divisor), 0)
        return self.smallest_input + k * self.size_divisor
