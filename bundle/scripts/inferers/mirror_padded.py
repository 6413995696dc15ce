"""One forward pass over a mirror-padded image, cropped back to the image: how a valid-convolution U-Net trains.

The U-Net paper trains on input tiles larger than the segmentation they produce, the missing context at the image
border extrapolated by mirroring (Ronneberger et al. 2015, section 2 and figure 2). :class:`MirrorPaddedInferer`
does this for a whole patch: it mirror pads the patch so that the network's output covers it, runs the network once
and crops every output back to the patch, so labels and outputs have the same size and any loss applies unchanged.
Networks with ``same`` padding are called as they are (the inferer is then :class:`monai.inferers.SimpleInferer`).
Unlike :class:`~scripts.inferers.OverlapTileInferer`, every output of a multi-output network (X-Net in training mode)
is kept, so the trainer's loss sees them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.data.meta_tensor import MetaTensor
from monai.inferers import Inferer
from scripts.checks import check_option
from scripts.networks.size_rule import size_rule_of
from scripts.networks.wrappers import unwrap_network
from scripts.transforms.mirror_pad import PAD_MODES, mirror_pad

__all__ = ["MirrorPaddedInferer"]


class MirrorPaddedInferer(Inferer):
    """Run ``network`` once on the mirror-padded input and crop its output(s) to the input's spatial size.

    For a valid-convolution network (``network.padding == "valid"``, with ``margin`` and ``valid_input_size()`` as on
    ``scripts.networks.UNet`` and ``XNet``), each spatial dimension of size ``s`` is padded to
    ``valid_input_size(s)``: ``margin`` pixels before, the rest after, so output pixel ``i`` is the prediction for
    input pixel ``i`` and outputs ``[0, s)`` are kept. For other networks (no ``padding`` attribute, or ``"same"``)
    the network is called on the input unchanged. The network receives plain tensors (a MONAI ``MetaTensor`` input is
    unwrapped with ``as_tensor()``), so the training step does not pay for metadata tracking. Gradients flow as in a
    plain call: use it as a trainer's inferer::

        "train": {"inferer": {"_target_": "scripts.inferers.MirrorPaddedInferer"}}

    Shapes: input ``(B, C_in, *spatial)`` -> output ``(B, C_out, *spatial)``, or a tuple of those when the network
    returns a tuple/list.

    Args:
        mode: how the image is padded: ``"reflect"`` (mirror, the paper's choice; default), ``"replicate"`` or
            ``"constant"`` (zeros).

    Raises:
        ValueError: an unknown ``mode``.
    """

    def __init__(self, mode: str = "reflect") -> None:
        super().__init__()
        self.mode = check_option("mode", mode, PAD_MODES)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """
        Args:
            inputs: (B, C, *spatial) batch.
            network: the model; called as ``network(padded, *args, **kwargs)``.
            args: extra positional arguments for ``network``.
            kwargs: extra keyword arguments for ``network``.

        Returns:
            the network's output(s), each cropped to ``inputs``' spatial size (a tuple when the network returns
            several).

        Raises:
            ValueError: ``inputs`` is not a (B, C, *spatial) tensor, or an output is smaller than the input.
        """
        net = size_rule_of(unwrap_network(network))
        # plain tensors: a MetaTensor would make every op of the forward and backward pass (and the loss) track
        # metadata that training does not use
        image = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if getattr(net, "padding", "same") != "valid":
            return network(image, *args, **kwargs)
        if not isinstance(image, torch.Tensor) or image.ndim < 3:
            raise ValueError(f"inputs must be a (B, C, *spatial) tensor, got {getattr(inputs, 'shape', type(inputs))}.")
        sizes = tuple(image.shape[2:])
        margin = int(net.margin)
        pads = [(margin, net.valid_input_size(s) - s - margin) for s in sizes]
        pred = network(mirror_pad(image, pads, self.mode), *args, **kwargs)

        def crop(out: torch.Tensor) -> torch.Tensor:
            if any(o < s for o, s in zip(out.shape[2:], sizes)):
                raise ValueError(
                    f"the network turned a {[s + sum(p) for s, p in zip(sizes, pads)]}-pixel input into "
                    f"{list(out.shape[2:])}-pixel outputs, smaller than the {list(sizes)}-pixel image; its margin and "
                    "valid_input_size() do not describe it (see scripts.networks.UNet)."
                )
            return out[(slice(None), slice(None), *(slice(0, s) for s in sizes))]

        if isinstance(pred, (tuple, list)):
            return tuple(crop(p) for p in pred)
        return crop(pred)
