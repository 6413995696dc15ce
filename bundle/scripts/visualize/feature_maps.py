"""The X-Net paper's feature-map picture: mean over channels of the last layer's feature maps.

Fujii et al. (X-Net) show, per image, the feature maps that enter the final 1x1 convolution averaged over channels,
normalised to 0..1 and colour-mapped blue (low) -> red (high). Here the features are captured with PyTorch forward
hooks on named modules (by default their *input*, i.e. what the final 1x1 conv sees); the network itself is not
changed.

Tiled inference (overlap-tile, sliding window) calls the network once per tile, so a hook sees tiles only.
:class:`FeatureMapCapture` therefore hands the channel mean of each tile's features to the inferer as one more output
channel, which the inferer stitches like the logits (the channel mean is linear, so stitching the mean equals the mean
of the stitched features), and splits it off again after the evaluator's forward pass: the picture costs no second
pass, and the prediction is exactly what the network alone gives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.utils import ensure_tuple, min_version, optional_import
from scripts.inferers.memory import is_probing
from scripts.networks.wrappers import unwrap_network
from scripts.visualize.confidence import colormap_rgb

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = [
    "FeatureMapCapture",
    "FeatureMapHook",
    "channel_mean",
    "feature_map_to_rgb",
    "last_feature_modules",
    "pointwise_conv_names",
]

logger = logging.getLogger(__name__)


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
    times in one forward pass, the last call is kept. Calls during the overlap-tile inferer's memory probe
    (:func:`scripts.inferers.is_probing`) are not recorded.

    Args:
        network: the model.
        module_names: one name or several, as in ``network.named_modules()`` (e.g. ``"final_conv"``,
            ``"head.conv"``).
        capture: ``"input"`` (default: the features entering the module) or ``"output"``.

    Raises:
        ValueError: an unknown module name (the message lists the network's 1x1 convolutions) or ``capture``.
        RuntimeError: the modules take no forward hooks (TorchScript).
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
        self._handles: list = []
        try:
            for n in self.module_names:
                self._handles.append(modules[n].register_forward_hook(self._hook(n)))
        except RuntimeError:  # e.g. a TorchScript module: none of the hooks stays
            self.remove()
            raise

    def _hook(self, name: str):
        def hook(_module, inputs, output):
            if not is_probing():  # the overlap-tile inferer's memory probe is not part of the inference
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


def channel_mean(features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """The channel mean of feature maps, (B, 1, *size) float32: concatenated along channels (each resized, bilinear, to
    ``size`` when it differs) and averaged. Not normalised: the 0..1 normalisation comes after stitching, per image
    (:func:`feature_map_to_rgb`)."""
    size = tuple(size)
    feats = [f if tuple(f.shape[2:]) == size else F.interpolate(f, size=size, mode="bilinear") for f in features]
    return torch.cat(feats, dim=1).float().mean(dim=1, keepdim=True)


class FeatureMapCapture:
    """Ignite handler: the channel-mean feature map of every image, taken during the evaluator's own forward pass.

    From ``ITERATION_STARTED`` to MONAI's ``FORWARD_COMPLETED`` of each iteration, a :class:`FeatureMapHook` takes
    what enters the feature modules at every call of the network, and a forward hook on the network appends its
    :func:`channel_mean` to the network's output as one more channel (in the output's dtype: half precision under
    CUDA autocast), so the inferer stitches it tile by tile like the prediction (overlap-tile: cropped and abutted;
    sliding window: blended). At ``FORWARD_COMPLETED`` the channel is split off again:
    ``engine.state.output[output_key]`` gets the (B, 1, *spatial) map (float32) and ``engine.state.output[pred_key]``
    the prediction alone (the same values, dtype and metadata as without this handler). The overlap-tile inferer's
    memory probe is skipped (:func:`scripts.inferers.is_probing`), so its tiling plan does not change either. The
    network's mode and weights are not touched.

    When the network cannot take hooks (a TorchScript module) or has no module to hook (no 1x1 convolution, with
    ``feature_module=None``), a warning is logged and nothing is captured: :class:`scripts.visualize.PictureWriter`
    then writes every picture but ``features.png``.

    Example (inference.json, ``handlers``)::

        {"_target_": "scripts.visualize.FeatureMapCapture", "_disabled_": "$not @feature_maps"}

    Args:
        network: the model; ``None`` (default): the engine's ``network``.
        feature_module: name(s) of the module(s) whose input is the last layer's feature maps (see
            :class:`FeatureMapHook`); ``None`` (default): :func:`last_feature_modules`.
        output_key: where the feature map goes in the engine's output.
        pred_key: the engine output's prediction (SupervisedEvaluator: ``"pred"``).
        capture: ``"input"`` (default) or ``"output"`` of the feature modules.

    Raises:
        ValueError: ``feature_module`` names a module the network does not have, or a bad ``capture``.
    """

    def __init__(
        self,
        network: torch.nn.Module | None = None,
        feature_module: Sequence[str] | str | None = None,
        output_key: str = "features",
        pred_key: str = "pred",
        capture: str = "input",
    ) -> None:
        if capture not in ("input", "output"):
            raise ValueError(f"capture must be 'input' or 'output', got {capture!r}.")
        self.network, self.feature_module = network, feature_module
        self.output_key, self.pred_key, self.capture = output_key, pred_key, capture
        self.module: torch.nn.Module | None = None
        self.module_names: tuple[str, ...] = ()
        self._hook: FeatureMapHook | None = None
        self._handle: Any = None
        self._channels: int | None = None
        if network is not None:
            self._resolve(network)

    def _resolve(self, network: torch.nn.Module) -> None:
        """Find the modules to hook; on a network that takes no hooks (or has nothing to hook), warn and disable."""
        self.module, self.module_names = None, ()
        module = unwrap_network(network)
        try:
            module.register_forward_hook(lambda *_: None).remove()
        except RuntimeError as e:  # TorchScript: "register_forward_hook is not supported on ScriptModules"
            logger.warning(
                "FeatureMapCapture: no feature-map picture: %s takes no forward hooks (%s).", type(module).__name__, e
            )
            return
        if self.feature_module is not None:
            names = tuple(ensure_tuple(self.feature_module))
        else:
            try:
                names = tuple(last_feature_modules(module))
            except ValueError as e:
                logger.warning("FeatureMapCapture: no feature-map picture: %s", e)
                return
        FeatureMapHook(module, names, self.capture).remove()  # the names exist (ValueError otherwise)
        self.module, self.module_names = module, names

    def attach(self, engine: Engine) -> None:
        """Hook the network for each iteration's forward pass (``ITERATION_STARTED`` .. ``FORWARD_COMPLETED``); without
        a ``network``, take the engine's when it starts."""
        if self.network is None:
            engine.add_event_handler(Events.STARTED, lambda e: self._resolve(e.network))
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._split)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.remove)  # also after a failed forward pass

    def remove(self, _engine: Engine | None = None) -> None:
        """Remove the hooks (idempotent). Done at ``FORWARD_COMPLETED``, and at ``ITERATION_COMPLETED`` after a failed
        forward pass; a run that stops with an exception inside the pass leaves them until this is called."""
        if self._hook is not None:
            self._hook.remove()
            self._handle.remove()
            self._hook = self._handle = None

    def _start(self, _engine: Engine | None = None) -> None:
        self.remove()
        self._channels = None
        if self.module is None:
            return
        self._hook = FeatureMapHook(self.module, self.module_names, self.capture)
        self._handle = self.module.register_forward_hook(self._append)

    def _append(self, _module: torch.nn.Module, _args: Any, output: Any) -> Any:
        """Forward hook of the network: its output with the channel-mean feature map appended (the last output of
        a tuple, as the inferers keep it)."""
        features = self._hook.features if self._hook is not None else {}
        if is_probing() or any(n not in features for n in self.module_names):
            return None
        out = output[-1] if isinstance(output, (tuple, list)) else output
        fm = channel_mean([features.pop(n) for n in self.module_names], out.shape[2:])
        self._channels = int(out.shape[1])
        joined = torch.cat([out, fm.to(out.dtype)], dim=1)  # the prediction's values and dtype untouched
        return (*output[:-1], joined) if isinstance(output, (tuple, list)) else joined

    def _split(self, engine: Engine) -> None:
        """Take the appended channel out of the prediction into ``output_key``."""
        self.remove()
        output, channels = engine.state.output, self._channels
        pred = output.get(self.pred_key) if isinstance(output, dict) else None
        if channels is None or not isinstance(pred, torch.Tensor):
            return
        if pred.ndim < 3 or pred.shape[1] != channels + 1:
            logger.warning(
                "FeatureMapCapture: the inferer returned %s channels, not the network's %d plus the "
                "feature map; no feature-map picture.",
                pred.shape[1] if pred.ndim > 1 else "no",
                channels,
            )
            return
        plain = pred.as_tensor() if isinstance(pred, MetaTensor) else pred
        logits = plain[:, :channels]
        output[self.pred_key] = (
            MetaTensor(logits).copy_meta_from(pred, copy_attr=False) if isinstance(pred, MetaTensor) else logits
        )
        output[self.output_key] = plain[:, channels:].float()


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
