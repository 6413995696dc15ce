"""Inferers: overlap-tile (mirror padded) inference for valid- and same-padding networks, and the mirror-padded
single pass that lets a valid-convolution network train on patches."""

from .mirror_padded import MirrorPaddedInferer
from .overlap_tile import OverlapTileInferer, mirror_pad

__all__ = ["MirrorPaddedInferer", "OverlapTileInferer", "mirror_pad"]
