"""What a saved model carries besides its weights: the network configuration and the data conventions it was
trained with.

``model.pt`` and every resumable checkpoint hold, next to ``"model"`` (the state dict), a ``"model_info"`` entry::

    {"network": {"_target_": "scripts.networks.XNet", "features": [...], "padding": "same", ...},
     "class_names": [...], "intensity_max": 255, "patch_size": [256, 256],
     "intensity_statistics": {"percentiles": [0.5, 99.5], "range": [...], "dtypes": ["uint8"], "images": 12}}

(``intensity_statistics``: the training images', :func:`scripts.data.intensity.training_statistics`, recorded after
v0.8.0; the ``"auto"`` intensity rule maps other bit depths onto them.)

:class:`ModelInfo` is the Ignite-checkpointable object behind that entry: put it in a ``CheckpointSaver``'s
``save_dict`` to write it, and in a ``CheckpointLoader``'s ``load_dict`` to check, on load, that the network being
loaded into was built with the same configuration (one clear message naming the differing keys instead of hundreds
of ``size mismatch`` lines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn
from scripts.networks.config import describe_network

__all__ = ["MODEL_INFO_KEY", "ModelInfo", "describe_mismatch"]

MODEL_INFO_KEY = "model_info"


def describe_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: saved -> current`` for every key whose value differs (keys missing on one side included)."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: {saved.get(k, '<absent>')!r} (saved) vs {current.get(k, '<absent>')!r} (now)"
        for k in keys
        if saved.get(k, "<absent>") != current.get(k, "<absent>")
    ]


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars and tuples turned into Python numbers and lists (a ``model.pt`` is read with
    ``weights_only=True``, which refuses anything else)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


class ModelInfo:
    """The ``model_info`` entry of a checkpoint, for Ignite's ``Checkpoint``/MONAI's ``CheckpointSaver`` and
    ``CheckpointLoader``.

    Args:
        network: the network whose configuration (:func:`scripts.networks.describe_network`) is saved / checked.
        class_names: names of the output classes, in channel order.
        intensity_max: the image value mapped to 1.0 by the training preprocessing.
        patch_size: the training patch size.
        intensity_statistics: the training images' intensity statistics
            (:func:`scripts.data.intensity.training_statistics`); ``None``: not recorded.
        source: a label for messages (e.g. the checkpoint path); optional.

    ``state_dict()`` returns the entry; ``load_state_dict(entry)`` raises :class:`ValueError` when the saved
    network configuration differs from ``network``'s, naming each differing key.
    """

    def __init__(
        self,
        network: nn.Module,
        class_names: Sequence[str] | None = None,
        intensity_max: float | None = None,
        patch_size: Sequence[int] | None = None,
        source: str | None = None,
        intensity_statistics: Mapping[str, Any] | None = None,
    ):
        self.network = network
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.intensity_max = intensity_max
        self.patch_size = None if patch_size is None else [int(p) for p in patch_size]
        self.source = source
        self.intensity_statistics = None if intensity_statistics is None else _plain(dict(intensity_statistics))
        self.loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "network": describe_network(self.network),
            "class_names": self.class_names,
            "intensity_max": self.intensity_max,
            "patch_size": self.patch_size,
            "intensity_statistics": self.intensity_statistics,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = dict(state.get("network") or {}) if isinstance(state, Mapping) else {}
        current = describe_network(self.network)
        diff = describe_mismatch(saved, current)
        if diff:
            where = f" {self.source}" if self.source else ""
            raise ValueError(
                f"The checkpoint{where} was made by another network configuration ({'; '.join(diff)}). "
                "Build the network the checkpoint describes (e.g. override the differing keys, such as "
                "--features, --padding or --network_def) or point to the checkpoint of this configuration."
            )
        self.loaded = dict(state)
