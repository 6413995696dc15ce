"""The configuration that builds a network, recorded on the network and carried with its weights.

Every network of the bundle records its constructor arguments in ``init_args`` (plain Python types only, so they
survive ``torch.save``/``torch.load(weights_only=True)``, JSON and YAML). :func:`network_config` turns a network into
a MONAI-style config dictionary (``{"_target_": "scripts.networks.XNet", "features": [...], ...}``) and
:func:`build_network` builds a network back from one.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn

__all__ = ["build_network", "describe_network", "init_args", "is_buildable", "network_config"]

_PACKAGE = "scripts.networks"


def init_args(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    features: Sequence[int],
    padding: str,
    batch_norm: bool,
    dropout: float,
    **extra: Any,
) -> dict[str, Any]:
    """The constructor arguments of a U-Net-family network as plain Python values (lists, not tuples)."""
    return {
        "spatial_dims": int(spatial_dims),
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "features": [int(f) for f in features],
        "padding": str(padding),
        "batch_norm": bool(batch_norm),
        "dropout": float(dropout),
        **extra,
    }


def network_config(network: nn.Module) -> dict[str, Any]:
    """The config dictionary that builds ``network`` (unwrapping DataParallel/DistributedDataParallel).

    Returns:
        ``{"_target_": "scripts.networks.<Class>", **network.init_args}``.

    Raises:
        TypeError: when the network records no ``init_args`` (not one of the bundle's networks).
    """
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        network = network.module
    args = getattr(network, "init_args", None)
    if not isinstance(args, Mapping):
        raise TypeError(
            f"{type(network).__name__} records no `init_args`; only the bundle's networks (scripts.networks) carry "
            "the configuration that built them."
        )
    return {"_target_": f"{_PACKAGE}.{type(network).__name__}", **dict(args)}


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Build a network from a :func:`network_config` dictionary.

    Raises:
        ValueError: when ``_target_`` is missing or does not name a network of ``scripts.networks``.
    """
    target = config.get("_target_") if isinstance(config, Mapping) else None
    if not isinstance(target, str) or not target.startswith(_PACKAGE + "."):
        raise ValueError(f"A network config needs `_target_: {_PACKAGE}.<Network>`, got {target!r}.")
    cls = getattr(importlib.import_module(_PACKAGE), target.rsplit(".", 1)[1], None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ValueError(f"{target!r} is not a network of {_PACKAGE}.")
    return cls(**{k: v for k, v in config.items() if k != "_target_"})


def describe_network(network: nn.Module) -> dict[str, Any]:
    """:func:`network_config` for the bundle's networks; for any other network (e.g. MONAI's ``BasicUNet`` in an
    experiment) only its class, ``{"_target_": "<module>.<Class>"}``: its constructor arguments are not recorded, so
    a consumer builds it from its own config and loads the weights strictly."""
    try:
        return network_config(network)
    except TypeError:
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module
        return {"_target_": f"{type(network).__module__}.{type(network).__qualname__}"}


def is_buildable(config: Mapping[str, Any]) -> bool:
    """Whether :func:`build_network` can build ``config`` (a full config of one of the bundle's networks)."""
    target = config.get("_target_") if isinstance(config, Mapping) else None
    return isinstance(target, str) and target.startswith(_PACKAGE + ".") and len(config) > 1
