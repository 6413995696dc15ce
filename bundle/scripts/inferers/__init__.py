"""Inferers: overlap-tile (mirror padded) inference for valid- and same-padding networks, and the mirror-padded
single pass that lets a valid-convolution network train on patches."""

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
    "default_memory_budget_mb",
    "estimate_activation_bytes",
    "mirror_pad",
    "unwrap_network",
]
