"""The configuration that builds a network, recorded on the network and carried with its weights.

Every network of the bundle records its constructor arguments in ``init_args`` (plain Python types only, so they
survive ``torch.save``/``torch.load(weights_only=True)``, JSON and YAML). :func:`network_config` turns a network into
a MONAI-style config dictionary (``{"_target_": "scripts.networks.XNet", "features": [...], ...}``) and
:func:`build_network` builds a network back from one. A network of another library built through
:func:`recorded_network` (e.g. MONAI's ``BasicUNet`` in an experiment file) records its config too.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn

__all__ = ["build_network", "describe_network", "init_args", "is_buildable", "network_config", "recorded_network"]

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


def _plain(value: Any, name: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"recorded_network: {name}={value!r} is not a plain value (number, string, list); give it as one.")


def recorded_network(target: str, **kwargs: Any) -> nn.Module:
    """Build ``target`` (a network outside scripts.networks: a MONAI component name such as ``"BasicUNet"`` or a
    dotted path) with ``kwargs``, and record that config on it, so that its ``model_info`` builds it again (as the
    bundle's networks do): ``{"_target_": "scripts.networks.recorded_network", "target": ..., **kwargs}``.

    Example (an experiment file)::

        "networks#basic_unet": {"_target_": "scripts.networks.recorded_network", "target": "BasicUNet",
                                "spatial_dims": 2, "in_channels": "@in_channels", "out_channels": "@num_classes"}

    Raises:
        TypeError: an argument is not a plain value (the config must survive ``torch.save`` and JSON).
    """
    from monai.bundle import ConfigComponent

    config = {"_target_": f"{_PACKAGE}.recorded_network", "target": str(target)}
    config.update({k: _plain(v, k) for k, v in kwargs.items()})
    network = ConfigComponent({"_target_": target, **kwargs}).instantiate()
    network.recorded_config = config
    return network


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Build a network from a :func:`network_config` dictionary.

    Raises:
        ValueError: when ``_target_`` is missing or does not name a network of ``scripts.networks``.
    """
    target = config.get("_target_") if isinstance(config, Mapping) else None
    if not isinstance(target, str) or not target.startswith(_PACKAGE + "."):
        raise ValueError(f"A network config needs `_target_: {_PACKAGE}.<Network>`, got {target!r}.")
    if target == f"{_PACKAGE}.recorded_network":
        return recorded_network(**{k: v for k, v in config.items() if k != "_target_"})
    cls = getattr(importlib.import_module(_PACKAGE), target.rsplit(".", 1)[1], None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ValueError(f"{target!r} is not a network of {_PACKAGE}.")
    return cls(**{k: v for k, v in config.items() if k != "_target_"})


def describe_network(network: nn.Module) -> dict[str, Any]:
    """:func:`network_config` for the bundle's networks, the recorded config of one built by
    :func:`recorded_network`; for any other network only its class, ``{"_target_": "<module>.<Class>"}``: its
    constructor arguments are not recorded, so a consumer builds it from its own config and loads the weights
    strictly."""
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        network = network.module
    if isinstance(getattr(network, "recorded_config", None), Mapping):  # built by recorded_network
        return dict(network.recorded_config)
    try:
        return network_config(network)
    except TypeError:
        return {"_target_": f"{type(network).__module__}.{type(network).__qualname__}"}


def is_buildable(config: Mapping[str, Any]) -> bool:
    """Whether :func:`build_network` can build ``config`` (a full config of one of the bundle's networks)."""
    target = config.get("_target_") if isinstance(config, Mapping) else None
    return isinstance(target, str) and target.startswith(_PACKAGE + ".") and len(config) > 1
