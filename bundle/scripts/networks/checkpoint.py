"""Saved models: read ``model.pt``, build the network it describes, and load weights with one clear message.

A ``model.pt`` of this bundle is ``{"model": <state dict>, "model_info": {"network": {...}, ...}}``
(:class:`scripts.networks.ModelInfo`); a resumable checkpoint carries the same two entries next to the optimiser's
and trainer's. Older files are a bare state dict (no ``model_info``).

- :func:`network_from_checkpoint` is what the configs' ``network_def`` calls: the network ``model.pt`` was trained
  with, holding its weights, or the config's network when there is no ``model.pt`` yet (or it is an older bare
  state dict, then checked strictly).
- :class:`CheckpointLoadMixin` gives the bundle's networks a ``load_state_dict`` that also takes a whole bundle
  checkpoint (so ``ckpt_export``, Ignite's ``Checkpoint.load_objects`` and MONAI Label need no ``key_in_ckpt``),
  refuses a checkpoint of another configuration or with other tensor shapes in one line that names the override
  to fix it (instead of hundreds of ``size mismatch`` lines), and never loads part of a network silently.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from scripts.errors import ConfigError, UserError
from scripts.networks.config import build_network, describe_network, is_buildable
from scripts.networks.model_info import MODEL_INFO_KEY, describe_mismatch
from scripts.networks.pinned import check_pinned_file
from scripts.overrides import overridden

#: Config settings that shape the network (a command-line override of one of them is worth a warning when the
#: checkpoint's own configuration overrules it).
NETWORK_SETTINGS = (
    "network_def",
    "networks",
    "features",
    "padding",
    "batch_norm",
    "dropout",
    "xnet_skip",
    "in_channels",
    "num_classes",
    "class_names",
)

__all__ = [
    "MODEL_KEY",
    "CheckpointLoadMixin",
    "CheckpointMismatchError",
    "ModelError",
    "ModelFileError",
    "check_model_info",
    "check_state_dict",
    "model_intensity_statistics",
    "network_from_checkpoint",
    "read_checkpoint",
    "require_model_file",
    "SHIPPED_MODELS",
    "shipped_model_path",
    "split_checkpoint",
    "trained_or_pretrained",
]

logger = logging.getLogger(__name__)

#: Key of the network's state dict in the bundle's checkpoints (train.json's ``save_dict``).
MODEL_KEY = "model"

#: What to tell the owner of a bare state dict: which overrides rebuild the network it was trained with.
_NETWORK_OVERRIDES = (
    "--network_def, --features, --padding, --num_classes, --in_channels as it was trained (e.g. "
    '--features "[16,32,64,128,256]" for a model trained with configs/quickstart.json)'
)


def _error_bases() -> tuple[type, ...]:
    """``UserError`` and ``ValueError``, plus Starlette's ``HTTPException`` where it is installed (a MONAI Label
    server): FastAPI then answers the client with the message (HTTP 422, ``{"detail": ...}``) instead of a bare 500."""
    try:
        from starlette.exceptions import HTTPException
    except ImportError:
        return (UserError, ValueError)
    return (UserError, ValueError, HTTPException)


class ModelError(*_error_bases()):  # type: ignore[misc]
    """A model file that cannot serve the config: one line naming the file and the fix.

    A :class:`~scripts.errors.UserError` (a bundle run ends with the message alone) and a ``ValueError``; in a MONAI
    Label server also an HTTP error whose ``detail`` is that line.
    """

    status_code = 422

    def __init__(self, message: str):  # noqa: B042 - HTTPException's __init__ takes other arguments; pickles as is
        ValueError.__init__(self, message)
        self.detail = message
        self.headers = None

    def __str__(self) -> str:
        return str(self.detail)


class CheckpointMismatchError(ModelError):
    """The weights do not fit the network (another configuration)."""


class ModelFileError(ModelError):
    """The model file is missing, truncated or not a checkpoint, or was trained with other data conventions."""


def split_checkpoint(checkpoint: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any] | None]:
    """``(state dict, model_info or None)`` of a loaded checkpoint: a bundle checkpoint (``{"model": ...,
    "model_info": ...}``, maybe with optimiser/trainer entries) or a bare state dict."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(MODEL_KEY), Mapping):
        info = checkpoint.get(MODEL_INFO_KEY)
        return checkpoint[MODEL_KEY], dict(info) if isinstance(info, Mapping) else None
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(MODEL_INFO_KEY), Mapping):
        raise ValueError(f"The checkpoint has a '{MODEL_INFO_KEY}' entry but no '{MODEL_KEY}' state dict next to it.")
    return checkpoint, None


def require_model_file(path: str | os.PathLike | None) -> None:
    """Refuse a missing model file in one line naming the ways out (``None``: no model configured, nothing to check).

    Raises:
        ModelFileError: ``path`` is not a file.
    """
    if path is not None and not os.path.isfile(path):
        raise ModelFileError(
            f"{path}: no such model file; train one first (train.json), or use the shipped model "
            "(--ckpt_path bundle/models/pretrained/model.pt), or point --ckpt_path to a model.pt."
        )


def read_checkpoint(path: str | os.PathLike) -> tuple[Mapping[str, Any], dict[str, Any] | None]:
    """Load ``path`` on the CPU (``weights_only=True``: tensors and plain Python values only) and
    :func:`split_checkpoint` it."""
    require_model_file(path)
    check_pinned_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(
            f"{path} cannot be read as a PyTorch checkpoint ({reason}): the file is truncated or is not a model.pt; "
            "copy it again, or point ckpt_path to another checkpoint."
        ) from None
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dictionary (state dict).")
    try:
        return split_checkpoint(checkpoint)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def check_state_dict(
    network: nn.Module,
    state_dict: Mapping[str, Any],
    strict: bool = True,
    source: str | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> list[str]:
    """Check that ``state_dict`` fits ``network``; return the network's keys it lacks (``strict=False`` only).

    Raises:
        ValueError: one line, when ``model_info`` describes another network configuration (naming the differing
            keys), when tensors differ in shape, or (``strict``) when keys are missing or unexpected.
    """
    where = f"{source}: " if source else ""
    if model_info is not None:
        saved = dict(model_info.get("network") or {})
        diff = describe_mismatch(saved, describe_network(network))
        if diff:
            raise CheckpointMismatchError(
                f"{where}the checkpoint was trained with another network ({'; '.join(diff)}). Let the config build "
                "the network from the checkpoint (drop the overrides of those keys, e.g. --network_def, --features, "
                "--padding) or point to a checkpoint of this network."
            )
    own = network.state_dict()
    shapes = [
        k for k, v in state_dict.items() if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} tensors differ in shape (e.g. {k}: {list(state_dict[k].shape)} saved vs "
                f"{list(own[k].shape)} here)"
            )
        if strict and missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if strict and unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        hint = (
            (
                "they were saved by another network configuration: a model.pt with model_info builds its own "
                "network (let network_def build it; restart a MONAI Label server after replacing model.pt); for a "
                f"model.pt without model_info (saved before this bundle recorded it), override {_NETWORK_OVERRIDES}"
            )
            if model_info is None
            else "they do not match the file's own model_info: the file is damaged or was edited"
        )
        raise CheckpointMismatchError(
            f"{where}the weights do not fit the {type(network).__name__} built here ({', '.join(parts)}; it has "
            f"{len(own)} tensors); {hint}."
        )
    return missing


class CheckpointLoadMixin:
    """``load_state_dict`` for the bundle's networks (put this class first among the bases).

    Takes a bare state dict or a whole bundle checkpoint (``{"model": ..., "model_info": ...}``); checks the
    configuration in ``model_info`` and the tensor shapes first (:func:`check_state_dict`: one ``ValueError``
    naming the fix instead of PyTorch's list of size mismatches); with ``strict=False`` a partial load is logged
    as a warning naming how many tensors were not loaded.
    """

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        weights, info = split_checkpoint(state_dict)
        missing = check_state_dict(self, weights, strict=strict, model_info=info)  # type: ignore[arg-type]
        if missing:
            logger.warning(
                "Partial load into %s: %d of %d tensors are not in the checkpoint and keep their current values "
                "(e.g. %s).",
                type(self).__name__,
                len(missing),
                len(self.state_dict()),
                missing[0],
            )  # type: ignore[attr-defined]
        return super().load_state_dict(weights, strict=strict, assign=assign)  # type: ignore[misc]


def network_from_checkpoint(path: str | os.PathLike | None, default: nn.Module | None = None) -> nn.Module:
    """The network a checkpoint was trained with, holding its weights; the config's network when there is none.

    Args:
        path: the checkpoint (``model.pt``); ``None`` or a missing file gives ``default`` unchanged (fresh
            training, a MONAI Label app before its first training).
        default: the network the config builds (e.g. ``@networks#xnet``): returned when there is no checkpoint,
            loaded strictly from a bare state dict (no ``model_info``), and compared with ``model_info`` otherwise:
            its differing keys are named in one warning and not used (the checkpoint's configuration wins).

    Raises:
        ValueError: one line naming the fix, when the weights do not fit (a bare state dict of another
            configuration) or there is neither a checkpoint nor a default.
    """
    if path is None or not os.path.isfile(path):
        if default is None:
            raise ValueError(f"{path}: no such checkpoint and no default network to build; train a model first.")
        return default
    weights, info = read_checkpoint(path)
    saved = dict((info or {}).get("network") or {})
    if not is_buildable(saved):  # no model_info, or a network outside scripts.networks (only its class is recorded)
        if default is None:
            raise ValueError(
                f"{path} records no buildable network: give the config's network (default) to load it into."
            )
        network = default
    else:
        network = build_network(saved)
        if default is not None:
            diff = describe_mismatch(saved, describe_network(default))
            if diff:
                # expected whenever the config's defaults differ from the model: a warning only when the user
                # asked for network settings on the command line that the checkpoint overrules
                asked = overridden(NETWORK_SETTINGS)
                logger.log(
                    logging.WARNING if asked else logging.INFO,
                    "%s: building the network it was trained with; the config's differing values are not used "
                    "(%s)%s.",
                    path,
                    "; ".join(diff),
                    (
                        f"; your --{', --'.join(asked)} cannot change a trained network (train a new model for that)"
                        if asked
                        else ""
                    ),
                )
    check_state_dict(network, weights, strict=True, source=str(path), model_info=info)
    network.load_state_dict(weights)
    return network


def check_model_info(path: str | os.PathLike | None, **expected: Any) -> None:
    """Check the data conventions a checkpoint was trained with against the config's (e.g. ``class_names``,
    ``intensity_max``); nothing to check without a checkpoint or without ``model_info``.

    Raises:
        ValueError: one line naming each differing key with the saved value, and the overrides that fix it.
    """
    if path is None or not os.path.isfile(path):
        return
    _, info = read_checkpoint(path)
    if info is None:
        return
    saved = {k: info.get(k) for k in expected if info.get(k) is not None}
    now = {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in expected.items() if k in saved}
    diff = describe_mismatch(saved, now)
    if diff:
        fixes = " ".join(f"--{k} {_cli(saved[k])}" for k in sorted(saved) if saved[k] != now.get(k))
        if "class_names" in saved and saved["class_names"] != now.get("class_names"):
            fixes += f" --num_classes {len(saved['class_names'])}"
        raise ModelFileError(
            f"{path} was trained with other data conventions ({'; '.join(diff)}): override {fixes} (or use a model "
            "trained for this config)."
        )


def model_intensity_statistics(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The training images' intensity statistics a checkpoint records (its ``model_info``'s
    ``intensity_statistics``, :func:`scripts.data.intensity.training_statistics`), which the ``"auto"`` intensity
    rule maps other bit depths onto; ``None`` without a checkpoint or when it records none (a model saved by v0.8.0
    or earlier: then one INFO line says that ``"auto"`` keeps the rule of those versions)."""
    if path is None or not os.path.isfile(path):
        return None
    _, info = read_checkpoint(path)
    statistics = (info or {}).get("intensity_statistics")
    if isinstance(statistics, Mapping):
        return dict(statistics)
    logger.info(
        "%s records no training intensity statistics (a model saved by v0.8.0 or earlier): intensity_rule auto keeps "
        "the rule of those versions, images whose values exceed intensity_max are scaled by their own 0.5/99.5 "
        "percentiles onto 0..1 (train or fine-tune the model again to record them).",
        path,
    )
    return None


def _cli(value: Any) -> str:
    """A value as it is written on the ``monai.bundle`` command line."""
    if isinstance(value, (list, tuple)):
        return '"' + repr(list(value)).replace(" ", "") + '"'
    return repr(value)


#: The models shipped with the bundle, by the configs' ``shipped_model`` name: their files under ``models/``
#: (model cards in ``docs/README.md``). The U-Net is the default; the X-Net is chosen with ``--shipped_model xnet``.
SHIPPED_MODELS = {"unet": "pretrained/model.pt", "xnet": "pretrained/xnet.pt"}


def shipped_model_path(ckpt_dir: str | os.PathLike, name: str | None = None) -> str:
    """The file of the shipped model ``name`` (``None``: the default, ``"unet"``) under ``ckpt_dir``.

    Raises:
        ConfigError: ``name`` is not a shipped model.
    """
    name = "unet" if name is None else name
    if name not in SHIPPED_MODELS:
        raise ConfigError(
            f"shipped_model {name!r}: not a shipped model; use one of {', '.join(SHIPPED_MODELS)}, "
            "or --ckpt_path for a model file of yours."
        )
    return os.path.join(str(ckpt_dir), SHIPPED_MODELS[name])


def trained_or_pretrained(
    trained: str | os.PathLike, pretrained: str | os.PathLike | None = None, shipped_model: str | None = None
) -> str:
    """The checkpoint inference and evaluation use by default: the model you trained, else the shipped one.

    ``inference.json``/``evaluate.json`` set ``ckpt_path`` to this: ``trained`` (``models/model.pt``, written by
    ``train.json``) when it exists, else ``pretrained`` (``models/pretrained/model.pt``, the weights shipped with the
    bundle) when it exists, else ``trained`` (whose absence the configs then report). With ``shipped_model`` (a name
    of :data:`SHIPPED_MODELS`, the configs' ``--shipped_model``) the user asked for that shipped model by name:
    ``pretrained`` is used even beside a trained model, and its absence is refused. The choice is logged; pass
    ``--ckpt_path`` to pick a file yourself.

    Returns:
        The chosen path, as a string.

    Raises:
        ModelFileError: ``shipped_model`` is given and its file ``pretrained`` is missing.
    """
    trained = str(trained)
    if shipped_model is not None:
        if not pretrained or not os.path.isfile(pretrained):
            raise ModelFileError(
                f"{pretrained}: the shipped {shipped_model} model is missing (--shipped_model "
                f"{shipped_model}); restore it from the bundle archive, or leave --shipped_model out."
            )
        logger.info("Using the shipped %s model %s (--shipped_model).", shipped_model, pretrained)
        return str(pretrained)
    if os.path.isfile(trained):
        logger.info("Using the trained model %s.", trained)
    elif pretrained and os.path.isfile(pretrained):
        logger.info("Using the shipped pretrained model %s (no trained model at %s).", pretrained, trained)
        return str(pretrained)
    return trained
