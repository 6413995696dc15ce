"""The weight files of an export: the bundle's network as a probability model, saved as TorchScript, ONNX and a
state dict for the plain-PyTorch architecture :mod:`scripts.export.torch_unet`.

All three compute the same function of a ``(B, C, y, x)`` image already scaled to the network's 0..1 input:
:class:`ProbabilityNetwork` (the network on the transposed image, softmax over the classes, transposed back).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from scripts.networks import UNet

__all__ = [
    "ONNX_OPSET",
    "ProbabilityNetwork",
    "architecture_kwargs",
    "save_onnx",
    "save_state_dict",
    "save_torchscript",
]

#: ONNX opset of the exported graph (the one ``monai.bundle onnx_export`` is documented with).
ONNX_OPSET = 17


class ProbabilityNetwork(nn.Module):
    """``softmax(network(x^T))^T``: class probabilities of a ``(B, C, y, x)`` image for a bundle network.

    The bundle's models see images as MONAI's ``LoadImage`` returns them, columns first (``(C, x, y)``), so the
    image is transposed before the network and the probabilities after it: the result is the bundle's own
    prediction in the file's row-major orientation.

    Args:
        network: a bundle network in eval mode (it returns one tensor of logits; X-Net's forward is typed to return
            its three training outputs too, of which the last is the one it returns in eval mode).
        transpose_xy: transpose as described (default True).
    """

    def __init__(self, network: nn.Module, transpose_xy: bool = True):
        super().__init__()
        self.network = network
        self.transpose_xy = transpose_xy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transpose_xy:
            x = x.transpose(-2, -1)
        logits = self.network(x)
        if not isinstance(logits, torch.Tensor):  # X-Net and the baselines: typed with their training outputs
            logits = logits[-1]  # the final output, the one it returns in eval mode
        y = torch.softmax(logits, dim=1)
        return y.transpose(-2, -1) if self.transpose_xy else y


def architecture_kwargs(network: nn.Module) -> dict[str, Any] | None:
    """The keyword arguments of :class:`scripts.export.torch_unet.UNet2d` that rebuild ``network`` (its state dict
    loads strictly), or ``None`` when it cannot (a network other than a 2D same-padding :class:`UNet`)."""
    if type(network) is not UNet or network.padding != "same":
        return None
    args = network.init_args
    if args["spatial_dims"] != 2:
        return None
    return {
        "in_channels": args["in_channels"],
        "out_channels": args["out_channels"],
        "features": list(args["features"]),
        "batch_norm": args["batch_norm"],
        "dropout": args["dropout"],
        "transpose_xy": True,
        "softmax": True,
    }


def save_state_dict(network: nn.Module, path: str | os.PathLike) -> Path:
    """The network's state dict (plain tensors on the CPU), loadable into ``UNet2d(**architecture_kwargs(...))``."""
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, path)
    return Path(path)


def save_torchscript(model: nn.Module, path: str | os.PathLike) -> Path:
    """``model`` scripted (any input size, as the eager model) and saved."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        torch.jit.save(torch.jit.script(model), str(path))
    return Path(path)


def save_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """``model`` traced on ``example`` and saved as ONNX (opset :data:`ONNX_OPSET`, the legacy exporter) with
    dynamic batch and spatial axes: the networks' internal padding is traced from the input's size
    (:func:`scripts.networks.blocks.pad_to_multiple`), so the graph takes other sizes than the example's."""
    with warnings.catch_warnings():
        # the legacy exporter's deprecation, and the padding's size tests that the trace fixes as at the example
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        axes = {0: "batch", 2: "y", 3: "x"}
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": axes},
        )
    return Path(path)
