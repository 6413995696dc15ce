"""Tests for scripts.inferers.OverlapTileInferer (overlap-tile inference) and scripts.transforms.mirror_pad."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data.meta_tensor import MetaTensor
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer

from scripts.inferers import OverlapTileInferer, estimate_activation_bytes
from scripts.networks import UNet, XNet
from scripts.transforms import mirror_pad

torch.set_num_threads(1)

#: Channels-last against contiguous weights on the CPU (``memory_format``): oneDNN may sum the convolutions in another
#: order, so the layouts agree to float rounding only (on these depth-2 nets, logits up to ~5.5: bit for bit with
#: torch 2.13, within 1e-4 with torch 2.14.1, issue 28; the comparisons with ``whole_image`` below, a contiguous pass,
#: use the same bound). The same layout on the same backend is compared exactly.
LAYOUT_TOL = {"rtol": 0.0, "atol": 1e-4}


def make_net(padding):
    """A depth-2 U-Net: size_divisor 4; valid: margin 20; same: receptive field 44, default margin
    ceil((44 + 4 - 2) / 2) = 23, rounded up to the pooling grid: 24."""
    torch.manual_seed(0)
    return UNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8, 8), padding=padding).eval()


def whole_image(net, image, pad, valid=False):
    """Reference: one forward pass over the image mirror padded by ``pad`` before it and by at least ``pad`` after it,
    up to a size the network accepts (numpy's reflect, which takes pads of any width), cropped back to the image.

    (Mirroring, not zeros, after the ``pad``: a valid U-Net's output pixel ``j`` reads input ``j - phase`` to
    ``j - phase + receptive_field - 1``, up to ``size_divisor - 1`` pixels past ``j + 2 * margin``.)"""
    h, w = image.shape[2:]
    d = net.size_divisor
    sizes = [net.valid_input_size(s) if valid else -(-(s + 2 * pad) // d) * d for s in (h, w)]
    pads = ((0, 0), (0, 0), (pad, sizes[0] - h - pad), (pad, sizes[1] - w - pad))
    out = net(torch.from_numpy(np.pad(image.numpy(), pads, mode="reflect")))
    return out[:, :, :h, :w] if valid else out[:, :, pad : pad + h, pad : pad + w]


def image(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [(70, 45), (96, 96), (41, 33)])
def test_valid_equals_whole_mirror_padded_pass(size):
    net = make_net("valid")
    x = image(1, 1, *size)
    inferer = OverlapTileInferer(roi_size=16, sw_batch_size=3)
    geo = inferer.geometry(net, size)
    assert geo.padding == "valid" and geo.pad == (net.margin,) * 2 and min(geo.n_tiles) >= 2
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
    # default margin: ceil((receptive_field 44 + size_divisor 4 - 2) / 2) = 23, rounded up to the pooling grid: 24
    assert geo.pad == (24, 24) and geo.crop == (24, 24) and geo.tile_in == (64, 64)
    with torch.no_grad():
        out = inferer(x, net)
        ref = whole_image(net, x, 24)
    prob_diff = (out.softmax(1) - ref.softmax(1)).abs().max().item()
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement >= 0.999 and prob_diff <= 1e-5
    assert (out - ref).abs().max().item() <= 1e-4  # measured: 4e-6 (float rounding): the tiles see exactly the same pixels


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_output_is_aligned_with_the_image(padding):
    """Independent of the network's own margin bookkeeping: changing one pixel changes only the outputs around it."""
    net = make_net(padding)
    x = image(1, 1, 64, 64)
    y = x.clone()
    y[0, 0, 32, 32] += 100.0
    inferer = OverlapTileInferer(roi_size=16)
    with torch.no_grad():
        changed = ((inferer(y, net) - inferer(x, net)).abs().amax(1)[0] > 1e-4).nonzero()
    lo, hi = changed.amin(0), changed.amax(0)
    # a pixel reads at most 23 px to each side (valid: margin 20 + pooling phase up to 3; same: measured with
    # scripts.networks.size_rule.dependency_interval), measured here: valid 20 / 23, same 22 / 21 px left / right
    assert (lo >= 32 - 23).all() and (hi <= 32 + 23).all()
    assert (lo <= 32 - 16).all() and (hi >= 32 + 16).all()  # and it reaches well out on both sides


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
    assert inferer.geometry(net, size).n_tiles == (1, 1)
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
    for out in outs[1:] + [singles]:  # equal up to float rounding (CPU conv kernels depend on the batch size)
        assert torch.allclose(out, outs[0], rtol=1e-5, atol=1e-5)
    assert (outs[0][0] - outs[0][1]).abs().max().item() > 1e-3  # the three images really differ


def test_roi_pair_and_rounding_to_pooling_grid():
    net = make_net("same")
    geo = OverlapTileInferer(roi_size=(10, 21), margin=5, overlap_border=2).geometry(net, (100, 15))
    # roi rounded up to multiples of 4 (12, 24) and the width capped at the image width rounded up (16)
    assert geo.stride == (12, 16) and geo.pad == (8, 8) and geo.crop == (4, 4)
    assert geo.start == (4, 4) and geo.tile_in == (20, 24) and geo.n_tiles == (9, 1)
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


class FirstOutput(nn.Module):
    """Keeps the first element of the wrapped network's output tuple (geometry read through ``.module``)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)[0]


def test_tuple_output_in_training_mode():
    """X-Net returns (output1, output2, output3) in training mode: the inferer keeps output3, the final prediction,
    which is what the network returns in eval mode."""
    torch.manual_seed(0)
    xnet = XNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8, 8), padding="valid")
    x = image(1, 1, 30, 20)
    inferer = OverlapTileInferer(roi_size=16)
    with torch.no_grad():
        train_out = inferer(x, xnet.train())  # no dropout, no batch norm: training mode is deterministic
        eval_out = inferer(x, xnet.eval())
        first = inferer(x, FirstOutput(xnet.train()))
    assert torch.equal(train_out, eval_out)
    assert (train_out - first).abs().max().item() > 1e-3  # the outputs differ: it really took the last one


def test_wrapper_dtypes_and_metatensor():
    """Attributes are read through wrappers (DataParallel's ``.module``); float64 networks give float32 output;
    MetaTensor metadata is kept."""
    net = make_net("valid")
    x = image(1, 1, 30, 20)
    with torch.no_grad():
        ref = OverlapTileInferer(roi_size=16)(x, net)  # CPU, plain module: channels-last weights
        # a DataParallel network runs contiguous ("auto" leaves wrappers alone): compared with the contiguous pass
        contiguous = OverlapTileInferer(roi_size=16, memory_format="contiguous")(x, net)
        wrapped = OverlapTileInferer(roi_size=16)(x, nn.DataParallel(net))
        out64 = OverlapTileInferer(roi_size=16)(x.double(), net.double())
        meta = OverlapTileInferer(roi_size=16)(MetaTensor(x, meta={"filename_or_obj": "a.tif"}), net.float())
    assert torch.equal(wrapped, contiguous)  # the same layout and kernels: exactly
    torch.testing.assert_close(wrapped, ref, **LAYOUT_TOL)
    assert out64.dtype == torch.float32 and torch.allclose(out64, ref, atol=1e-5)
    assert isinstance(meta, MetaTensor) and meta.meta["filename_or_obj"] == "a.tif"
    assert torch.equal(meta.as_tensor(), ref)  # the same layout (channels-last) and kernels: exactly


def test_progress_bar(capsys):
    net = make_net("valid")
    x = image(1, 1, 40, 40)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=16, sw_batch_size=2, progress=True)(x, net)
        ref = OverlapTileInferer(roi_size=16, sw_batch_size=2)(x, net)
    assert torch.equal(out, ref)
    assert "5/5" in capsys.readouterr().err  # 3 x 3 tiles, 2 per forward pass


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
        ({"memory_format": "nhwc"}, "memory_format"),
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
        OverlapTileInferer(overlap_border=40)(x, same)  # the derived margin is 23 (24 after rounding)
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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sw_device(monkeypatch):
    # full float32 on the GPU: cuDNN runs float32 convolutions in TF32 by default (about 1e-3 relative error,
    # up to 7.6e-3 on logits of 5.5), which atol=1e-4 cannot hold; the bundle's own policy is the allow_tf32 key
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    net = make_net("valid")
    x = image(2, 1, 40, 30)
    with torch.no_grad():
        ref = OverlapTileInferer(roi_size=16)(x, net)
        out = OverlapTileInferer(roi_size=16, sw_device="cuda", device="cpu")(x, net.cuda())
        out_gpu = OverlapTileInferer(roi_size=16)(x.cuda(), net)
    assert out.device.type == "cpu" and out_gpu.device.type == "cuda"
    assert torch.allclose(out, ref, atol=1e-4) and torch.allclose(out_gpu.cpu(), ref, atol=1e-4)


# ---------------------------------------------------------------------------------------------- automatic tiles
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_auto_tiles_one_tile_equals_whole_mirror_padded_pass(padding):
    """With enough memory the automatic choice is one tile: exactly the whole mirror-padded pass."""
    net = make_net(padding)
    x = image(1, 1, 70, 45)
    inferer = OverlapTileInferer(memory_budget_mb=512)
    geo = inferer.geometry(net, (70, 45), in_channels=1)
    assert geo.n_tiles == (1, 1) and geo.activation_bytes > 0
    with torch.no_grad():
        out = inferer(x, net)
        ref = whole_image(net, x, net.margin if padding == "valid" else 24, valid=padding == "valid")
    assert out.shape == (1, 3, 70, 45)
    assert (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_auto_tiles_bounded_memory_uses_several_tiles_and_stays_exact(padding):
    """A budget too small for one tile: several tiles, each within the budget, the result still the whole pass."""
    net = make_net(padding)
    size = (300, 260)
    x = image(1, 1, *size)
    one = OverlapTileInferer(memory_budget_mb=512).geometry(net, size)
    fixed_mb = (math.prod(one.padded_size) + 3 * math.prod(size)) * 4 / 2**20  # padded input + output, ~0.5 MiB
    budget = fixed_mb + one.activation_bytes / 2**20 / 3  # a third of what one tile needs
    inferer = OverlapTileInferer(memory_budget_mb=budget)
    geo = inferer.geometry(net, size)
    assert geo.num_tiles > 1 and geo.activation_bytes <= budget * 2**20
    assert geo.input_pixels >= one.input_pixels  # more context bands cost more pixels
    with torch.no_grad():
        out = inferer(x, net)
        ref = whole_image(net, x, net.margin if padding == "valid" else 24, valid=padding == "valid")
    assert (out - ref).abs().max().item() <= 1e-4


def test_activation_estimate_tracks_live_tensors_and_restores_mode():
    """The estimate grows with the tile (about linearly), is at least the input plus the output, and the probe
    leaves the network's mode and batch-norm statistics alone."""
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8, 8), batch_norm=True).train()
    stats = net.state_dict()
    small = estimate_activation_bytes(net, torch.rand(1, 1, 32, 32))
    large = estimate_activation_bytes(net, torch.rand(1, 1, 64, 64))
    assert (1 + 3) * 32 * 32 * 4 < small and 3.5 < large / small < 4.5
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())


def test_too_small_budget_warns_and_uses_the_smallest_tiles(caplog):
    net = make_net("same")
    with caplog.at_level("WARNING"):
        geo = OverlapTileInferer(memory_budget_mb=1e-3).geometry(net, (64, 64))
    assert geo.stride == (4, 4) and "too small" in caplog.text


# ---- memory layout (channels-last weights for the call) -------------------------------------------------------------


def test_resolve_memory_format():
    from scripts.inferers import resolve_memory_format

    net = make_net("same")
    assert resolve_memory_format("auto", net, "cpu", 2) == "channels_last"
    assert resolve_memory_format("auto", net, "cuda", 2) == "contiguous"  # not measured on a GPU: left as it is
    assert resolve_memory_format("auto", net, "cpu", 3) == "contiguous"  # channels-last is 2-D (4-D tensors) only
    assert resolve_memory_format("channels_last", net, "cuda", 2) == "channels_last"
    assert resolve_memory_format("contiguous", net, "cpu", 2) == "contiguous"
    assert resolve_memory_format("auto", lambda x: net(x), "cpu", 2) == "contiguous"  # a plain callable: no weights
    assert resolve_memory_format("auto", nn.DataParallel(net), "cpu", 2) == "contiguous"  # replicas hold the weights
    with pytest.raises(ValueError, match="memory_format"):
        resolve_memory_format("nhwc", net, "cpu", 2)


def test_channels_last_weights_are_put_back_exactly():
    from scripts.inferers import channels_last_weights

    net = make_net("same")
    params = list(net.parameters())
    before = [(p.data_ptr(), p.stride(), p.detach().clone()) for p in params]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with channels_last_weights(net):
        convs = [p for p in params if p.ndim == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        assert not all(p.is_contiguous() for p in convs)  # really another layout inside the block
        out = net(image(1, 1, 32, 32))
    assert out.is_contiguous(memory_format=torch.channels_last)  # the activations followed the weights
    for p, (ptr, stride, value) in zip(params, before):
        assert p.data_ptr() == ptr and p.stride() == stride and torch.equal(p, value)
    assert optimizer.param_groups[0]["params"][0] is params[0]
    with pytest.raises(RuntimeError, match="inside"), channels_last_weights(net):  # put back on an error too
        raise RuntimeError("inside")
    assert all(p.data_ptr() == ptr for p, (ptr, _s, _v) in zip(params, before))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_channels_last_equals_contiguous_and_leaves_the_network_alone(padding):
    net = make_net(padding)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = image(1, 1, 70, 45)
    with torch.no_grad():
        cl = OverlapTileInferer(memory_format="channels_last", roi_size=16)(x, net)
        auto = OverlapTileInferer(roi_size=16)(x, net)  # CPU: channels-last
        plain = OverlapTileInferer(memory_format="contiguous", roi_size=16)(x, net)
    assert torch.equal(cl, auto)  # both channels-last
    torch.testing.assert_close(cl, plain, **LAYOUT_TOL)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]) and value.stride() == state[key].stride(), key


def test_auto_geometry_is_searched_once_per_image_size(monkeypatch):
    from scripts.inferers import memory

    net = make_net("same")
    tiler = OverlapTileInferer(memory_budget_mb=64)
    calls = []
    layout = memory.tile_layout
    monkeypatch.setattr(memory, "tile_layout", lambda *a: calls.append(1) or layout(*a))
    first = tiler.geometry(net, (300, 200))
    searched = len(calls)
    assert searched > 1 and tiler.geometry(net, (300, 200)) == first and len(calls) == searched  # cached
    tiler.geometry(net, (200, 300))  # another size: searched again
    assert len(calls) > searched


def test_auto_layout_leaves_compiled_networks_alone():
    from scripts.inferers import resolve_memory_format

    class Compiled(nn.Module):  # what torch.compile returns: the module under ``_orig_mod``
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert resolve_memory_format("auto", Compiled(make_net("same")), "cpu", 2) == "contiguous"


def test_plan_cache_follows_the_inferer_settings():
    net = make_net("same")
    tiler = OverlapTileInferer(memory_budget_mb=64)
    first = tiler.geometry(net, (300, 200))
    tiler.safety = 4.0  # a larger estimate: the cached plan must not be reused
    assert tiler.geometry(net, (300, 200)).activation_bytes > first.activation_bytes
