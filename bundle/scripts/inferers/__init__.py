"""Inferers: overlap-tile (mirror padded) inference for valid- and same-padding networks, and the mirror-padded
single pass that lets a valid-convolution network train on patches."""

from .memory_format import channels_last_weights, resolve_memory_format
from .mirror_padded import MirrorPaddedInferer
from .overlap_tile import (
    OverlapTileInferer,
    TileGeometry,
    default_memory_budget_mb,
    estimate_activation_bytes,
    mirror_pad,
    unwrap_network,
)

__all__ = [
    "MirrorPaddedInferer",
    "OverlapTileInferer",
    "TileGeometry",
    "channels_last_weights",
    "default_memory_budget_mb",
    "estimate_activation_bytes",
    "mirror_pad",
    "resolve_memory_format",
    "unwrap_network",
]
