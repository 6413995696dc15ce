"""Tests for scripts.inferers.OverlapTileInferer (overlap-tile inference) and mirror_pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data.meta_tensor import MetaTensor
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer

from scripts.inferers import OverlapTileInferer, mirror_pad

torch.set_num_threads(1)


class TinyUNet(nn.Module):
    """A 2-level U-Net (two 3x3 convs per level, 2x2 max pool, 2x2 transposed conv) with UNet's geometry attributes."""

    def __init__(self, in_channels=1, out_channels=3, features=(4, 8, 8), padding="same"):
        super().__init__()
        self.padding, self.depth = padding, len(features) - 1
        self.size_divisor = 2**self.depth
        p = 1 if padding == "same" else 0

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=p), nn.ReLU(), nn.Conv2d(o, o, 3, padding=p), nn.ReLU())

        self.down = nn.ModuleList([block(i, o) for i, o in zip((in_channels, *features[:-1]), features)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(features[l + 1], features[l], 2, stride=2) for l in range(self.depth)])
        self.dec = nn.ModuleList([block(2 * features[l], features[l]) for l in range(self.depth)])
        self.head = nn.Conv2d(features[0], out_channels, 1)
        d = self.size_divisor
        # two 3x3 convs lose 4 px at each of the 2 * depth + 1 block resolutions
        self.margin = 0 if padding == "same" else 8 * (d - 1) + 4 * d
        # theoretical receptive field: 3x3 convs add 2 * scale each, 2x2 pools add 1 * scale
        self.receptive_field = 1 + 9 * (d - 1) + 4 * d

    def output_size(self, n):
        if self.padding == "same":
            if n % self.size_divisor:
                raise ValueError(f"{n} is not a multiple of {self.size_divisor}")
            return n
        for _ in range(self.depth):
            n -= 4
            if n <= 0 or n % 2:
                raise ValueError("invalid size")
            n //= 2
        n -= 4
        if n <= 0:
            raise ValueError("invalid size")
        for _ in range(self.depth):
            n = 2 * n - 4
        return n

    def valid_input_size(self, min_output_size):
        n = min_output_size + 2 * self.margin
        while True:
            try:
                if self.output_size(n) >= min_output_size:
                    return n
            except ValueError:
                pass
            n += 1

    def forward(self, x):
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for level in reversed(range(self.depth)):
            x = self.ups[level](x)
            skip = skips[level]
            dy, dx = (skip.shape[2] - x.shape[2]) // 2, (skip.shape[3] - x.shape[3]) // 2
            skip = skip[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
            x = self.dec[level](torch.cat([skip, x], 1))
        return self.head(x)


def make_net(padding):
    torch.manual_seed(0)
    return TinyUNet(padding=padding).eval()


def whole_image(net, image, pad, valid=False):
    """Reference: one forward pass over the image mirror padded by ``pad`` on every side (numpy's reflect, which takes
    pads of any width), plus zeros after it up to a size the network accepts (they only reach outputs that are
    cropped away), cropped back to the image."""
    h, w = image.shape[2:]
    padded = torch.from_numpy(np.pad(image.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect"))
    d = net.size_divisor
    sizes = [net.valid_input_size(s) if valid else -(-(s + 2 * pad) // d) * d for s in (h, w)]
    out = net(F.pad(padded, (0, sizes[1] - padded.shape[3], 0, sizes[0] - padded.shape[2])))
    return out[:, :, :h, :w] if valid else out[:, :, pad : pad + h, pad : pad + w]


def image(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [(70, 45), (96, 96), (41, 33)])
def test_valid_equals_whole_mirror_padded_pass(size):
    net = make_net("valid")
    x = image(1, 1, *size)
    inferer = OverlapTileInferer(roi_size=16, sw_batch_size=3)
    geo = inferer.geometry(net, size)
    assert geo["padding"] == "valid" and geo["pad"] == [net.margin] * 2 and min(geo["n_tiles"]) >= 2
    with torch.no_grad():
        out = inferer(x, net)
        ref = whole_image(net, x, net.margin, valid=True)
    assert out.shape == (1, 3, *size) and out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= 1e-4


def test_valid_pass_without_padding_is_not_the_reference():
    """The comparison above can fail: zero padding instead of mirroring changes the border pixels."""
    net = make_net("valid")
    x = image(1, 1, 70, 45)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=16, mode="constant")(x, net)
        ref = whole_image(net, x, net.margin, valid=True)
    assert (out - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("size", [(60, 36), (44, 84)])
def test_same_equals_whole_mirror_padded_pass(size):
    net = make_net("same")
    x = image(1, 1, *size)
    inferer = OverlapTileInferer(roi_size=16, sw_batch_size=4)
    geo = inferer.geometry(net, size)
    # default margin: receptive-field radius ceil((44 - 1) / 2) = 22, rounded up to the pooling grid (4): 24
    assert geo["pad"] == [24, 24] and geo["crop"] == [24, 24] and geo["tile_in"] == [64, 64]
    with torch.no_grad():
        out = inferer(x, net)
        ref = whole_image(net, x, 24)
    prob_diff = (out.softmax(1) - ref.softmax(1)).abs().max().item()
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement >= 0.999 and prob_diff <= 1e-5
    assert (out - ref).abs().max().item() <= 1e-4  # measured: ~1e-7, the tiles see exactly the same pixels


def test_same_small_overlap_border_leaves_seams():
    net = make_net("same")
    x = image(1, 1, 60, 36)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=16, margin=24, overlap_border=0)(x, net)
        ref = whole_image(net, x, 24)
    assert (out - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("size", [(5, 7), (1, 9), (13, 2)])
def test_image_smaller_than_tile(padding, size):
    """One tile, and mirror padding wider than the image (several reflections)."""
    net = make_net(padding)
    x = image(1, 1, *size)
    inferer = OverlapTileInferer(roi_size=32)
    assert inferer.geometry(net, size)["n_tiles"] == [1, 1]
    with torch.no_grad():
        out = inferer(x, net)
        ref = whole_image(net, x, net.margin if padding == "valid" else 24, valid=padding == "valid")
    assert out.shape == (1, 3, *size)
    assert (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_batch_and_sw_batch_size(padding):
    """Tiles of a batch are mixed in sw batches; results do not depend on sw_batch_size and equal per-image runs."""
    net = make_net(padding)
    x = image(3, 1, 37, 29)
    with torch.no_grad():
        outs = [OverlapTileInferer(roi_size=16, sw_batch_size=n)(x, net) for n in (1, 4, 100)]
        singles = torch.cat([OverlapTileInferer(roi_size=16)(x[i : i + 1], net) for i in range(3)])
    assert outs[0].shape == (3, 3, 37, 29)
    for out in outs[1:] + [singles]:
        assert torch.allclose(out, outs[0], atol=1e-6)
    assert (outs[0][0] - outs[0][1]).abs().max().item() > 1e-3  # the three images really differ


def test_roi_pair_and_rounding_to_pooling_grid():
    net = make_net("same")
    geo = OverlapTileInferer(roi_size=(10, 21), margin=5, overlap_border=2).geometry(net, (100, 15))
    # roi rounded up to multiples of 4 (12, 24) and the width capped at the image width rounded up (16)
    assert geo["stride"] == [12, 16] and geo["pad"] == [8, 8] and geo["crop"] == [4, 4]
    assert geo["start"] == [4, 4] and geo["tile_in"] == [20, 24] and geo["n_tiles"] == [9, 1]
    x = image(1, 1, 100, 15)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=(10, 21), margin=24)(x, net)
    assert (out - whole_image(net, x, 24)).abs().max().item() <= 1e-4


def test_plain_callable_needs_margin():
    """Networks without geometry attributes (MONAI nets, lambdas) are same-padding with a margin given by hand."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 2, 3, padding=1)).eval()
    x = image(2, 1, 23, 31)
    with pytest.raises(ValueError, match="receptive_field"):
        OverlapTileInferer(roi_size=8)(x, conv)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=8, margin=2)(x, lambda t: conv(t))
        ref = conv(F.pad(x, (2, 2, 2, 2), mode="reflect"))[:, :, 2:-2, 2:-2]
    assert (out - ref).abs().max().item() <= 1e-5


def test_3d_volume():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv3d(2, 2, 3, padding=1)).eval()
    x = image(1, 1, 9, 12, 7)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=4, margin=2)(x, conv)
        ref = conv(F.pad(x, (2,) * 6, mode="reflect"))[:, :, 2:-2, 2:-2, 2:-2]
    assert out.shape == (1, 2, 9, 12, 7) and (out - ref).abs().max().item() <= 1e-5


def test_wrapped_network_tuple_output_and_dtypes():
    """Attributes are read through wrappers; a tuple output (train-mode deep supervision) is reduced to its last item;
    float64 networks give float32 output; MetaTensor metadata is kept."""
    net = make_net("valid")

    class DeepSupervision(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, t):
            out = self.module(t)
            return out * 0 + 7, out

    x = image(1, 1, 30, 20)
    with torch.no_grad():
        ref = OverlapTileInferer(roi_size=16)(x, net)
        out = OverlapTileInferer(roi_size=16)(x, DeepSupervision(net))
        out64 = OverlapTileInferer(roi_size=16)(x.double(), net.double())
        meta = OverlapTileInferer(roi_size=16)(MetaTensor(x.float(), meta={"filename_or_obj": "a.tif"}), net.float())
    assert torch.equal(out, ref)
    assert out64.dtype == torch.float32 and torch.allclose(out64, ref, atol=1e-5)
    assert isinstance(meta, MetaTensor) and meta.meta["filename_or_obj"] == "a.tif"
    assert torch.equal(meta.as_tensor(), ref)


def test_supervised_evaluator():
    net = make_net("same")
    inferer = OverlapTileInferer(roi_size=16, sw_batch_size=2)
    assert isinstance(inferer, Inferer)
    data = [{"image": image(2, 1, 30, 26, seed=s), "label": torch.zeros(2, 1, 30, 26)} for s in (3, 4)]
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=data, network=net, inferer=inferer)
    evaluator.run()
    pred = evaluator.state.output[0]["pred"]  # decollated: one dict per image of the last batch
    with torch.no_grad():
        expected = inferer(data[-1]["image"], net)[0]
    assert pred.shape == (3, 30, 26) and torch.allclose(pred, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"roi_size": 0}, "roi_size"),
        ({"roi_size": (16, -1)}, "roi_size"),
        ({"roi_size": 16.5}, "roi_size"),
        ({"sw_batch_size": 0}, "sw_batch_size"),
        ({"margin": -1}, "margin"),
        ({"overlap_border": 1.5}, "overlap_border"),
        ({"margin": 4, "overlap_border": 8}, "must not exceed"),
        ({"mode": "wrap"}, "mode"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OverlapTileInferer(**kwargs)


def test_bad_calls():
    valid, same = make_net("valid"), make_net("same")
    x = image(1, 1, 20, 20)
    with pytest.raises(ValueError, match="margin and overlap_border"):
        OverlapTileInferer(margin=4)(x, valid)
    with pytest.raises(ValueError, match="must not exceed"):
        OverlapTileInferer(overlap_border=40)(x, same)  # the derived margin is 22 (24 after rounding)
    with pytest.raises(ValueError, match="roi_size"):
        OverlapTileInferer(roi_size=(8, 8, 8))(x, same)
    with pytest.raises(ValueError, match="inputs"):
        OverlapTileInferer()(torch.zeros(0, 1, 8, 8), same)
    with pytest.raises(ValueError, match="inputs"):
        OverlapTileInferer()(torch.zeros(8), same)
    unvalid = nn.Conv2d(1, 1, 3)  # a valid conv without the attributes that say so
    with pytest.raises(ValueError, match="padding='valid'"):
        OverlapTileInferer(roi_size=8, margin=1)(x, unvalid)
    with pytest.raises(TypeError, match="tensor"):
        OverlapTileInferer(roi_size=8, margin=1)(x, lambda t: {"pred": t})


@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_mirror_pad_matches_numpy(mode):
    x = image(1, 2, 3, 1)
    pads = [(7, 2), (4, 0)]
    np_mode = {"reflect": "reflect", "replicate": "edge", "constant": "constant"}[mode]
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), *pads), mode=np_mode)  # numpy repeats a 1-px axis when reflecting
    assert torch.equal(mirror_pad(x, pads, mode), torch.from_numpy(expected))
    with pytest.raises(ValueError, match="pads"):
        mirror_pad(x, [(1, 1)])
    with pytest.raises(ValueError, match="mode"):
        mirror_pad(x, pads, "wrap")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sw_device():
    net = make_net("valid")
    x = image(2, 1, 40, 30)
    with torch.no_grad():
        ref = OverlapTileInferer(roi_size=16)(x, net)
        out = OverlapTileInferer(roi_size=16, sw_device="cuda", device="cpu")(x, net.cuda())
        out_gpu = OverlapTileInferer(roi_size=16)(x.cuda(), net)
    assert out.device.type == "cpu" and out_gpu.device.type == "cuda"
    assert torch.allclose(out, ref, atol=1e-4) and torch.allclose(out_gpu.cpu(), ref, atol=1e-4)
