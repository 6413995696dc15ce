"""Inferers: overlap-tile (mirror padded) inference for valid- and same-padding networks, and the mirror-padded
single pass that lets a valid-convolution network train on patches.

- ``tiling``: the overlap-tile geometry (:class:`TileGeometry`);
- ``memory``: memory planning (default budget, activation estimate, the budget search);
- ``memory_format``: channels-last execution for one call;
- ``overlap_tile``, ``mirror_padded``: the inferers.

The padding itself is :func:`scripts.transforms.mirror_pad`.
"""

from .memory import default_memory_budget_mb, estimate_activation_bytes, is_probing
from .memory_format import channels_last_weights, resolve_memory_format
from .mirror_padded import MirrorPaddedInferer
from .overlap_tile import OverlapTileInferer
from .tiling import TileGeometry

__all__ = [
    "MirrorPaddedInferer",
    "OverlapTileInferer",
    "TileGeometry",
    "channels_last_weights",
    "default_memory_budget_mb",
    "estimate_activation_bytes",
    "is_probing",
    "resolve_memory_format",
]
