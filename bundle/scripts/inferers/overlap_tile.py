"""Overlap-tile inference (Ronneberger et al., U-Net, MICCAI 2015, section 2 and figure 2): the runner.

An image of any size is mirror padded and predicted a batch of tiles at a time; the tiles' *outputs* abut exactly (no
blending), and the result is the same as one forward pass of the network over the whole mirror-padded image. The
geometry is in :mod:`scripts.inferers.tiling`, the choice of tiles from a memory budget in
:mod:`scripts.inferers.memory`; :meth:`OverlapTileInferer.geometry` returns the plan as a :class:`TileGeometry`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from monai.data.meta_tensor import MetaTensor
from monai.inferers import Inferer
from monai.utils import optional_import
from scripts.checks import check_option, check_positive_int, is_int
from scripts.transforms.mirror_pad import PAD_MODES, mirror_pad

from .memory import TilePlanner
from .memory_format import MEMORY_FORMATS, channels_last_weights, resolve_memory_format
from .tiling import TileGeometry, context_margins, fixed_strides, network_grid, tile_layout

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["OverlapTileInferer"]


class OverlapTileInferer(Inferer):
    """Overlap-tile inference (U-Net paper, figure 2) for networks with valid or same padding.

    The image (B, C, H, W) (any size, larger or smaller than a tile) is mirror padded, cut into input tiles whose
    outputs abut exactly, predicted and cropped back to (B, C_out, H, W). The network's geometry is read from its
    attributes (``scripts.networks.UNet`` and ``XNet`` have them all, also through DataParallel/DDP/``torch.compile``
    wrappers, see :func:`scripts.networks.wrappers.unwrap_network`):

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
    (``float32``) and one forward pass over one tile (:class:`~scripts.inferers.memory.TilePlanner`). A tile's
    activation memory is estimated once per network and input layout from a no-grad probe pass over a small tile
    (:func:`~scripts.inferers.estimate_activation_bytes`, scaled by the tile's pixels, times ``safety``). So an image
    that fits is one tile (exactly one pass over the mirror-padded image), and a huge image runs in bounded memory
    with as few context bands as possible; a forward pass then takes one tile.
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
            output and one tile's forward pass. ``None`` (default): :func:`~scripts.inferers.default_memory_budget_mb`
            of the device the tiles run on (CPU: half the available memory, at most 8 GiB; CUDA: 70% of the free
            memory), rounded down to a multiple of 256 MiB. The plan is searched once per image size and budget
            (cached).
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
        self._planner = TilePlanner()

    # ------------------------------------------------------------------ geometry
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
        net, padding, div = network_grid(network)
        image_size = tuple(int(s) for s in image_size)
        dims = len(image_size)
        pad, border = context_margins(net, padding, div, self.margin, self.overlap_border)
        if self.roi_size is not None:
            roi = self.roi_size * dims if len(self.roi_size) == 1 else self.roi_size
            if len(roi) != dims:
                raise ValueError(f"roi_size {self.roi_size} has {len(roi)} dims but the image has {dims}.")
            return tile_layout(net, padding, div, pad, border, fixed_strides(roi, image_size, div), image_size)
        return self._planner.plan(
            network,
            net,
            padding,
            div,
            pad,
            border,
            image_size,
            in_channels,
            batch_size,
            device,
            dtype,
            self.memory_budget_mb,
            self.safety,
        )

    # ------------------------------------------------------------------ inference
    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
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
        geo = self.geometry(
            network,
            image_size,
            in_channels=image.shape[1],
            batch_size=batch,
            device=sw_device,
            dtype=image.dtype if image.is_floating_point() else torch.float32,
        )
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
        self,
        padded: torch.Tensor,
        chunks: list,
        geo: TileGeometry,
        network: Callable[..., Any],
        sw_device: torch.device | str,
        out_device: torch.device | str,
        args: tuple,
        kwargs: dict,
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
