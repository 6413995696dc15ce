"""Inferers: overlap-tile (mirror padded) inference for valid- and same-padding networks."""

from .overlap_tile import OverlapTileInferer, mirror_pad

__all__ = ["OverlapTileInferer", "mirror_pad"]
