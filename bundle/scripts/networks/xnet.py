"""X-Net (Fujii et al. 2021): two U-Net encoders, two decoders sharing the concatenated bottleneck, three outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv
from scripts.checks import check_option
from scripts.networks.blocks import UNetDecoder, UNetEncoder, check_network_args, crop_to, he_init, pad_to_multiple
from scripts.networks.checkpoint import CheckpointLoadMixin
from scripts.networks.config import init_args
from scripts.networks.size_rule import SizeRuleMixin, check_valid_input_size

__all__ = ["XNet", "XNET_SKIP_MODES"]

XNET_SKIP_MODES = ("both", "own", "crossed")


class XNet(CheckpointLoadMixin, nn.Module, SizeRuleMixin):
    """X-Net for cell image segmentation, 1D/2D/3D.

    Based on:

        Fujii, Tanaka, Ikeuchi and Hotta, "X-Net with Different Loss Functions for Cell Image Segmentation".
        CVPR Workshops 2021, pp. 3793-3800.

    The input goes to two U-Net encoders (each the contracting path of :class:`~scripts.networks.UNet`, bottleneck
    block included). Their bottleneck maps are concatenated (``2 * features[-1]`` channels) and fed to two U-Net
    decoders at once. Each decoder level concatenates skip feature maps from the encoders at the same resolution,
    chosen by ``skip``:

    - ``"both"`` (default): the concatenation of both encoders' maps goes to both decoders (``2 * features[i]``
      skip channels), so each decoder sees everything the two encoders extracted at that resolution, as it sees
      both bottlenecks. "Skip connections with the encoder feature maps at the same resolution" does not say
      which encoder; this is the reading that treats skips like the bottleneck, and the other two are offered;
    - ``"own"``: decoder 1 <- encoder 1, decoder 2 <- encoder 2 (two U-Nets that share their bottleneck);
    - ``"crossed"``: decoder 1 <- encoder 2, decoder 2 <- encoder 1 (the "X" drawn literally).

    Each decoder ends in a 1x1 convolution to ``out_channels`` (``output1``, ``output2``); ``output3`` is a 1x1
    convolution over the concatenation ``[output1, output2]``. All three are raw logits, each meant to be
    supervised by its own loss (the paper's "different loss functions").

    ``forward`` returns the tuple ``(output1, output2, output3)`` in training mode and ``output3`` alone in eval
    mode, so that inference, metrics, TorchScript export and MONAI Label see one tensor. The return annotation is
    a ``Union``, so ``torch.jit.script`` exports the model; the scripted model follows its own ``training`` flag
    the same way.

    Padding, dropout, batch norm and initialisation are as in :class:`~scripts.networks.UNet` (same size rule:
    ``padding``, ``depth``, ``size_divisor``, ``margin``, ``receptive_field``, ``output_size()``,
    ``valid_input_size()``).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3). Defaults to 2.
        in_channels: number of input channels. Defaults to 1.
        out_channels: number of output channels (classes) of each of the three outputs. Defaults to 2;
            the bundle's configs pass ``@num_classes``.
        features: channels at each resolution level of each encoder/decoder, shallowest first; the last entry is the
            bottleneck of each encoder. Defaults to ``(64, 128, 256, 512, 1024)``.
        padding: ``"same"`` or ``"valid"``. Defaults to ``"same"``.
        skip: ``"both"``, ``"own"`` or ``"crossed"``, see above. Defaults to ``"both"``.
        batch_norm: batch norm after each 3x3 convolution. Defaults to False.
        dropout: dropout rate at the end of each contracting path. Defaults to 0.

    Shapes:
        input ``(B, in_channels, *spatial)``; each output ``(B, out_channels, *spatial_out)``, ``spatial_out`` as
        for :class:`~scripts.networks.UNet`.

    Attributes:
        num_outputs: 3, the length of the training-mode output tuple.

    Raises:
        ValueError: for a bad argument (including ``skip``), and in ``forward`` (valid mode) for an invalid input
            size.
    """

    num_outputs: int = 3

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        padding: str = "same",
        skip: str = "both",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        features = check_network_args(spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout)
        check_option("skip", skip, XNET_SKIP_MODES)
        self.init_args = init_args(
            spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout, skip=skip
        )
        self.skip = skip
        self._init_size_rule(padding, len(features) - 1)
        conv_padding = 1 if padding == "same" else 0
        skip_channels = [2 * f if skip == "both" else f for f in features[:-1]]
        self.encoder1 = UNetEncoder(spatial_dims, in_channels, features, conv_padding, batch_norm, dropout)
        self.encoder2 = UNetEncoder(spatial_dims, in_channels, features, conv_padding, batch_norm, dropout)
        self.decoder1 = UNetDecoder(
            spatial_dims, 2 * features[-1], skip_channels, features[:-1], conv_padding, batch_norm
        )
        self.decoder2 = UNetDecoder(
            spatial_dims, 2 * features[-1], skip_channels, features[:-1], conv_padding, batch_norm
        )
        self.head1 = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)
        self.head2 = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)
        self.head3 = Conv[Conv.CONV, spatial_dims](2 * out_channels, out_channels, kernel_size=1)
        self.apply(he_init)

    def _decoder_skips(
        self, maps1: List[torch.Tensor], maps2: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Skip maps of decoder 1 and decoder 2 (shallowest first) from the two encoders' block outputs."""
        if self.skip == "own":
            return maps1[:-1], maps2[:-1]
        if self.skip == "crossed":
            return maps2[:-1], maps1[:-1]
        both: List[torch.Tensor] = []
        for level in range(self.depth):
            both.append(torch.cat([maps1[level], maps2[level]], dim=1))
        return both, both

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        starts: List[int] = []
        size: List[int] = []
        if self.padding == "same":
            x, starts, size = pad_to_multiple(x, self.size_divisor)
        else:
            check_valid_input_size(x, self.smallest_input, self.size_divisor)
        maps1 = self.encoder1(x)
        maps2 = self.encoder2(x)
        bottleneck = torch.cat([maps1[-1], maps2[-1]], dim=1)
        skips1, skips2 = self._decoder_skips(maps1, maps2)
        out1 = self.head1(self.decoder1(bottleneck, skips1))
        out2 = self.head2(self.decoder2(bottleneck, skips2))
        out3 = self.head3(torch.cat([out1, out2], dim=1))
        if self.padding == "same":
            out1, out2, out3 = crop_to(out1, starts, size), crop_to(out2, starts, size), crop_to(out3, starts, size)
        if self.training:
            return out1, out2, out3
        return out3
