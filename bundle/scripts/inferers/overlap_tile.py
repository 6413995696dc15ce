"""Overlap-tile inference (Ronneberger et al., U-Net, MICCAI 2015, section 2 and figure 2).

An image of any size is predicted a batch of tiles at a time. The image is mirror padded so that pixels at its
border see mirrored context instead of zeros, the tiles' *outputs* abut exactly (no blending), and the result is
the same as one forward pass of the network over the whole mirror-padded image:

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

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.meta_tensor import MetaTensor
from monai.inferers import Inferer
from monai.utils import optional_import

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["OverlapTileInferer", "mirror_pad"]

logger = logging.getLogger(__name__)

PAD_MODES = ("reflect", "replicate", "constant")


def mirror_pad(image: torch.Tensor, pads: Sequence[tuple[int, int]], mode: str = "reflect") -> torch.Tensor:
    """Pad the spatial dimensions of ``image``, with pads of any size.

    ``torch.nn.functional.pad`` in ``"reflect"`` mode refuses pads as large as the image; this pads repeatedly, which
    gives the even (mirror) periodic extension of the image, so a pad may exceed the image size (an image smaller
    than one tile). A spatial dimension of a single pixel is repeated (its mirror image is itself).

    Args:
        image: (B, C, *spatial) tensor.
        pads: one ``(before, after)`` pair of non-negative pad widths per spatial dimension, in order.
        mode: ``"reflect"`` (mirror without repeating the edge pixel, as in the U-Net paper), ``"replicate"``
            (repeat the edge pixel) or ``"constant"`` (zeros).

    Returns:
        The padded tensor, same dtype and device.

    Raises:
        ValueError: ``mode`` is not one of the above, or ``pads`` does not give one non-negative pair per spatial
            dimension.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}.")
    spatial_dims = image.ndim - 2
    if len(pads) != spatial_dims or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise ValueError(f"pads must give one (before, after) pair of non-negative ints per spatial dim, got {pads}.")
    for dim, (before, after) in enumerate(pads):
        axis = 2 + dim
        while before > 0 or after > 0:
            size = image.shape[axis]
            # reflect can add at most size - 1 pixels per pass; a single pixel can only be replicated
            step = size - 1 if mode == "reflect" and size > 1 else max(before, after)
            pass_mode = "replicate" if mode == "reflect" and size == 1 else mode
            b, a = min(before, step), min(after, step)
            # F.pad takes (last dim before, last dim after, previous dim before, ...) for all spatial dims
            torch_pad = [0, 0] * (image.ndim - 1 - axis) + [b, a] + [0, 0] * dim
            image = F.pad(image, torch_pad, mode=pass_mode) if pass_mode != "constant" else F.pad(image, torch_pad)
            before, after = before - b, after - a
    return image


def _unwrap(network: Any) -> Any:
    """The module that carries the geometry attributes: through DataParallel/DDP (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(network, "_orig_mod", None)
        if inner is None:
            inner = getattr(network, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return network
        network = inner


class OverlapTileInferer(Inferer):
    """Overlap-tile inference (U-Net paper, figure 2) for networks with valid or same padding.

    The image (B, C, H, W) (any size, larger or smaller than a tile) is mirror padded, cut into input tiles whose
    outputs abut exactly, predicted ``sw_batch_size`` tiles per forward pass and cropped back to (B, C_out, H, W).
    The network's geometry is read from its attributes (``scripts.networks.UNet`` and ``XNet`` have them all, also
    through DataParallel/DDP/``torch.compile`` wrappers):

    - ``padding``: ``"valid"`` or ``"same"``. A network without it is taken as same-padding (e.g. MONAI's
      ``BasicUNet`` or any callable).
    - ``margin`` (valid): pixels lost on each side; ``valid_input_size(n)`` and ``output_size(n)`` (valid): the input
      size giving an output of at least ``n`` pixels, and the output size of an input.
    - ``size_divisor``: the pooling grid (``2 ** depth``); tile offsets and same-mode tile sizes are multiples of it.
      Taken as 1 when absent.
    - ``receptive_field`` (same): the theoretical receptive field in pixels, used for the default ``margin``.

    Geometry, per spatial dimension, with ``d = size_divisor`` and ``r = roi_size`` rounded up to a multiple of
    ``d`` (and down to the image size rounded up to ``d``, so a small image is one small tile):

    - valid: input tile ``valid_input_size(r)``, output stride ``r``; the image is mirror padded by
      ``network.margin`` and the result equals the network applied to the whole mirror-padded image.
    - same: input tile ``r + 2 * overlap_border``, output stride ``r``; each tile's outer ``overlap_border`` output
      pixels are discarded; the image is mirror padded by ``margin``. With ``overlap_border`` (default: ``margin``)
      at least how far a pixel's receptive field reaches to one side (the default margin is), the result equals the
      network applied to the whole image mirror padded by ``margin`` (to float rounding); a smaller
      ``overlap_border`` trades accuracy at tile seams for speed.

    Compute cost is about ``(input tile / r) ** 2`` times a whole-image pass, e.g. ``(480 / 256) ** 2 = 3.5`` for a
    same-padding depth-4 U-Net with ``roi_size=256`` (valid: ``(444 / 256) ** 2 = 3.0``): larger tiles cost less.

    A network in training mode that returns a tuple (X-Net's deep-supervision outputs) is reduced to its last
    element, the final prediction; in eval mode networks return one tensor. Gradients are left to the caller, as in
    MONAI: wrap the call in ``torch.no_grad()`` (``SupervisedEvaluator`` does).

    Example::

        inferer = OverlapTileInferer(roi_size=256, sw_batch_size=4)
        net.eval()
        with torch.no_grad():
            logits = inferer(image, net)  # (B, out_channels, H, W), float32

    Args:
        roi_size: output tile size in pixels, an int or one int per spatial dimension. Rounded up to a multiple of
            the network's ``size_divisor``. Default 256.
        sw_batch_size: number of tiles per forward pass (tiles of all images of the batch are mixed). Default 4.
        margin: same-padding networks only: width of the mirror-padded context added around the image, in pixels.
            Default ``None``: ``ceil((network.receptive_field + size_divisor - 2) / 2)``, the receptive-field radius
            ``(receptive_field - 1) / 2`` plus half the pooling-phase shift ``(size_divisor - 1) / 2``: pooling makes
            a pixel's dependency window sit off-centre by up to that much, so this is how far a pixel can read to one
            side, and it makes the result exact (depth-4 U-Net: receptive field 204, margin 109 -> 112). Rounded up
            to a multiple of ``size_divisor``. Must be ``None`` for valid networks, whose margin is
            ``network.margin``.
        mode: how the image is padded: ``"reflect"`` (mirror, the U-Net paper's choice; default), ``"replicate"`` or
            ``"constant"`` (zeros).
        overlap_border: same-padding networks only: the band of each tile's output discarded on every side, i.e. the
            context each kept pixel has inside its tile (neighbouring input tiles overlap by twice this). Default
            ``None``: equal to ``margin``. Rounded up to a multiple of ``size_divisor``; at most ``margin``. Must be
            ``None`` for valid networks (their tiles need no overlap to be exact).
        progress: show a tqdm progress bar over tile batches.
        sw_device: device the tiles are run on (where the network is). Default: the device of ``inputs``.
        device: device of the returned prediction. Default: the device of ``inputs``.

    Raises:
        ValueError: a non-positive ``roi_size`` or ``sw_batch_size``, a negative ``margin`` or ``overlap_border``,
            ``overlap_border > margin``, or an unknown ``mode``.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int = 256,
        sw_batch_size: int = 4,
        margin: int | None = None,
        mode: str = "reflect",
        overlap_border: int | None = None,
        progress: bool = False,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        roi = tuple(roi_size) if isinstance(roi_size, Sequence) else (roi_size,)
        if not roi or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in roi):
            raise ValueError(f"roi_size must be a positive int or a sequence of positive ints, got {roi_size!r}.")
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive int, got {sw_batch_size!r}.")
        for name, value in (("margin", margin), ("overlap_border", overlap_border)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be None or a non-negative int, got {value!r}.")
        if margin is not None and overlap_border is not None and overlap_border > margin:
            raise ValueError(
                f"overlap_border ({overlap_border}) must not exceed margin ({margin}): a tile cannot see more context "
                "than the image was padded with. Raise margin or lower overlap_border."
            )
        if mode not in PAD_MODES:
            raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}.")
        self.roi_size = roi
        self.sw_batch_size = sw_batch_size
        self.margin = margin
        self.mode = mode
        self.overlap_border = overlap_border
        self.progress = progress
        self.sw_device = sw_device
        self.device = device

    def geometry(self, network: Any, image_size: Sequence[int]) -> dict[str, Any]:
        """How ``network`` will tile an image of ``image_size`` (spatial sizes): useful to check costs up front.

        Args:
            network: the network (or a wrapper of it) that will be passed to ``__call__``.
            image_size: spatial size of the image, e.g. ``(H, W)``.

        Returns:
            A dict with ``padding`` (``"valid"``/``"same"``), ``size_divisor``, ``pad`` (mirror padding before the
            image, per dim), ``tile_in`` / ``tile_out`` (input / network output tile size per dim), ``stride``
            (kept output tile size per dim), ``crop`` (offset of the kept output inside a tile's output, per dim),
            ``start`` (offset of the first input tile in the padded image, per dim), ``n_tiles`` (per dim) and
            ``padded_size`` (size of the padded image the tiles are cut from, per dim).

        Raises:
            ValueError: the margin cannot be derived (a same-padding network without ``receptive_field`` and no
                ``margin`` given), ``margin``/``overlap_border`` were given for a valid network, ``roi_size`` does not
                match the number of spatial dims, or the derived ``overlap_border`` exceeds ``margin``.
        """
        net = _unwrap(network)
        spatial_dims = len(image_size)
        roi = self.roi_size * spatial_dims if len(self.roi_size) == 1 else self.roi_size
        if len(roi) != spatial_dims:
            raise ValueError(f"roi_size {self.roi_size} has {len(roi)} dims but the image has {spatial_dims}.")
        div = int(getattr(net, "size_divisor", 1))
        padding = getattr(net, "padding", None)
        if not isinstance(padding, str):  # no geometry attributes (torch's own conv layers have a numeric `padding`)
            padding = "same"
        if padding not in ("valid", "same"):
            raise ValueError(f"network.padding must be 'valid' or 'same', got {padding!r}.")
        # an output tile: roi rounded up to the pooling grid, but no larger than the (grid-rounded) image
        stride = [min(_ceil_to(r, div), _ceil_to(s, div)) for r, s in zip(roi, image_size)]
        if padding == "valid":
            if self.margin is not None or self.overlap_border is not None:
                raise ValueError(
                    "margin and overlap_border are for same-padding networks; a valid network's margin is "
                    f"network.margin ({getattr(net, 'margin', None)}) and its tiles need no overlap. Leave them None."
                )
            for attr in ("margin", "valid_input_size", "output_size"):
                if not hasattr(net, attr):
                    raise ValueError(
                        f"a network with padding='valid' must expose {attr!r} (see scripts.networks.UNet)."
                    )
            tile_in = [int(net.valid_input_size(s)) for s in stride]
            tile_out = [int(net.output_size(t)) for t in tile_in]
            pad, crop, start = [int(net.margin)] * spatial_dims, [0] * spatial_dims, [0] * spatial_dims
        else:
            margin = self.margin
            if margin is None:
                rf = getattr(net, "receptive_field", None)
                if rf is None:
                    raise ValueError(
                        f"cannot derive the context margin of {type(net).__name__}: it has no 'receptive_field' "
                        "attribute. Pass margin=<how far the network reads to one side, in pixels> to "
                        "OverlapTileInferer."
                    )
                margin = math.ceil((int(rf) + div - 2) / 2)
            border = margin if self.overlap_border is None else self.overlap_border
            if border > margin:
                raise ValueError(f"overlap_border ({border}) must not exceed margin ({margin}).")
            margin, border = _ceil_to(margin, div), _ceil_to(border, div)
            tile_in = tile_out = [s + 2 * border for s in stride]
            pad, crop = [margin] * spatial_dims, [border] * spatial_dims
            start = [margin - border] * spatial_dims  # first input tile's offset in the padded image
        n_tiles = [math.ceil(s / st) for s, st in zip(image_size, stride)]
        padded = [
            max(st0 + (n - 1) * st + ti, p + s + p)  # room for the last tile, and at least `pad` after the image
            for st0, n, st, ti, p, s in zip(start, n_tiles, stride, tile_in, pad, image_size)
        ]
        return {
            "padding": padding,
            "size_divisor": div,
            "pad": pad,
            "tile_in": tile_in,
            "tile_out": tile_out,
            "stride": stride,
            "crop": crop,
            "start": start,
            "n_tiles": n_tiles,
            "padded_size": padded,
        }

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Predict ``inputs`` tile by tile.

        Args:
            inputs: (B, C, *spatial) image batch (2-D: (B, C, H, W)).
            network: the model (or a callable wrapping it); called as ``network(tiles, *args, **kwargs)``.
            args: extra positional arguments for ``network``.
            kwargs: extra keyword arguments for ``network``.

        Returns:
            (B, C_out, *spatial) float32 prediction (raw network output, e.g. logits) on ``device``; a
            ``MetaTensor`` carrying the input's metadata when ``inputs`` is one.

        Raises:
            ValueError: ``inputs`` has no spatial dims, see :meth:`geometry`, or the network's output tiles do not
                have the size its geometry promises.
            TypeError: the network returns neither a tensor nor a tuple/list of tensors.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.ndim < 3 or min(inputs.shape) < 1:
            raise ValueError(
                f"inputs must be a non-empty (B, C, *spatial) tensor, got {getattr(inputs, 'shape', type(inputs))}."
            )
        image = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        batch, image_size = image.shape[0], tuple(image.shape[2:])
        geo = self.geometry(network, image_size)
        sw_device = self.sw_device or image.device
        out_device = self.device or image.device
        stride, tile_in = geo["stride"], geo["tile_in"]

        after = [ps - p - s for ps, p, s in zip(geo["padded_size"], geo["pad"], image_size)]
        padded = mirror_pad(image, list(zip(geo["pad"], after)), self.mode)

        # one job per (image in the batch, tile index per spatial dim); a forward pass takes sw_batch_size jobs
        jobs = [(b, idx) for b in range(batch) for idx in itertools.product(*(range(n) for n in geo["n_tiles"]))]
        output: torch.Tensor | None = None
        chunks = [jobs[i : i + self.sw_batch_size] for i in range(0, len(jobs), self.sw_batch_size)]
        for chunk in tqdm(chunks) if self.progress and has_tqdm else chunks:
            tiles = torch.cat(
                [padded[(slice(b, b + 1), slice(None), *self._tile_slices(idx, geo))] for b, idx in chunk]
            ).to(sw_device)
            pred = network(tiles, *args, **kwargs)
            if isinstance(pred, (tuple, list)):  # deep-supervision outputs in training mode: the last is the final one
                pred = pred[-1]
            if not isinstance(pred, torch.Tensor):
                raise TypeError(f"the network must return a tensor (or a tuple of tensors), got {type(pred).__name__}.")
            if list(pred.shape[2:]) != geo["tile_out"]:
                raise ValueError(
                    f"the network turned {tile_in}-pixel tiles into {list(pred.shape[2:])}-pixel outputs, expected "
                    f"{geo['tile_out']} for padding={geo['padding']!r}. A valid-convolution network must expose "
                    "padding='valid', margin, valid_input_size and output_size (see scripts.networks.UNet)."
                )
            if output is None:  # first chunk: now the number of output channels is known
                out_size = [n * st for n, st in zip(geo["n_tiles"], stride)]
                output = torch.zeros((batch, pred.shape[1], *out_size), dtype=torch.float32, device=out_device)
            kept = pred[(slice(None), slice(None), *(slice(c, c + st) for c, st in zip(geo["crop"], stride)))]
            kept = kept.to(device=out_device, dtype=torch.float32)
            for k, (b, idx) in enumerate(chunk):
                output[(b, slice(None), *(slice(i * st, (i + 1) * st) for i, st in zip(idx, stride)))] = kept[k]
        output = output[(slice(None), slice(None), *(slice(0, s) for s in image_size))]  # type: ignore[index]
        if isinstance(inputs, MetaTensor):
            output = MetaTensor(output).copy_meta_from(inputs, copy_attr=False)
        return output

    @staticmethod
    def _tile_slices(idx: Sequence[int], geo: dict[str, Any]) -> tuple[slice, ...]:
        """Spatial slices of input tile ``idx`` (tile index per dim) in the padded image."""
        return tuple(
            slice(s0 + i * st, s0 + i * st + ti)
            for i, s0, st, ti in zip(idx, geo["start"], geo["stride"], geo["tile_in"])
        )


def _ceil_to(value: int, divisor: int) -> int:
    """``value`` rounded up to a multiple of ``divisor``."""
    return -(-value // divisor) * divisor
