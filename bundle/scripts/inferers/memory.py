"""Memory planning of overlap-tile inference: the default budget, the activation estimate of a forward pass, and the
search for the tiles that compute the fewest pixels within the budget.

A tile's activation memory is estimated once per network and input layout from a no-grad probe pass over a small
tile (:func:`estimate_activation_bytes`, scaled by the tile's pixels, times a safety factor). Forward hooks that record
or change what a network computes (e.g. :class:`scripts.visualize.FeatureMapCapture`) should do nothing while
:func:`is_probing`: the probe is not part of the inference.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import torch
from scripts.networks.wrappers import unwrap_network
from torch.utils._python_dispatch import TorchDispatchMode

from .tiling import TileGeometry, candidate_strides, tile_layout

__all__ = ["TilePlanner", "default_memory_budget_mb", "estimate_activation_bytes", "is_probing"]

logger = logging.getLogger(__name__)

_PROBING: ContextVar[bool] = ContextVar("scripts_inferers_probing", default=False)


def is_probing() -> bool:
    """Whether the current forward pass is :func:`estimate_activation_bytes`' probe."""
    return _PROBING.get()


def default_memory_budget_mb(device: torch.device | str | None) -> float:
    """The default memory budget of :class:`~scripts.inferers.OverlapTileInferer` with automatic tiles, in MiB.

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


class _OperatorOutputs(TorchDispatchMode):
    """Adds the output of every operator run inside it to a :class:`_LiveTensors` (for modules without hooks)."""

    def __init__(self, tracker: _LiveTensors) -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.tracker.add(out)
        return out


def estimate_activation_bytes(
    network: Callable[..., Any], probe: torch.Tensor, hook_module: torch.nn.Module | None = None
) -> int:
    """Peak activation memory (bytes) of one no-grad forward pass of ``network`` over ``probe``.

    Counts every tensor that enters or leaves a module of the network while it is alive (tracked by storage, freed
    tensors subtracted), plus the input and the output; not counted: the weights, and scratch memory inside a kernel.
    A module that takes no hooks (TorchScript) is measured by the outputs of every operator it runs instead (a
    :class:`~torch.utils._python_dispatch.TorchDispatchMode`; the same peak as the hooks on an eager network).
    The network is run in eval mode (its mode is restored), so batch-norm statistics are not touched; during the
    pass :func:`is_probing` is true.

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
    scripted = isinstance(module, torch.jit.ScriptModule)
    if isinstance(module, torch.nn.Module):
        for m in module.modules():
            if not scripted:
                handles.append(m.register_forward_pre_hook(lambda _m, args: tracker.add(args)))
                handles.append(m.register_forward_hook(lambda _m, _args, out: tracker.add(out)))
            modes.append((m, m.training))
        module.eval()
    token = _PROBING.set(True)
    try:
        tracker.add(probe)
        with torch.no_grad(), _OperatorOutputs(tracker) if scripted else contextlib.nullcontext():
            out = network(probe)
        tracker.add(out)
        peak = tracker.peak
        del out
    finally:
        _PROBING.reset(token)
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return int(peak)


def _probe(network: Callable[..., Any], probe: torch.Tensor) -> tuple[int, int]:
    """(estimated activation peak in bytes, output channels) of one no-grad forward pass over ``probe``."""
    channels: list[int] = []

    def record(out: Any) -> Any:
        out = out[-1] if isinstance(out, (tuple, list)) else out
        channels.append(int(out.shape[1]))
        return out

    peak = estimate_activation_bytes(lambda x: record(network(x)), probe, hook_module=unwrap_network(network))
    return peak, channels[-1]


def _fewest_pixels(
    options: Sequence[Sequence[int]],
    layout: Callable[[list[int]], TileGeometry],
    footprint: Callable[[TileGeometry], tuple[int, int]],
    budget: float,
) -> tuple[TileGeometry, int, int | None]:
    """Among the layouts of the stride ``options`` (per dim, memory decreasing along each list), the one computing
    the fewest input pixels (ties: fewer tiles) whose ``footprint`` (activation, fixed bytes) fits ``budget``:
    ``(geometry, activation bytes, None)``; when none fits, the smallest one and the bytes it needs."""
    best: tuple[tuple[int, int], TileGeometry, int] | None = None
    smallest: tuple[int, TileGeometry, int] | None = None
    for head in itertools.product(*options[:-1]):
        last = options[-1]
        lo, hi = 0, len(last) - 1
        # binary search for the largest last-dim stride that fits (memory is monotone along `last`)
        fit = None
        while lo <= hi:
            mid = (lo + hi) // 2
            geo = layout([*head, last[mid]])
            act, fixed = footprint(geo)
            if act + fixed <= budget:
                fit, hi = (geo, act), mid - 1
            else:
                lo = mid + 1
        if fit is None:
            geo = layout([*head, last[-1]])
            act, fixed = footprint(geo)
            if smallest is None or act + fixed < smallest[0]:
                smallest = (act + fixed, geo, act)
            continue
        geo, act = fit
        cost = (geo.input_pixels, geo.num_tiles)
        if best is None or cost < best[0]:
            best = (cost, geo, act)
    if best is not None:
        return best[1], best[2], None
    need, geo, act = smallest  # type: ignore[misc]
    return geo, act, need


class TilePlanner:
    """Automatic tiles of :class:`~scripts.inferers.OverlapTileInferer`: the split of the image into
    ``n_1 x n_2 (x ...)`` tiles on the pooling grid that computes the fewest input pixels (ties: fewer tiles) and
    whose peak memory fits the budget: the mirror-padded image, the output (``float32``) and one forward pass over
    one tile. When even the smallest tiles do not fit, the smallest are used and a warning says so. Probe results
    and plans are cached (the plan per image size and budget)."""

    def __init__(self) -> None:
        self._probe_cache: dict[tuple, tuple[float, int]] = {}
        self._geometry_cache: dict[tuple, TileGeometry] = {}

    def _bytes_per_pixel(
        self,
        network: Any,
        net: Any,
        padding: str,
        div: int,
        border: int,
        dims: int,
        in_channels: int,
        device: torch.device,
        dtype: torch.dtype,
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

    def plan(
        self,
        network: Any,
        net: Any,
        padding: str,
        div: int,
        pad: int,
        border: int,
        image_size: tuple[int, ...],
        in_channels: int | None,
        batch_size: int,
        device: torch.device | str | None,
        dtype: torch.dtype,
        memory_budget_mb: float | None,
        safety: float,
    ) -> TileGeometry:
        """The tiles for an image of ``image_size`` (see the class docstring), with ``activation_bytes`` set.

        ``memory_budget_mb=None``: :func:`default_memory_budget_mb` of ``device``, in steps of 256 MiB (so that a
        folder of images reuses one plan while the free memory moves a little).
        """
        dims = len(image_size)
        device = torch.device(device) if device is not None else torch.device("cpu")
        if in_channels is None:
            in_channels = int(getattr(net, "in_channels", 1))
        bpp, out_channels = self._bytes_per_pixel(network, net, padding, div, border, dims, in_channels, device, dtype)
        if memory_budget_mb is not None:
            budget_mb = float(memory_budget_mb)
        else:
            default = default_memory_budget_mb(device)
            budget_mb = default // 256 * 256 if default >= 256 else default
        # the search is pure Python (hundreds of candidate layouts on a 4096^2 image): once per image size; the key
        # holds everything the plan depends on (the network's geometry too, in case its id is reused)
        key = (
            id(network),
            id(net),
            type(net).__name__,
            padding,
            div,
            pad,
            border,
            safety,
            bpp,
            dims,
            in_channels,
            str(device),
            str(dtype),
            image_size,
            batch_size,
            budget_mb,
        )
        if key in self._geometry_cache:
            return self._geometry_cache[key]
        if len(self._geometry_cache) >= 256:
            self._geometry_cache.clear()
        itemsize = torch.empty((), dtype=dtype).element_size()

        def footprint(geo: TileGeometry) -> tuple[int, int]:
            act = int(safety * bpp * math.prod(geo.tile_in))
            fixed = batch_size * (
                in_channels * math.prod(geo.padded_size) * itemsize
                + out_channels * math.prod(n * st for n, st in zip(geo.n_tiles, geo.stride)) * 4
            )
            return act, fixed

        def layout(stride: list[int]) -> TileGeometry:
            return tile_layout(net, padding, div, pad, border, stride, image_size)

        geo, act, need = _fewest_pixels(candidate_strides(image_size, div), layout, footprint, budget_mb * 2**20)
        if need is not None:
            logger.warning(
                "OverlapTileInferer: memory_budget_mb=%.0f is too small for an image of %s even with the smallest "
                "tiles (estimated %.0f MiB); using them anyway. Raise memory_budget_mb or use a smaller network.",
                budget_mb,
                list(image_size),
                need / 2**20,
            )
        self._geometry_cache[key] = replace(geo, activation_bytes=act)
        return self._geometry_cache[key]
