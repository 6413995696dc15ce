"""Fine-tuning: start a training run from a saved model, with this run's classes and input channels.

:func:`finetune_network` is what ``train.json``'s ``initial_network`` calls (``--finetune_from <model.pt>``; the
override file ``configs/recipes/finetune.json`` sets it to the shipped model). It builds the network the checkpoint
records (its class, widths, padding: ``model_info``) with the config's ``in_channels`` and number of classes, copies
every saved tensor whose name and shape fit, and keeps the fresh initialisation (the network's own, as for training
from scratch) of the tensors that depend on what changed:

- the output layers (``head.weight``, ``head.bias``; X-Net's three heads) when the classes differ from the
  checkpoint's (other names or another number);
- the first convolution when ``in_channels`` differs: derived from the saved one instead when it can be (each new
  input channel gets the sum of the saved channels' weights divided by the new count, e.g. grey weights repeated
  and divided by 3 for RGB, so that a grey picture stored as RGB gives the same response), else re-initialised.

What it did is logged in one line ("loaded 116 of 118 tensors; re-initialised head.weight, head.bias for 2
classes"). Any other tensor that does not fit (another network, a damaged file) is refused in one line, never
started from random weights silently. MONAI's ``CheckpointLoader(strict_shape=False)`` is not used: in MONAI 1.6.1
it matches no key of a bundle checkpoint (``{"model", "model_info"}``) and loads nothing.

A resumed run (``--resume True``) continues from its own checkpoint: the network is built from that checkpoint's
``model_info`` and the fine-tuning source is not read again (``ResumeCheckpointLoader`` loads every tensor).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from scripts.errors import UserError
from scripts.networks.checkpoint import NETWORK_SETTINGS, CheckpointMismatchError, ModelFileError, read_checkpoint
from scripts.networks.config import build_network, describe_network, is_buildable, network_config
from scripts.networks.model_info import describe_mismatch
from scripts.overrides import overridden

__all__ = ["FineTuneReport", "finetune_network", "transfer_weights"]

logger = logging.getLogger(__name__)

#: Settings a fine-tuned network takes from the config, not from the checkpoint.
_OWN = ("in_channels", "out_channels")


class FineTuneReport:
    """What :func:`transfer_weights` did, tensor by tensor (names of the network's state dict).

    Attributes:
        loaded: copied from the checkpoint unchanged.
        adapted: first-convolution weights derived from the saved ones for another number of input channels.
        reinitialised: kept as the network initialised them (they depend on the classes or the input channels).
        total: the network's number of tensors.
    """

    def __init__(self, total: int, in_channels: tuple[int | None, int], class_text: str) -> None:
        self.total, self.in_channels, self.class_text = total, in_channels, class_text
        self.loaded: list[str] = []
        self.adapted: list[str] = []
        self.reinitialised: list[str] = []

    def __str__(self) -> str:
        text = f"loaded {len(self.loaded)} of {self.total} tensors"
        saved_in, new_in = self.in_channels
        if self.adapted:
            text += (
                f"; adapted {', '.join(self.adapted)} from {saved_in} to {new_in} input channels (the saved "
                f"weights summed over their channels, divided by {new_in})"
            )
        if self.reinitialised:
            text += f"; re-initialised {', '.join(self.reinitialised)} {self.class_text}"
        return text


def _shapes(config: Mapping[str, Any], **change: int) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the network ``config`` builds with ``change`` applied (built on the meta device: no memory,
    no random numbers drawn)."""
    with torch.device("meta"):
        network = build_network({**config, **change})
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def transfer_weights(
    network: nn.Module,
    weights: Mapping[str, torch.Tensor],
    same_classes: bool,
    saved_in_channels: int | None = None,
    source: str = "the checkpoint",
) -> FineTuneReport:
    """Copy the tensors of ``weights`` that fit into ``network`` (one of the bundle's networks, freshly built).

    Args:
        network: the network to start from; its tensors that are not copied keep their values.
        weights: the saved state dict.
        same_classes: whether the saved output layers are for this network's classes (then they are copied too).
        saved_in_channels: the checkpoint's input channels (``None``: unknown, taken from the saved tensor).
        source: the checkpoint, for messages.

    Returns:
        the :class:`FineTuneReport`.

    Raises:
        CheckpointMismatchError: one line, when a tensor that does not depend on the classes or the input channels
            is absent from ``weights`` or has another shape there (another network, or a damaged file).
    """
    config = network_config(network)
    own = network.state_dict()
    shapes = {k: tuple(v.shape) for k, v in own.items()}
    # the tensors whose shape follows the classes / the input channels: those that change when they change
    by_classes = {k for k, s in _shapes(config, out_channels=config["out_channels"] + 1).items() if s != shapes[k]}
    by_inputs = {k for k, s in _shapes(config, in_channels=config["in_channels"] + 1).items() if s != shapes[k]}
    new_in, out = config["in_channels"], config["out_channels"]
    report = FineTuneReport(len(own), (saved_in_channels, new_in), f"for {out} classes")
    update: dict[str, torch.Tensor] = {}
    unfit: list[str] = []
    for name, shape in shapes.items():
        saved = weights.get(name)
        saved_shape = tuple(saved.shape) if isinstance(saved, torch.Tensor) else None
        if name in by_classes and not same_classes:
            report.reinitialised.append(name)
        elif saved_shape == shape:
            update[name] = saved
            report.loaded.append(name)
        elif (
            name in by_inputs
            and name not in by_classes
            and saved_shape is not None
            and len(saved_shape) == len(shape)
            and saved_shape[:1] + saved_shape[2:] == shape[:1] + shape[2:]
            and saved.is_floating_point()
            and saved_shape[1] == (saved_in_channels or saved_shape[1])
        ):
            update[name] = saved.sum(dim=1, keepdim=True).expand(shape) / new_in
            report.adapted.append(name)
            report.in_channels = (saved_shape[1], new_in)
        elif name in by_classes or name in by_inputs:
            report.reinitialised.append(name)
        else:
            unfit.append(name)
    if unfit:
        name = unfit[0]
        saved = weights.get(name)
        example = (
            f"{name}: {list(saved.shape)} saved vs {list(shapes[name])} here"
            if isinstance(saved, torch.Tensor)
            else f"{name} is not in the file"
        )
        raise CheckpointMismatchError(
            f"{source}: cannot fine-tune from it: {len(unfit)} of the {len(own)} tensors of the "
            f"{type(network).__name__} built here do not fit (e.g. {example}), "
            "and only the layers that depend on the classes or the input channels may start afresh; it holds another "
            "network: give --finetune_from a model.pt of this bundle (it records its network), or, for a file "
            "without model_info, set --network_def and --features as it was trained."
        )
    with torch.no_grad():
        for name, tensor in update.items():
            own[name].copy_(tensor.to(own[name].dtype))
    return report


def finetune_network(
    path: str | os.PathLike | None,
    default: nn.Module,
    in_channels: int | None = None,
    out_channels: int | None = None,
    class_names: Sequence[str] | None = None,
    resume_from: str | os.PathLike | None = None,
    missing_ok: bool = False,
) -> nn.Module:
    """The network a run trains: ``default``, or with ``path`` the checkpoint's network fine-tuned as described in
    the module docstring.

    Args:
        path: the model to fine-tune from (``--finetune_from``); ``None``: no fine-tuning, ``default`` is returned.
        default: the config's network (``network_def``): returned without ``path``, and the network the weights go
            into when the checkpoint records no network (a bare state dict, saved before ``model_info``).
        in_channels, out_channels: this run's input channels and number of classes (``None``: ``default``'s).
        class_names: this run's classes; the output layers are copied only when they equal the checkpoint's (or, for
            a checkpoint without class names, when their number is the same).
        resume_from: the run's own checkpoint when it resumes (``train.json``'s ``resume_ckpt``): the network is
            built from its ``model_info`` and ``path`` is not read.
        missing_ok: a missing ``path`` gives ``default`` (logged) instead of an error: for a config whose source
            may not exist yet (e.g. a MONAI Label app's ``models/model.pt`` before its first training). Off by
            default: a mistyped ``--finetune_from`` must not train from scratch.

    Raises:
        ModelFileError: ``path`` is missing or not a checkpoint.
        CheckpointMismatchError: the checkpoint holds another network (see :func:`transfer_weights`).
    """
    if path is None:
        return default
    if resume_from is not None:
        _, info = read_checkpoint(resume_from)
        saved = dict((info or {}).get("network") or {})
        logger.info("Resuming the fine-tuned run from %s: its own weights; %s is not read again.", resume_from, path)
        return build_network(saved) if is_buildable(saved) else default
    if not os.path.isfile(path):
        if missing_ok:
            logger.info("No %s yet: training %s from its initialisation.", path, type(default).__name__)
            return default
        raise ModelFileError(
            f"--finetune_from {path}: no such model file; give a model.pt (e.g. the shipped "
            "bundle/models/pretrained/model.pt)."
        )
    weights, info = read_checkpoint(path)
    here = describe_network(default)
    want = {k: v for k, v in (("in_channels", in_channels), ("out_channels", out_channels)) if v is not None}
    saved = dict((info or {}).get("network") or {})
    if is_buildable(saved):
        diff = describe_mismatch(
            {k: v for k, v in saved.items() if k not in _OWN}, {k: v for k, v in here.items() if k not in _OWN}
        )
        config = {**saved, **{k: here[k] for k in _OWN if k in here}, **want}
        network = build_network(config)
        if diff:
            asked = [k for k in overridden(NETWORK_SETTINGS) if k not in ("in_channels", "num_classes", "class_names")]
            logger.log(
                logging.WARNING if asked else logging.INFO,
                "%s: fine-tuning the network it was trained with; the config's differing values are not used "
                "(%s)%s.",
                path,
                "; ".join(diff),
                f"; your --{', --'.join(asked)} cannot change it (train from scratch for that)" if asked else "",
            )
    elif not is_buildable(here):
        raise UserError(
            f"--finetune_from {path}: fine-tuning needs one of the bundle's networks (scripts.networks); "
            f"the checkpoint records {saved.get('_target_', 'no network')} and the config builds "
            f"{here['_target_']}."
        )
    else:
        config = {**here, **want}
        network = build_network(config) if want and any(here.get(k) != v for k, v in want.items()) else default
    saved_names = (info or {}).get("class_names")
    if class_names is not None and saved_names is not None:
        same = [str(c) for c in class_names] == [str(c) for c in saved_names]
    else:
        same = not saved or saved.get("out_channels") in (None, config["out_channels"])
    report = transfer_weights(
        network, weights, same_classes=same, saved_in_channels=saved.get("in_channels"), source=str(path)
    )
    if report.reinitialised and saved_names is not None and class_names is not None:
        report.class_text += f" ({', '.join(map(str, class_names or []))}; the checkpoint's: {', '.join(saved_names)})"
    logger.info("Fine-tuning from %s: %s.", path, report)
    return network
