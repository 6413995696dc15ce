"""Tests for scripts.inferers.MirrorPaddedInferer (how valid-convolution networks train on patches)."""

from __future__ import annotations

import pytest
import torch
from monai.data.meta_tensor import MetaTensor
from monai.inferers import Inferer

from scripts.inferers import MirrorPaddedInferer, OverlapTileInferer
from scripts.networks import UNet, XNet
from test_inferers_overlap_tile import image, whole_image

torch.set_num_threads(1)


def unet(padding):
    torch.manual_seed(0)
    return UNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8, 8), padding=padding)


def test_is_a_monai_inferer_and_checks_mode():
    assert isinstance(MirrorPaddedInferer(), Inferer)
    with pytest.raises(ValueError, match="mode"):
        MirrorPaddedInferer(mode="wrap")


@pytest.mark.parametrize("size", [(64, 64), (41, 33), (5, 70)])
def test_valid_network_output_covers_the_input_and_matches_overlap_tile(size):
    net = unet("valid").eval()
    x = image(2, 1, *size)
    with torch.no_grad():
        out = MirrorPaddedInferer()(x, net)
        assert out.shape == (2, 3, *size)
        # the same pixels as the whole mirror-padded image pass (hand-padded with numpy) and overlap-tile inference
        torch.testing.assert_close(out, whole_image(net, x, net.margin, valid=True), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, OverlapTileInferer(roi_size=32)(x, net), rtol=1e-5, atol=1e-5)


def test_same_network_is_called_unchanged():
    net = unet("same").eval()
    x = MetaTensor(image(1, 1, 40, 36))
    with torch.no_grad():
        torch.testing.assert_close(MirrorPaddedInferer()(x, net), net(x))


def test_xnet_training_outputs_all_kept_and_cropped_with_gradients():
    torch.manual_seed(0)
    net = XNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8, 8), padding="valid").train()
    x = image(2, 1, 30, 26)
    outs = MirrorPaddedInferer()(x, net)
    assert isinstance(outs, tuple) and len(outs) == 3
    assert all(o.shape == (2, 3, 30, 26) for o in outs)
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


def test_network_smaller_than_its_size_rule_is_reported():
    class Liar(torch.nn.Module):
        padding, margin = "valid", 2

        def valid_input_size(self, n):
            return n + 4

        def forward(self, x):
            return x[:, :, 4:-4, 4:-4]

    with pytest.raises(ValueError, match="smaller than"):
        MirrorPaddedInferer()(image(1, 1, 20, 20), Liar())
