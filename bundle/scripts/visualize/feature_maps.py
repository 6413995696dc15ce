"""The X-Net paper's feature-map picture: mean over channels of the last layer's feature maps.

Fujii et al. (X-Net) show, per image, the feature maps that enter the final 1x1 convolution averaged over channels,
normalised to 0..1 and colour-mapped blue (low) -> red (high). Here the features are captured with a PyTorch
forward hook on a named module (by default its *input*, i.e. what the final 1x1 conv sees); the network itself is
not changed, and its output is the same with or without the hook.

Tiled inference (sliding window, overlap-tile) calls the network once per tile, so a single hook sees tiles only.
:class:`MeanFeatureMap` therefore wraps the network as a module whose *output* is the channel-mean feature map;
run it through the same inferer as the network and the tiles are stitched like logits (the channel mean is linear,
so stitching the mean equals the mean of the stitched features). It exposes the wrapped network as ``.module``
(like ``DataParallel``), so inferers that read the network's geometry attributes through ``.module`` (e.g.
``scripts.inferers.OverlapTileInferer``) see the real network's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import ensure_tuple

from scripts.visualize.confidence import colormap_rgb

__all__ = ["FeatureMapHook", "MeanFeatureMap", "feature_map_to_rgb", "last_feature_modules", "pointwise_conv_names"]


def last_feature_modules(network: torch.nn.Module) -> list[str]:
    """Names of the modules whose input is the network's last layer of feature maps, for the feature-map picture.

    U-Net: its 1x1 head; X-Net: both decoders' heads (``head1``, ``head2``; the X-Net paper averages the last
    decoder layers, not the 5-channel input of the ensemble conv); Double U-Net: the second U-Net's head; Ensemble
    U-Net: both U-Nets' heads. Other networks: the last 1x1 convolution.

    Raises:
        ValueError: the network has no 1x1 convolution to hook.
    """
    from scripts.networks import DoubleUNet, EnsembleUNet, UNet, XNet

    if isinstance(network, XNet):
        return ["head1", "head2"]
    if isinstance(network, UNet):
        return ["head"]
    if isinstance(network, DoubleUNet):
        return ["unet2.head"]
    if isinstance(network, EnsembleUNet):
        return ["unet1.head", "unet2.head"]
    names = pointwise_conv_names(network)
    if not names:
        raise ValueError(f"{type(network).__name__} has no 1x1 convolution; give feature_module by name.")
    return names[-1:]


def pointwise_conv_names(network: torch.nn.Module) -> list[str]:
    """Names of the network's 1x1 (pointwise) convolutions, in registration order: candidates for the hook."""
    return [
        name
        for name, m in network.named_modules()
        if isinstance(m, torch.nn.modules.conv._ConvNd) and all(k == 1 for k in m.kernel_size)
    ]


class FeatureMapHook:
    """Capture the input (or output) of named modules on every forward pass, with forward hooks.

    Use as a context manager (the hooks are removed on exit) or call :meth:`remove`. When a module runs several
    times in one forward pass, the last call is kept.

    Args:
        network: the model.
        module_names: one name or several, as in ``network.named_modules()`` (e.g. ``"final_conv"``,
            ``"head.conv"``).
        capture: ``"input"`` (default: the features entering the module) or ``"output"``.

    Raises:
        ValueError: an unknown module name (the message lists the network's 1x1 convolutions) or ``capture``.
    """

    def __init__(self, network: torch.nn.Module, module_names: Sequence[str] | str, capture: str = "input") -> None:
        if capture not in ("input", "output"):
            raise ValueError(f"capture must be 'input' or 'output', got {capture!r}.")
        modules = dict(network.named_modules())
        self.module_names = tuple(ensure_tuple(module_names))
        missing = [n for n in self.module_names if n not in modules]
        if missing or not self.module_names:
            raise ValueError(
                f"module(s) {missing or module_names} not found in {type(network).__name__}; its 1x1 convolutions "
                f"are {pointwise_conv_names(network)}."
            )
        self.capture = capture
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.module_names]

    def _hook(self, name: str):
        def hook(_module, inputs, output):
            value = inputs[0] if self.capture == "input" else output
            self.features[name] = value.detach()

        return hook

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureMapHook:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class MeanFeatureMap(torch.nn.Module):
    """Wrap a network so that its output is the channel-mean of hooked feature maps, (B, 1, *spatial).

    The features of all named modules are concatenated along channels (resized, bilinear, to the network's output
    size when they differ) and averaged. Not normalised: the 0..1 normalisation must come after stitching, per
    image (:func:`feature_map_to_rgb`).

    Args:
        network: the model; not modified (a hook is registered per call and removed after it).
        module_names: module(s) whose input (or output) is taken; see :class:`FeatureMapHook`.
        capture: ``"input"`` (default) or ``"output"``.
    """

    def __init__(self, network: torch.nn.Module, module_names: Sequence[str] | str, capture: str = "input") -> None:
        super().__init__()
        FeatureMapHook(network, module_names, capture).remove()  # validate the names now, not at the first call
        self.module = network
        self.module_names = module_names
        self.capture = capture

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with FeatureMapHook(self.module, self.module_names, self.capture) as hook:
            out = self.module(x)
        if isinstance(out, (tuple, list)):  # deep-supervision outputs: the last is the final prediction
            out = out[-1]
        size = out.shape[2:]
        feats = [hook.features[n] for n in hook.module_names]
        feats = [f if f.shape[2:] == size else F.interpolate(f, size=size, mode="bilinear") for f in feats]
        return torch.cat(feats, dim=1).float().mean(dim=1, keepdim=True)


def feature_map_to_rgb(feature_map: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Normalise a 2D feature map to 0..1 (its own min..max; constant -> 0) and colour it, blue (low) -> red (high).

    Args:
        feature_map: ``(H, W)``.
        cmap: matplotlib colormap. Defaults to 'jet' (the X-Net paper's blue -> red); 'bwr' or 'coolwarm' are
            blue-white-red alternatives.

    Returns:
        ``uint8`` ``(H, W, 3)``.
    """
    fm = np.asarray(feature_map, dtype=np.float64)
    if fm.ndim != 2:
        raise ValueError(f"expected an (H, W) feature map, got shape {fm.shape}.")
    lo, hi = float(fm.min()), float(fm.max())
    return colormap_rgb((fm - lo) / (hi - lo) if hi > lo else np.zeros_like(fm), cmap)
