"""Tests for scripts.networks.XNet."""

from __future__ import annotations

import io

import pytest
import torch

from scripts.networks import UNet, XNet

SMALL = (2, 4, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread is several times faster than two on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "skip, shape", [("both", (2, 1, 16, 16)), ("own", (1, 1, 17, 23)), ("crossed", (1, 1, 9, 32))]
)
def test_shapes_train_and_eval(skip, shape):
    net = XNet(features=SMALL, out_channels=3, skip=skip)
    outputs = net(torch.randn(shape))
    assert isinstance(outputs, tuple) and len(outputs) == net.num_outputs == 3
    for out in outputs:
        assert out.shape == (shape[0], 3, *shape[2:])
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert isinstance(out, torch.Tensor) and out.shape == (shape[0], 3, *shape[2:])


def _capture(net: XNet, x: torch.Tensor) -> dict:
    """Encoder block outputs and the skip lists each decoder receives, via hooks."""
    seen: dict = {}
    hooks = [
        net.encoder1.register_forward_hook(lambda m, i, o: seen.__setitem__("enc1", o)),
        net.encoder2.register_forward_hook(lambda m, i, o: seen.__setitem__("enc2", o)),
        net.decoder1.register_forward_pre_hook(lambda m, i: seen.__setitem__("dec1", i)),
        net.decoder2.register_forward_pre_hook(lambda m, i: seen.__setitem__("dec2", i)),
        net.head3.register_forward_pre_hook(lambda m, i: seen.__setitem__("head3", i[0])),
    ]
    with torch.no_grad():
        seen["out"] = net(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("skip", ["both", "own", "crossed"])
def test_skip_wiring(skip):
    net = XNet(features=SMALL, skip=skip).eval()
    seen = _capture(net, torch.randn(1, 1, 16, 16))
    enc1, enc2 = seen["enc1"], seen["enc2"]
    bottleneck = torch.cat([enc1[-1], enc2[-1]], dim=1)
    expected = {
        "both": ([torch.cat([a, b], 1) for a, b in zip(enc1[:-1], enc2[:-1])],) * 2,
        "own": (enc1[:-1], enc2[:-1]),
        "crossed": (enc2[:-1], enc1[:-1]),
    }[skip]
    for name, skips in zip(("dec1", "dec2"), expected):
        got_bottleneck, got_skips = seen[name]
        assert torch.equal(got_bottleneck, bottleneck)  # both decoders start from the concatenated bottlenecks
        assert len(got_skips) == len(skips) == 2
        for got, want in zip(got_skips, skips):
            assert torch.equal(got, want)
    # output3 is a 1x1 conv over [output1, output2]
    net.train()
    with torch.no_grad():
        out1, out2, out3 = net(torch.ones(1, 1, 16, 16))
        assert torch.allclose(out3, net.head3(torch.cat([out1, out2], 1)))


def test_encoders_are_independent():
    net = XNet(features=SMALL)
    assert net.encoder1.blocks[0][0].weight.data_ptr() != net.encoder2.blocks[0][0].weight.data_ptr()
    assert not torch.equal(net.encoder1.blocks[0][0].weight, net.encoder2.blocks[0][0].weight)


@pytest.mark.parametrize("skip", ["both", "own", "crossed"])
def test_gradient_reaches_both_encoders(skip):
    net = XNet(features=SMALL, skip=skip)
    out1, out2, out3 = net(torch.randn(2, 1, 16, 16))
    for loss in (out1.sum(), out2.sum()):  # each decoder alone reaches both encoders (at least via the bottleneck)
        net.zero_grad()
        loss.backward(retain_graph=True)
        for encoder in (net.encoder1, net.encoder2):
            grad = encoder.blocks[0][0].weight.grad
            assert grad is not None and grad.abs().sum() > 0


def test_valid_mode_shares_unet_size_rule():
    net = XNet(features=(2, 2, 2), padding="valid")
    unet = UNet(features=(2, 2, 2), padding="valid")
    for name in ("depth", "size_divisor", "margin", "receptive_field", "smallest_input"):
        assert getattr(net, name) == getattr(unet, name)
    assert net.output_size(60) == unet.output_size(60) == 20
    assert net.valid_input_size(20) == 60
    outputs = net(torch.randn(1, 1, 44, 60))
    assert [tuple(o.shape) for o in outputs] == [(1, 2, 4, 20)] * 3
    with pytest.raises(ValueError, match="not a valid input size"):
        net(torch.randn(1, 1, 45, 60))
    with pytest.raises(ValueError, match="44 or 48"):
        net.output_size(46)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"features": SMALL, "skip": "both"}, (1, 1, 19, 24)),
        ({"features": SMALL, "skip": "crossed", "batch_norm": True, "dropout": 0.3}, (2, 1, 16, 16)),
        ({"features": (2, 2, 2), "padding": "valid", "skip": "own"}, (1, 1, 44, 60)),
    ],
)
def test_torchscript_round_trip(kwargs, shape):
    net = XNet(**kwargs).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    x = torch.randn(shape)
    with torch.no_grad():
        out = scripted(x)
        assert isinstance(out, torch.Tensor)
        assert torch.allclose(out, net(x), atol=1e-6)
    if not kwargs.get("dropout"):  # the scripted model also returns the tuple in training mode
        scripted.train()
        net.train()
        with torch.no_grad():
            for got, want in zip(scripted(x), net(x)):
                assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"skip": "sum"}, ValueError),
        ({"skip": None}, ValueError),
        ({"padding": "full"}, ValueError),
        ({"features": (4,)}, ValueError),
        ({"out_channels": 0}, ValueError),
        ({"dropout": 2}, ValueError),
        ({"features": None}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        XNet(**{"features": SMALL, **kwargs})
