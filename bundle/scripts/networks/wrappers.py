"""The network inside the wrappers that PyTorch puts around a module for parallel or compiled execution."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["unwrap_network"]


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
