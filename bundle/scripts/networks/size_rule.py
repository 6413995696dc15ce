"""The size rule of the bundle's U-Net family: which input sizes a network takes, what it returns, its margin
and receptive field.

Size rule (``padding="valid"``, unpadded 3x3 convolutions as in the paper). Each conv block loses
``L = 4`` pixels (2 per side), a max pool needs an even size. With ``m = 2 ** depth`` the sizes walk as
``s -> s - 4 -> (s - 4) / 2 -> ...`` down and ``b -> 2b - 4`` up, which gives

- an input size ``s`` is valid iff ``s = m * a + L * (m - 1)`` for an integer ``a`` (the size entering the
  bottleneck block) with ``m * a - L * (2m - 1) >= 1`` (at least one output pixel);
- the output size is ``s - 2 * margin`` with ``margin = L * (3m - 2) / 2`` pixels lost per side.

For ``depth = 4`` (the paper): valid inputs are 188, 204, ..., 572, ...; 572 -> 388 and margin 92, as in Fig. 1 of the
paper. With ``padding="same"`` the convolutions are zero-padded by 1 and the network pads its input internally (see
:func:`scripts.networks.blocks.pad_to_multiple`), so any size is valid and the margin is 0.

:class:`SizeRuleMixin` exposes the rule on each network (``padding``, ``depth``, ``size_divisor``, ``margin``,
``receptive_field``, ``output_size()``, ``valid_input_size()``); an overlap-tile inferer reads it from there, or
from :func:`size_rule_of` for a TorchScript export (which keeps the attributes but not the methods).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from scripts.checks import check_positive_int

__all__ = [
    "BLOCK_LOSS",
    "SizeRuleMixin",
    "size_rule_of",
    "check_valid_input_size",
    "dependency_interval",
    "receptive_field",
    "valid_mode_sizes",
]

#: Pixels lost along each axis by one conv block (two unpadded 3x3 convolutions) in ``padding="valid"`` mode.
BLOCK_LOSS = 4


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
        check_positive_int(name, value)

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


class _SizeRule(SizeRuleMixin):
    """The size rule of a network, from its attributes alone."""

    def __init__(self, network: Any) -> None:
        for name in ("padding", "depth", "size_divisor", "margin", "receptive_field", "smallest_input"):
            setattr(self, name, getattr(network, name))


_RULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def size_rule_of(network: Any) -> Any:
    """What carries ``network``'s size rule: the network itself, or for a TorchScript export of one of the bundle's
    networks (its ``padding``, ``margin``, ... attributes kept, ``output_size()``/``valid_input_size()`` not) an
    object with the rule's attributes and methods (one per network, so caches keyed by it keep working)."""
    if hasattr(network, "valid_input_size") or not hasattr(network, "smallest_input"):
        return network  # a network with its methods, or none of the bundle's: taken as it is
    if network not in _RULES:
        _RULES[network] = _SizeRule(network)
    return _RULES[network]
