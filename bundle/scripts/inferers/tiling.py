"""Overlap-tile geometry (Ronneberger et al., U-Net, MICCAI 2015, section 2 and figure 2): how an image is mirror
padded and cut into input tiles whose outputs abut exactly (no blending), so that the tiled result equals one forward
pass of the network over the whole mirror-padded image.

- a **valid-convolution** network (``network.padding == "valid"``: its output is smaller than its input by
  ``network.margin`` pixels on each side) is fed input tiles of ``network.valid_input_size(roi)`` pixels, whose
  outputs of ``roi`` pixels tile the image exactly; the image is mirror padded by ``network.margin``;
- a **same-padding** network (output as large as its input) is fed input tiles that extend ``overlap_border``
  pixels beyond the output tile on every side; that border band of each tile's output, the part that saw the tile's
  own zero padding, is discarded. The image is mirror padded by ``margin``. When ``overlap_border`` is at least how
  far a pixel's receptive field reaches to one side, every kept pixel is computed from exactly the pixels a
  whole-image pass would use.

Tile offsets are kept on the network's pooling grid (multiples of ``network.size_divisor``), so max pooling sees the
same windows in a tile as in the whole image, and the tiled result matches the whole-image pass to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scripts.networks.size_rule import size_rule_of
from scripts.networks.wrappers import unwrap_network

__all__ = [
    "TileGeometry",
    "candidate_strides",
    "ceil_to",
    "context_margins",
    "fixed_strides",
    "network_grid",
    "tile_layout",
]


def ceil_to(value: int, divisor: int) -> int:
    """``value`` rounded up to a multiple of ``divisor``."""
    return -(-value // divisor) * divisor


@dataclass(frozen=True)
class TileGeometry:
    """How :class:`~scripts.inferers.OverlapTileInferer` tiles an image (all sizes in pixels, one value per spatial
    dimension).

    Attributes:
        padding: ``"valid"`` or ``"same"``: the network's padding.
        size_divisor: the network's pooling grid; tile offsets are multiples of it.
        pad: mirror padding added before the image.
        tile_in: input tile size (what the network is fed).
        tile_out: network output size for one input tile.
        stride: kept output per tile (output tiles abut: tile ``i`` covers ``[i * stride, (i + 1) * stride)``).
        crop: offset of the kept output inside a tile's output.
        start: offset of the first input tile in the padded image.
        n_tiles: number of tiles.
        padded_size: size of the mirror-padded image the tiles are cut from.
        activation_bytes: estimated peak activation memory of one forward pass over one tile (bytes), when the
            geometry was chosen from a memory budget; ``None`` for an explicit ``roi_size``.
    """

    padding: str
    size_divisor: int
    pad: tuple[int, ...]
    tile_in: tuple[int, ...]
    tile_out: tuple[int, ...]
    stride: tuple[int, ...]
    crop: tuple[int, ...]
    start: tuple[int, ...]
    n_tiles: tuple[int, ...]
    padded_size: tuple[int, ...]
    activation_bytes: int | None = None

    @property
    def num_tiles(self) -> int:
        """Tiles per image."""
        return math.prod(self.n_tiles)

    @property
    def input_pixels(self) -> int:
        """Pixels the network is run on per image (all tiles together): the compute cost."""
        return self.num_tiles * math.prod(self.tile_in)

    def tile_slices(self, idx: Sequence[int]) -> tuple[slice, ...]:
        """Spatial slices of input tile ``idx`` (tile index per dim) in the padded image."""
        return tuple(
            slice(s0 + i * st, s0 + i * st + ti) for i, s0, st, ti in zip(idx, self.start, self.stride, self.tile_in)
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict (lists instead of tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def network_grid(network: Any) -> tuple[Any, str, int]:
    """``(unwrapped network, padding, size_divisor)`` (for a TorchScript export of a bundle network, its
    :func:`~scripts.networks.size_rule.size_rule_of` instead of the network): a network without a string
    ``padding`` attribute is taken as same-padding (torch's own conv layers have a numeric one), one without
    ``size_divisor`` as divisor 1.

    Raises:
        ValueError: ``network.padding`` is a string other than ``"valid"`` or ``"same"``.
    """
    net = size_rule_of(unwrap_network(network))
    div = int(getattr(net, "size_divisor", 1))
    padding = getattr(net, "padding", None)
    if not isinstance(padding, str):
        padding = "same"
    if padding not in ("valid", "same"):
        raise ValueError(f"network.padding must be 'valid' or 'same', got {padding!r}.")
    return net, padding, div


def context_margins(
    net: Any, padding: str, div: int, margin: int | None, overlap_border: int | None
) -> tuple[int, int]:
    """(mirror pad, discarded band) per side, on the pooling grid; for valid networks (``network.margin``, 0).

    ``margin=None`` (same padding): ``ceil((receptive_field + size_divisor - 2) / 2)``, how far a pixel can read to
    one side; ``overlap_border=None``: ``margin``.

    Raises:
        ValueError: ``margin``/``overlap_border`` given for a valid network, a valid network without ``margin``,
            ``valid_input_size`` or ``output_size``, a same-padding network without ``receptive_field`` and no
            ``margin``, or ``overlap_border > margin``.
    """
    if padding == "valid":
        if margin is not None or overlap_border is not None:
            raise ValueError(
                "margin and overlap_border are for same-padding networks; a valid network's margin is "
                f"network.margin ({getattr(net, 'margin', None)}) and its tiles need no overlap. Leave them None."
            )
        for attr in ("margin", "valid_input_size", "output_size"):
            if not hasattr(net, attr):
                raise ValueError(f"a network with padding='valid' must expose {attr!r} (see scripts.networks.UNet).")
        return int(net.margin), 0
    if margin is None:
        rf = getattr(net, "receptive_field", None)
        if rf is None:
            raise ValueError(
                f"cannot derive the context margin of {type(net).__name__}: it has no 'receptive_field' "
                "attribute. Pass margin=<how far the network reads to one side, in pixels> to "
                "OverlapTileInferer."
            )
        margin = math.ceil((int(rf) + div - 2) / 2)
    border = margin if overlap_border is None else overlap_border
    if border > margin:
        raise ValueError(f"overlap_border ({border}) must not exceed margin ({margin}).")
    return ceil_to(margin, div), ceil_to(border, div)


def tile_layout(
    net: Any, padding: str, div: int, pad: int, border: int, stride: Sequence[int], image_size: Sequence[int]
) -> TileGeometry:
    """The geometry of output tiles of ``stride`` pixels (multiples of ``div``) over an image of ``image_size``."""
    dims = len(image_size)
    if padding == "valid":
        tile_in = [int(net.valid_input_size(s)) for s in stride]
        tile_out = [int(net.output_size(t)) for t in tile_in]
        crop, start = [0] * dims, [0] * dims
    else:
        tile_in = tile_out = [s + 2 * border for s in stride]
        crop, start = [border] * dims, [pad - border] * dims  # first input tile's offset in the padded image
    n_tiles = [math.ceil(s / st) for s, st in zip(image_size, stride)]
    padded = [
        max(st0 + (n - 1) * st + ti, pad + s + pad)  # room for the last tile, and at least `pad` after the image
        for st0, n, st, ti, s in zip(start, n_tiles, stride, tile_in, image_size)
    ]
    return TileGeometry(
        padding=padding,
        size_divisor=div,
        pad=(pad,) * dims,
        tile_in=tuple(tile_in),
        tile_out=tuple(tile_out),
        stride=tuple(stride),
        crop=tuple(crop),
        start=tuple(start),
        n_tiles=tuple(n_tiles),
        padded_size=tuple(padded),
    )


def fixed_strides(roi: Sequence[int], image_size: Sequence[int], div: int) -> list[int]:
    """Output tiles of ``roi`` pixels rounded up to the pooling grid, but no larger than the (grid-rounded) image."""
    return [min(ceil_to(r, div), ceil_to(s, div)) for r, s in zip(roi, image_size)]


def candidate_strides(image_size: Sequence[int], div: int) -> list[list[int]]:
    """Per spatial dimension, the output strides on the pooling grid that split it into ``n = 1, 2, ...`` tiles
    (stride ``ceil(size / n)`` rounded up to the grid), largest first."""
    return [sorted({ceil_to(-(-s // n), div) for n in range(1, -(-s // div) + 1)}, reverse=True) for s in image_size]
