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

By default the tiles are chosen from a memory budget (fewest computed pixels whose memory fits; an image that fits is
one tile); ``roi_size`` gives fixed tiles. :meth:`OverlapTileInferer.geometry` returns the plan as a
:class:`TileGeometry`.
"""

from __future__ import annotations

import itertools
import logging
import math
import weakref
from contextlib import nullcontext
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.meta_tensor import MetaTensor
from monai.inferers import Inferer
from monai.utils import optional_import

from scripts.checks import check_option, check_positive_int, is_int

from .memory_format import MEMORY_FORMATS, channels_last_weights, resolve_memory_format

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = [
    "OverlapTileInferer",
    "TileGeometry",
    "default_memory_budget_mb",
    "estimate_activation_bytes",
    "mirror_pad",
    "unwrap_network",
]

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
    check_option("mode", mode, PAD_MODES)
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


def unwrap_network(network: Any) -> Any:
    """The module that carries the geometry attributes (``padding``, ``margin``, ``size_divisor``, ...): ``network``
    itself, or the module inside DataParallel/DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(network, "_orig_mod", None)
        if inner is None:
            inner = getattr(network, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return network
        network = inner


@dataclass(frozen=True)
class TileGeometry:
    """How :class:`OverlapTileInferer` tiles an image (all sizes in pixels, one value per spatial dimension).

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


def default_memory_budget_mb(device: torch.device | str | None) -> float:
    """The default memory budget of :class:`OverlapTileInferer` with automatic tiles, in MiB.

    CPU: half the memory the system reports available (``MemAvailable`` in ``/proc/meminfo``), at most 8192 MiB
    (4096 MiB where it cannot be read). CUDA: 70% of the device memory free at the call (``torch.cuda.mem_get_info``).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return 0.7 * free / 2**20
    try:
        with open("/proc/meminfo") as f:
            available_kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return min(8192.0, available_kib / 1024 / 2)
    except (OSError, StopIteration, ValueError):
        return 4096.0


class _LiveTensors:
    """Tracks the bytes of the tensors a forward pass creates (module inputs and outputs, by storage) while they are
    alive; ``peak`` is the largest total seen: an estimate of the pass's activation memory."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)

    def add(self, *tensors: Any) -> None:
        for t in tensors:
            if isinstance(t, (tuple, list)):
                self.add(*t)
                continue
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self.sizes or storage.nbytes() == 0:
                continue
            self.sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, key)


def estimate_activation_bytes(
    network: Callable[..., Any], probe: torch.Tensor, hook_module: torch.nn.Module | None = None
) -> int:
    """Peak activation memory (bytes) of one no-grad forward pass of ``network`` over ``probe``.

    Counts every tensor that enters or leaves a module of the network while it is alive (tracked by storage, freed
    tensors subtracted), plus the input and the output; not counted: the weights, and scratch memory inside a kernel.
    The network is run in eval mode (its mode is restored), so batch-norm statistics are not touched.

    Args:
        network: the model (any callable; hooks are placed on its modules when it is or wraps an ``nn.Module``).
        probe: (B, C, *spatial) input.
        hook_module: the module to place the hooks on (default: ``network``, through its wrappers).

    Returns:
        The estimated peak, in bytes.
    """
    tracker = _LiveTensors()
    module = hook_module if hook_module is not None else unwrap_network(network)
    handles = []
    modes = []
    if isinstance(module, torch.nn.Module):
        for m in module.modules():
            handles.append(m.register_forward_pre_hook(lambda _m, args: tracker.add(args)))
            handles.append(m.register_forward_hook(lambda _m, _args, out: tracker.add(out)))
            modes.append((m, m.training))
        module.eval()
    try:
        tracker.add(probe)
        with torch.no_grad():
            out = network(probe)
        tracker.add(out)
        peak = tracker.peak
        del out
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return int(peak)


class OverlapTileInferer(Inferer):
    """Overlap-tile inference (U-Net paper, figure 2) for networks with valid or same padding.

    The image (B, C, H, W) (any size, larger or smaller than a tile) is mirror padded, cut into input tiles whose
    outputs abut exactly, predicted and cropped back to (B, C_out, H, W). The network's geometry is read from its
    attributes (``scripts.networks.UNet`` and ``XNet`` have them all, also through DataParallel/DDP/``torch.compile``
    wrappers, see :func:`unwrap_network`):

    - ``padding``: ``"valid"`` or ``"same"``. A network without it is taken as same-padding (e.g. MONAI's
      ``BasicUNet`` or any callable).
    - ``margin`` (valid): pixels lost on each side; ``valid_input_size(n)`` and ``output_size(n)`` (valid): the input
      size giving an output of at least ``n`` pixels, and the output size of an input.
    - ``size_divisor``: the pooling grid (``2 ** depth``); tile offsets and same-mode tile sizes are multiples of it.
      Taken as 1 when absent.
    - ``receptive_field`` (same): the theoretical receptive field in pixels, used for the default ``margin``.

    **Tile size.** With ``roi_size=None`` (the default) the tiles are chosen from a memory budget: among all splits
    of the image into ``n_1 x n_2 (x ...)`` tiles on the pooling grid, the one that computes the fewest input pixels
    (ties: fewer tiles) and whose peak memory fits ``memory_budget_mb``: the mirror-padded image, the output
    (``float32``) and one forward pass over one tile. A tile's activation memory is estimated once per network and
    input layout from a no-grad probe pass over a small tile (:func:`estimate_activation_bytes`, scaled by the tile's
    pixels, times ``safety``). So an image that fits is one tile (exactly one pass over the mirror-padded image), and
    a huge image runs in bounded memory with as few context bands as possible; a forward pass then takes one tile.
    When even the smallest tiles do not fit, the smallest are used and a warning says so. An explicit ``roi_size``
    gives fixed output tiles of that size (rounded to the pooling grid), ``sw_batch_size`` of them per pass.

    Geometry, per spatial dimension, with ``d = size_divisor`` and ``r`` the output tile (stride), a multiple of
    ``d`` and no larger than the (grid-rounded) image:

    - valid: input tile ``valid_input_size(r)``, output stride ``r``; the image is mirror padded by
      ``network.margin`` and the result equals the network applied to the whole mirror-padded image.
    - same: input tile ``r + 2 * overlap_border``, output stride ``r``; each tile's outer ``overlap_border`` output
      pixels are discarded; the image is mirror padded by ``margin``. With ``overlap_border`` (default: ``margin``)
      at least how far a pixel's receptive field reaches to one side (the default margin is), the result equals the
      network applied to the whole image mirror padded by ``margin`` (to float rounding); a smaller
      ``overlap_border`` trades accuracy at tile seams for speed.

    Compute cost is about ``(input tile / r) ** 2`` times a whole-image pass, e.g. ``(480 / 256) ** 2 = 3.5`` for a
    same-padding depth-4 U-Net with ``roi_size=256``: larger tiles cost less, which is what the automatic choice
    exploits (:meth:`geometry` shows the choice and :attr:`TileGeometry.input_pixels` its cost).

    A network in training mode that returns a tuple (X-Net's deep-supervision outputs) is reduced to its last
    element, the final prediction; in eval mode networks return one tensor. Gradients are left to the caller, as in
    MONAI: wrap the call in ``torch.no_grad()`` (``SupervisedEvaluator`` does); the memory budget assumes no-grad.

    Example::

        inferer = OverlapTileInferer(memory_budget_mb=2048)  # or roi_size=256 for fixed tiles
        net.eval()
        with torch.no_grad():
            logits = inferer(image, net)  # (B, out_channels, H, W), float32

    Args:
        roi_size: output tile size in pixels, an int or one int per spatial dimension, rounded up to a multiple of
            the network's ``size_divisor``; ``None`` (default): chosen from ``memory_budget_mb``.
        sw_batch_size: number of tiles per forward pass with an explicit ``roi_size`` (tiles of all images of the
            batch are mixed). Default 4. Automatic tiles are run one per pass.
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
        memory_budget_mb: automatic tiles only: the peak memory (MiB) the call may use for the padded image, the
            output and one tile's forward pass. ``None`` (default): :func:`default_memory_budget_mb` of the device
            the tiles run on (CPU: half the available memory, at most 8 GiB; CUDA: 70% of the free memory),
            rounded down to a multiple of 256 MiB. The plan is searched once per image size and budget (cached).
        safety: factor applied to the probe's activation estimate (kernel scratch memory, allocator slack).
            Default 1.25.
        progress: show a tqdm progress bar over tile batches.
        sw_device: device the tiles are run on (where the network is). Default: the device of ``inputs``.
        device: device of the returned prediction. Default: the device of ``inputs``.
        memory_format: layout of the network's weights (and so of its activations) during the call:
            ``"channels_last"``, ``"contiguous"`` or ``"auto"`` (default: channels-last for 2-D images on the CPU,
            where oneDNN's convolutions run about twice as fast in it; contiguous elsewhere). The weights are put
            back as they were after the call (:func:`~scripts.inferers.memory_format.channels_last_weights`); the
            result equals the contiguous pass to float rounding.

    Raises:
        ValueError: a non-positive ``roi_size``, ``sw_batch_size``, ``memory_budget_mb`` or ``safety``, a negative
            ``margin`` or ``overlap_border``, ``overlap_border > margin``, or an unknown ``mode`` or
            ``memory_format``.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 4,
        margin: int | None = None,
        mode: str = "reflect",
        overlap_border: int | None = None,
        memory_budget_mb: float | None = None,
        safety: float = 1.25,
        progress: bool = False,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        memory_format: str = "auto",
    ) -> None:
        super().__init__()
        if roi_size is None:
            roi = None
        else:
            roi = tuple(roi_size) if isinstance(roi_size, Sequence) else (roi_size,)
            if not roi or not all(is_int(r, 1) for r in roi):
                raise ValueError(
                    f"roi_size must be None (automatic), a positive int or a sequence of positive ints, got {roi_size!r}."
                )
        check_positive_int("sw_batch_size", sw_batch_size)
        for name, value in (("margin", margin), ("overlap_border", overlap_border)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be None or a non-negative int, got {value!r}.")
        if margin is not None and overlap_border is not None and overlap_border > margin:
            raise ValueError(
                f"overlap_border ({overlap_border}) must not exceed margin ({margin}): a tile cannot see more context "
                "than the image was padded with. Raise margin or lower overlap_border."
            )
        check_option("mode", mode, PAD_MODES)
        check_option("memory_format", memory_format, MEMORY_FORMATS)
        for name, value in (("memory_budget_mb", memory_budget_mb), ("safety", safety)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}.")
        self.roi_size = roi
        self.sw_batch_size = sw_batch_size
        self.margin = margin
        self.mode = mode
        self.overlap_border = overlap_border
        self.memory_budget_mb = memory_budget_mb
        self.safety = float(safety)
        self.progress = progress
        self.sw_device = sw_device
        self.device = device
        self.memory_format = memory_format
        self._probe_cache: dict[tuple, tuple[float, int]] = {}
        self._geometry_cache: dict[tuple, TileGeometry] = {}

    # ------------------------------------------------------------------ geometry
    def _grid(self, network: Any) -> tuple[Any, str, int]:
        net = unwrap_network(network)
        div = int(getattr(net, "size_divisor", 1))
        padding = getattr(net, "padding", None)
        if not isinstance(padding, str):  # no geometry attributes (torch's own conv layers have a numeric `padding`)
            padding = "same"
        if padding not in ("valid", "same"):
            raise ValueError(f"network.padding must be 'valid' or 'same', got {padding!r}.")
        return net, padding, div

    def _margins(self, net: Any, padding: str, div: int) -> tuple[int, int]:
        """(mirror pad, discarded band) per side; for valid networks (network.margin, 0)."""
        if padding == "valid":
            if self.margin is not None or self.overlap_border is not None:
                raise ValueError(
                    "margin and overlap_border are for same-padding networks; a valid network's margin is "
                    f"network.margin ({getattr(net, 'margin', None)}) and its tiles need no overlap. Leave them None."
                )
            for attr in ("margin", "valid_input_size", "output_size"):
                if not hasattr(net, attr):
                    raise ValueError(f"a network with padding='valid' must expose {attr!r} (see scripts.networks.UNet).")
            return int(net.margin), 0
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
        return _ceil_to(margin, div), _ceil_to(border, div)

    @staticmethod
    def _layout(
        net: Any, padding: str, div: int, pad: int, border: int, stride: Sequence[int], image_size: Sequence[int]
    ) -> TileGeometry:
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

    def geometry(
        self,
        network: Any,
        image_size: Sequence[int],
        in_channels: int | None = None,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TileGeometry:
        """How ``network`` will tile an image of ``image_size`` (spatial sizes): useful to check costs up front.

        Args:
            network: the network (or a wrapper of it) that will be passed to ``__call__``.
            image_size: spatial size of the image, e.g. ``(H, W)``.
            in_channels, batch_size, device, dtype: automatic tiles only: the input's channels (default: the
                network's ``in_channels`` attribute, else 1), batch size, the device the tiles run on (default CPU)
                and dtype, for the memory estimate (a probe forward pass, cached).

        Returns:
            A :class:`TileGeometry`.

        Raises:
            ValueError: the margin cannot be derived (a same-padding network without ``receptive_field`` and no
                ``margin`` given), ``margin``/``overlap_border`` were given for a valid network, ``roi_size`` does not
                match the number of spatial dims, or the derived ``overlap_border`` exceeds ``margin``.
        """
        net, padding, div = self._grid(network)
        image_size = tuple(int(s) for s in image_size)
        dims = len(image_size)
        pad, border = self._margins(net, padding, div)
        if self.roi_size is not None:
            roi = self.roi_size * dims if len(self.roi_size) == 1 else self.roi_size
            if len(roi) != dims:
                raise ValueError(f"roi_size {self.roi_size} has {len(roi)} dims but the image has {dims}.")
            # an output tile: roi rounded up to the pooling grid, but no larger than the (grid-rounded) image
            stride = [min(_ceil_to(r, div), _ceil_to(s, div)) for r, s in zip(roi, image_size)]
            return self._layout(net, padding, div, pad, border, stride, image_size)
        return self._auto_geometry(network, net, padding, div, pad, border, image_size, in_channels, batch_size,
                                   device, dtype)

    def _bytes_per_pixel(
        self, network: Any, net: Any, padding: str, div: int, border: int, dims: int, in_channels: int,
        device: torch.device, dtype: torch.dtype,
    ) -> tuple[float, int]:
        """(activation bytes per input-tile pixel, output channels) from a probe pass, cached."""
        key = (id(network), id(net), type(net).__name__, dims, in_channels, str(device), str(dtype))
        if key not in self._probe_cache:
            side = 4 * div
            side = int(net.valid_input_size(side)) if padding == "valid" else side + 2 * border
            probe = torch.zeros((1, in_channels) + (side,) * dims, dtype=dtype, device=device)
            tracker_peak, out_channels = _probe(network, probe)
            self._probe_cache[key] = (tracker_peak / side**dims, out_channels)
        return self._probe_cache[key]

    def _auto_geometry(
        self, network: Any, net: Any, padding: str, div: int, pad: int, border: int, image_size: tuple[int, ...],
        in_channels: int | None, batch_size: int, device: torch.device | str | None, dtype: torch.dtype,
    ) -> TileGeometry:
        dims = len(image_size)
        device = torch.device(device) if device is not None else torch.device("cpu")
        if in_channels is None:
            in_channels = int(getattr(net, "in_channels", 1))
        bpp, out_channels = self._bytes_per_pixel(network, net, padding, div, border, dims, in_channels, device, dtype)
        if self.memory_budget_mb is not None:
            budget_mb = float(self.memory_budget_mb)
        else:  # the device default moves with the free memory: steps of 256 MiB, so that a folder reuses one plan
            default = default_memory_budget_mb(device)
            budget_mb = default // 256 * 256 if default >= 256 else default
        # the search below is pure Python (hundreds of candidate layouts on a 4096^2 image): once per image size; the
        # key holds everything the plan depends on (the network's geometry too, in case its id is reused)
        key = (id(network), id(net), type(net).__name__, padding, div, pad, border, self.safety, bpp, dims, in_channels,
               str(device), str(dtype), image_size, batch_size, budget_mb)
        if key in self._geometry_cache:
            return self._geometry_cache[key]
        if len(self._geometry_cache) >= 256:
            self._geometry_cache.clear()
        budget = budget_mb * 2**20
        itemsize = torch.empty((), dtype=dtype).element_size()

        def memory(geo: TileGeometry) -> tuple[int, int]:
            act = int(self.safety * bpp * math.prod(geo.tile_in))
            fixed = batch_size * (
                in_channels * math.prod(geo.padded_size) * itemsize
                + out_channels * math.prod(n * st for n, st in zip(geo.n_tiles, geo.stride)) * 4
            )
            return act, fixed

        # candidate output strides per dim: each tile count n gives stride ceil(size / n) on the grid
        options = []
        for s in image_size:
            strides = sorted({_ceil_to(-(-s // n), div) for n in range(1, -(-s // div) + 1)}, reverse=True)
            options.append(strides)  # largest tile first: memory decreases along the list

        best: tuple[tuple[int, int], TileGeometry, int] | None = None
        smallest: tuple[int, TileGeometry, int] | None = None
        for head in itertools.product(*options[:-1]):
            last = options[-1]
            lo, hi = 0, len(last) - 1
            # binary search for the largest last-dim stride that fits (memory is monotone along `last`)
            fit = None
            while lo <= hi:
                mid = (lo + hi) // 2
                geo = self._layout(net, padding, div, pad, border, [*head, last[mid]], image_size)
                act, fixed = memory(geo)
                if act + fixed <= budget:
                    fit, hi = (geo, act), mid - 1
                else:
                    lo = mid + 1
            if fit is None:
                geo = self._layout(net, padding, div, pad, border, [*head, last[-1]], image_size)
                act, fixed = memory(geo)
                if smallest is None or act + fixed < smallest[0]:
                    smallest = (act + fixed, geo, act)
                continue
            geo, act = fit
            cost = (geo.input_pixels, geo.num_tiles)
            if best is None or cost < best[0]:
                best = (cost, geo, act)
        if best is not None:
            geo, act = best[1], best[2]
        else:
            need, geo, act = smallest  # type: ignore[misc]
            logger.warning(
                "OverlapTileInferer: memory_budget_mb=%.0f is too small for an image of %s even with the smallest "
                "tiles (estimated %.0f MiB); using them anyway. Raise memory_budget_mb or use a smaller network.",
                budget_mb, list(image_size), need / 2**20,
            )
        self._geometry_cache[key] = replace(geo, activation_bytes=act)
        return self._geometry_cache[key]

    # ------------------------------------------------------------------ inference
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
        sw_device = self.sw_device or image.device
        out_device = self.device or image.device
        geo = self.geometry(network, image_size, in_channels=image.shape[1], batch_size=batch, device=sw_device,
                            dtype=image.dtype if image.is_floating_point() else torch.float32)
        per_pass = self.sw_batch_size if self.roi_size is not None else 1

        after = [ps - p - s for ps, p, s in zip(geo.padded_size, geo.pad, image_size)]
        padded = mirror_pad(image, list(zip(geo.pad, after)), self.mode)

        # one job per (image in the batch, tile index per spatial dim); a forward pass takes `per_pass` jobs
        jobs = [(b, idx) for b in range(batch) for idx in itertools.product(*(range(n) for n in geo.n_tiles))]
        chunks = [jobs[i : i + per_pass] for i in range(0, len(jobs), per_pass)]
        layout = resolve_memory_format(self.memory_format, network, sw_device, len(image_size))
        with channels_last_weights(network) if layout == "channels_last" else nullcontext():  # a plain module
            output = self._run_tiles(padded, chunks, geo, network, sw_device, out_device, args, kwargs)
        output = output[(slice(None), slice(None), *(slice(0, s) for s in image_size))]
        if isinstance(inputs, MetaTensor):
            output = MetaTensor(output).copy_meta_from(inputs, copy_attr=False)
        return output

    def _run_tiles(
        self, padded: torch.Tensor, chunks: list, geo: TileGeometry, network: Callable[..., Any],
        sw_device: torch.device | str, out_device: torch.device | str, args: tuple, kwargs: dict,
    ) -> torch.Tensor:
        """The network over every chunk of tiles; the abutting kept outputs as one (B, C_out, *n_tiles*stride)
        float32 tensor on ``out_device``."""
        batch, stride = padded.shape[0], geo.stride
        output: torch.Tensor | None = None
        for chunk in tqdm(chunks) if self.progress and has_tqdm else chunks:
            views = [padded[(slice(b, b + 1), slice(None), *geo.tile_slices(idx))] for b, idx in chunk]
            tiles = (views[0] if len(views) == 1 else torch.cat(views)).to(sw_device)  # one tile: no copy
            del views
            pred = network(tiles, *args, **kwargs)
            del tiles
            if isinstance(pred, (tuple, list)):  # deep-supervision outputs in training mode: the last is the final one
                pred = pred[-1]
            if not isinstance(pred, torch.Tensor):
                raise TypeError(f"the network must return a tensor (or a tuple of tensors), got {type(pred).__name__}.")
            if tuple(pred.shape[2:]) != geo.tile_out:
                raise ValueError(
                    f"the network turned {list(geo.tile_in)}-pixel tiles into {list(pred.shape[2:])}-pixel outputs, "
                    f"expected {list(geo.tile_out)} for padding={geo.padding!r}. A valid-convolution network must "
                    "expose padding='valid', margin, valid_input_size and output_size (see scripts.networks.UNet)."
                )
            if output is None:  # first chunk: now the number of output channels is known
                out_size = [n * st for n, st in zip(geo.n_tiles, stride)]
                output = torch.zeros((batch, pred.shape[1], *out_size), dtype=torch.float32, device=out_device)
            kept = pred[(slice(None), slice(None), *(slice(c, c + st) for c, st in zip(geo.crop, stride)))]
            del pred
            for k, (b, idx) in enumerate(chunk):
                output[(b, slice(None), *(slice(i * st, (i + 1) * st) for i, st in zip(idx, stride)))] = kept[k]
            del kept
        return output  # type: ignore[return-value]


def _probe(network: Callable[..., Any], probe: torch.Tensor) -> tuple[int, int]:
    """(estimated activation peak in bytes, output channels) of one no-grad forward pass over ``probe``."""
    channels: list[int] = []

    def record(out: Any) -> Any:
        out = out[-1] if isinstance(out, (tuple, list)) else out
        channels.append(int(out.shape[1]))
        return out

    peak = estimate_activation_bytes(lambda x: record(network(x)), probe, hook_module=unwrap_network(network))
    return peak, channels[-1]


def _ceil_to(value: int, divisor: int) -> int:
    """``value`` rounded up to a multiple of ``divisor``."""
    return -(-value // divisor) * divisor
