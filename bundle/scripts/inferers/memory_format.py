"""Channels-last execution of a network for one call, leaving the network exactly as it was.

On a CPU, PyTorch's oneDNN convolutions run about twice as fast in the channels-last (NHWC) layout as in the default
NCHW layout (our U-Net f16 on a 1248x1248 image, 2 threads: 2.4 s -> 1.3 s). A convolution takes the channels-last
path when its input or its weight is channels-last; a 1-channel image has the same strides in both layouts, so it is
the weights that have to be converted. :func:`channels_last_weights` does so for the duration of a ``with`` block and
then puts the original weight tensors back, so the network's ``state_dict``, its parameters' identity (optimisers
keep working) and training are untouched. Results agree with the NCHW pass to float rounding (the kernels sum in
another order: max logit difference ~1e-5 to 1e-4 on a depth-5 U-Net).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from scripts.checks import check_option

__all__ = ["MEMORY_FORMATS", "channels_last_weights", "resolve_memory_format"]

#: the values of ``OverlapTileInferer(memory_format=...)``
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

_WRAPPERS = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)


def resolve_memory_format(memory_format: str, network: Any, device: torch.device | str, spatial_dims: int) -> str:
    """The layout a call will use: ``"channels_last"`` or ``"contiguous"``.

    ``"auto"`` is ``"channels_last"`` for a 2-D image (4-D tensors) run on the CPU by an ``nn.Module`` that is not
    wrapped in DataParallel/DistributedDataParallel (their replicas and gradient buckets hold the weights) or compiled
    with ``torch.compile`` (a layout change per call would invalidate its graphs), and
    ``"contiguous"`` otherwise (on CUDA the layout's benefit depends on the dtype and cuDNN; not measured here).
    ``"channels_last"`` asked for explicitly still falls back to ``"contiguous"`` where channels-last does not exist
    (not 2-D, or not a module).

    Raises:
        ValueError: an unknown ``memory_format``.
    """
    check_option("memory_format", memory_format, MEMORY_FORMATS)
    usable = (
        spatial_dims == 2
        and isinstance(network, torch.nn.Module)
        and not isinstance(network, _WRAPPERS)
        and not hasattr(network, "_orig_mod")  # torch.compile: a layout swap per call would fail its guards
    )
    if memory_format == "contiguous" or not usable:
        return "contiguous"
    if memory_format == "channels_last":
        return "channels_last"
    return "channels_last" if torch.device(device).type == "cpu" else "contiguous"


@contextlib.contextmanager
def channels_last_weights(module: torch.nn.Module) -> Iterator[None]:
    """Inside the block, every 4-D parameter and buffer of ``module`` is channels-last; afterwards the original
    tensors are back (same storage, same values, same strides).

    Meant for inference (no gradients flow through the swapped tensors' ``.data``); the layout of activations follows
    the weights, so the input needs no conversion.
    """
    swapped: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.ndim == 4 and not tensor.is_contiguous(memory_format=torch.channels_last):
                original = tensor.data
                tensor.data = original.contiguous(memory_format=torch.channels_last)
                swapped.append((tensor, original))
        yield
    finally:
        for tensor, original in swapped:
            tensor.data = original
