"""The bundle's 2D U-Net in plain PyTorch: the architecture source of a bioimage.io package's ``pytorch_state_dict``
weights.

This file is copied into the package as it is and imported there by tools that have PyTorch but neither MONAI nor
this bundle (bioimageio.core, the BioImage Model Zoo's test runner), so it imports nothing but ``torch``. Its
modules carry the names of :class:`scripts.networks.UNet`'s (``encoder.blocks.N``, ``encoder.pool``,
``decoder.ups.N.up``/``.conv``, ``head``), so the bundle's state dict of a 2D U-Net with ``padding="same"`` loads
into it strictly; ``tests/test_export_bioimageio.py`` checks that both give the same output.

What the package's weights compute (all three formats):

- ``transpose_xy`` (default True): the network runs on the image transposed, ``(B, C, x, y)``, and its output is
  transposed back, because the bundle's models see images as MONAI's ``LoadImage`` returns them (columns first);
  so the package's ``(batch, channel, y, x)`` tensors give the bundle's own predictions;
- ``softmax`` (default True): class probabilities (softmax over the channels) instead of logits.

Any input size works (the input is reflect padded to a multiple of ``2 ** depth`` and the output cropped back), as
in the bundle; the package declares sizes on that grid, where no padding is needed.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UNet2d"]


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(2):
        layers.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Encoder(nn.Module):
    def __init__(self, in_channels: int, features: Sequence[int], batch_norm: bool, dropout: float):
        super().__init__()
        channels = [in_channels, *features]
        self.blocks = nn.ModuleList(_conv_block(channels[i], channels[i + 1], batch_norm) for i in range(len(features)))
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.first_dropout_level = len(features) - 2

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outputs: List[torch.Tensor] = []
        for level, block in enumerate(self.blocks):
            if level > 0:
                x = self.pool(x)
            x = block(x)
            if level >= self.first_dropout_level:
                x = self.dropout(x)
            outputs.append(x)
        return outputs


class _Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = _conv_block(2 * out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class _Decoder(nn.Module):
    def __init__(self, features: Sequence[int], batch_norm: bool):
        super().__init__()
        self.ups = nn.ModuleList(
            _Up(features[level + 1], features[level], batch_norm) for level in reversed(range(len(features) - 1))
        )

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        for i, up in enumerate(self.ups):
            x = up(x, skips[len(skips) - 1 - i])
        return x


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, List[int], List[int]]:
    size = [int(s) for s in x.shape[2:]]
    starts: List[int] = []
    for d in range(2):
        total = (multiple - size[d] % multiple) % multiple
        before = total // 2
        starts.append(before)
        if total > 0:
            pad = [0, 0, 0, 0]
            pad[2 * (1 - d)], pad[2 * (1 - d) + 1] = before, total - before
            x = F.pad(x, pad, mode="reflect" if total - before < size[d] else "replicate")
    return x, starts, size


class UNet2d(nn.Module):
    """2D U-Net (Ronneberger et al. 2015) with same (zero) padding, as the bundle's ``scripts.networks.UNet``.

    Args:
        in_channels: input channels (1 grey, 3 RGB).
        out_channels: classes.
        features: channels per resolution level, shallowest first; ``len(features) - 1`` poolings.
        batch_norm: batch norm after each 3x3 convolution.
        dropout: dropout on the last two encoder levels (inactive in eval mode).
        transpose_xy: run on the transposed image (see the module docstring).
        softmax: return class probabilities instead of logits.

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 5,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        batch_norm: bool = True,
        dropout: float = 0.0,
        transpose_xy: bool = True,
        softmax: bool = True,
    ):
        super().__init__()
        features = [int(f) for f in features]
        self.size_divisor = 2 ** (len(features) - 1)
        self.transpose_xy = bool(transpose_xy)
        self.softmax = bool(softmax)
        self.encoder = _Encoder(in_channels, features, batch_norm, dropout)
        self.decoder = _Decoder(features, batch_norm)
        self.head = nn.Conv2d(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transpose_xy:
            x = x.transpose(-2, -1)
        x, starts, size = _pad_to_multiple(x, self.size_divisor)
        skips = self.encoder(x)
        y = self.head(self.decoder(skips[-1], skips[:-1]))
        y = y[:, :, starts[0] : starts[0] + size[0], starts[1] : starts[1] + size[1]]
        if self.softmax:
            y = torch.softmax(y, dim=1)
        return y.transpose(-2, -1) if self.transpose_xy else y
