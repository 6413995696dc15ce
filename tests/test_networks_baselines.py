"""Tests for scripts.networks.DoubleUNet and scripts.networks.EnsembleUNet."""

from __future__ import annotations

import io

import pytest
import torch

from scripts.networks import DoubleUNet, EnsembleUNet, UNet

SMALL = (2, 4, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread is several times faster than two on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cls, n_outputs", [(DoubleUNet, 2), (EnsembleUNet, 3)])
@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (1, 1, 13, 30)])
def test_shapes_train_and_eval(cls, n_outputs, shape):
    net = cls(features=SMALL, out_channels=3)
    assert net.num_outputs == n_outputs
    outputs = net(torch.randn(shape))
    assert isinstance(outputs, tuple) and len(outputs) == n_outputs
    for out in outputs:
        assert out.shape == (shape[0], 3, *shape[2:])
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert isinstance(out, torch.Tensor) and out.shape == (shape[0], 3, *shape[2:])


@pytest.mark.parametrize("out_channels, to_probs", [(3, lambda t: torch.softmax(t, 1)), (1, torch.sigmoid)])
def test_double_unet_second_input(out_channels, to_probs):
    net = DoubleUNet(features=SMALL, in_channels=2, out_channels=out_channels)
    assert net.unet2.encoder.blocks[0][0].in_channels == 2 + out_channels
    seen = {}
    hook = net.unet2.register_forward_pre_hook(lambda m, i: seen.__setitem__("in", i[0]))
    x = torch.randn(1, 2, 12, 12)
    with torch.no_grad():
        out1, out2 = net(x)
    hook.remove()
    assert torch.allclose(seen["in"], torch.cat([x, to_probs(out1)], 1))
    with torch.no_grad():
        assert torch.allclose(out2, net.unet2(seen["in"]))
        net.eval()
        assert torch.allclose(net(x), out2)


def test_ensemble_mean_and_independent_members():
    net = EnsembleUNet(features=SMALL)
    assert not torch.equal(net.unet1.head.weight, net.unet2.head.weight)
    x = torch.randn(1, 1, 12, 12)
    with torch.no_grad():
        out1, out2, mean = net(x)
        assert torch.allclose(out1, net.unet1(x)) and torch.allclose(out2, net.unet2(x))
        assert torch.allclose(mean, (out1 + out2) / 2)
        assert not torch.allclose(out1, out2)
        net.eval()
        assert torch.allclose(net(x), mean)


def test_gradients_reach_both_members():
    double = DoubleUNet(features=SMALL)
    double(torch.randn(2, 1, 16, 16))[1].sum().backward()  # the second output alone reaches the first U-Net
    ensemble = EnsembleUNet(features=SMALL)
    ensemble(torch.randn(2, 1, 16, 16))[2].sum().backward()
    for unet in (double.unet1, double.unet2, ensemble.unet1, ensemble.unet2):
        grad = unet.encoder.blocks[0][0].weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_receptive_field():
    assert EnsembleUNet(features=(1, 1, 1)).receptive_field == UNet(features=(1, 1, 1)).receptive_field == 44
    # two depth-1 U-Nets in series, measured: perturb one input pixel at a time and see which outputs react
    torch.manual_seed(0)
    net = DoubleUNet(spatial_dims=1, features=(8, 8), out_channels=2).eval()
    n = 96
    x = torch.rand(1, 1, n)
    widths = []
    with torch.no_grad():
        changed = torch.zeros(n, n, dtype=torch.bool)
        for amp in (50.0, -50.0):
            xs = x.repeat(n + 1, 1, 1)
            xs[torch.arange(n), 0, torch.arange(n)] += amp
            ys = net(xs)
            changed |= (ys[:n] - ys[n:]).abs().amax(1) > 1e-4  # [perturbed pixel, output pixel]
        for p in range(30, 66):
            reacting = torch.nonzero(changed[:, p]).flatten()
            widths.append(int(reacting.max() - reacting.min()) + 1)
    assert max(widths) == net.receptive_field
    assert net.receptive_field > UNet(features=(8, 8)).receptive_field


@pytest.mark.parametrize("cls", [DoubleUNet, EnsembleUNet])
def test_torchscript_round_trip(cls):
    net = cls(features=SMALL, batch_norm=True).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    x = torch.randn(1, 1, 15, 20)
    with torch.no_grad():
        out = scripted(x)
        assert isinstance(out, torch.Tensor)
        assert torch.allclose(out, net(x), atol=1e-6)


@pytest.mark.parametrize("cls", [DoubleUNet, EnsembleUNet])
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"padding": "valid"}, ValueError, "padding='same' only"),
        ({"padding": "foo"}, ValueError, "padding must be one of"),
        ({"features": (4,)}, ValueError, "at least 2 entries"),
        ({"in_channels": -1}, ValueError, "in_channels"),
        ({"batch_norm": 1}, TypeError, "batch_norm"),
    ],
)
def test_bad_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**{"features": SMALL, **kwargs})
