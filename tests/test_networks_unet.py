"""Tests for scripts.networks.UNet and the shared size rule in scripts.networks.size_rule."""

from __future__ import annotations

import io
import math

import pytest
import torch

from scripts.networks import UNet
from scripts.networks.blocks import pad_to_multiple
from scripts.networks.size_rule import dependency_interval, valid_mode_sizes

SMALL = (2, 4, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread is several times faster than two on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# (kwargs, input shape, expected output shape): same padding keeps ANY spatial size, odd sizes included; out_channels
# defaults to 2 (MONAI's convention: no dataset default in a network)
SAME_CASES = [
    ({"features": SMALL}, (2, 1, 32, 32), (2, 2, 32, 32)),
    ({"features": SMALL}, (1, 1, 17, 33), (1, 2, 17, 33)),
    ({"features": SMALL, "in_channels": 2, "out_channels": 3}, (1, 2, 31, 6), (1, 3, 31, 6)),
    ({"features": (2, 2, 2, 2)}, (1, 1, 1, 7), (1, 2, 1, 7)),  # 1 pixel: replicate padding
    ({"features": (2, 4), "spatial_dims": 3}, (1, 1, 5, 6, 7), (1, 2, 5, 6, 7)),
    ({"features": SMALL, "spatial_dims": 1}, (3, 1, 45), (3, 2, 45)),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", SAME_CASES)
def test_same_padding_shapes(kwargs, in_shape, out_shape):
    net = UNet(**kwargs).eval()
    with torch.no_grad():
        assert net(torch.randn(in_shape)).shape == out_shape
    assert net.margin == 0 and net.padding == "same"
    assert net.output_size(in_shape[-1]) == in_shape[-1]
    assert net.valid_input_size(in_shape[-1]) == in_shape[-1]


def test_pad_to_multiple_reflects_then_replicates():
    x = torch.arange(5.0).reshape(1, 1, 5)
    padded, starts, size = pad_to_multiple(x, 4)  # 3 pixels: 1 before, 2 after, reflected
    assert padded.flatten().tolist() == [1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]
    assert starts == [1] and size == [5]
    tiny, starts, size = pad_to_multiple(torch.tensor([[[7.0]]]), 4)  # too small to reflect: replicate
    assert tiny.flatten().tolist() == [7.0, 7.0, 7.0, 7.0]
    assert starts == [1] and size == [1]


def test_paper_valid_size_572_to_388():
    net = UNet(out_channels=2, features=(2, 2, 2, 2, 2), padding="valid").eval()
    assert (net.depth, net.size_divisor, net.margin) == (4, 16, 92)
    assert net.output_size(572) == 388
    assert net.valid_input_size(388) == 572
    assert net.valid_input_size(389) == 588
    with torch.no_grad():
        assert net(torch.randn(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_valid_bad_size_raises_naming_nearest():
    net = UNet(features=(2, 2, 2, 2, 2), padding="valid")
    with pytest.raises(ValueError, match=r"556 or 572"):
        net.output_size(570)
    with pytest.raises(ValueError, match=r"188 \(the smallest\)"):
        net.output_size(100)
    with pytest.raises(ValueError, match="not a valid input size"):
        net(torch.randn(1, 1, 570, 572))
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError):
            net.output_size(bad)
        with pytest.raises(ValueError):
            net.valid_input_size(bad)


# hand-computed: depth 1: 18 -> 14 -> pool 7 -> 3 -> up 6 -> 2; depth 2: 44 -> 40 -> 20 -> 16 -> 8 -> 4 -> 8 -> 4 ->
# 8 -> 4; depth 3: 92 -> 88 -> 44 -> 40 -> 20 -> 16 -> 8 -> 4 -> 8 -> 4 -> 8 -> 4 -> 8 -> 4
@pytest.mark.parametrize("depth, smallest, smallest_out, margin", [(1, 18, 2, 8), (2, 44, 4, 20), (3, 92, 4, 44)])
def test_valid_rule_hand_computed(depth, smallest, smallest_out, margin):
    net = UNet(spatial_dims=1, features=(1,) * (depth + 1), padding="valid")
    assert net.margin == margin
    assert net.output_size(smallest) == smallest_out
    assert net.valid_input_size(1) == smallest
    with pytest.raises(ValueError):
        net.output_size(smallest - net.size_divisor)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_rule_matches_network_and_layer_walk(depth):
    """output_size/valid_input_size agree with a layer-by-layer walk and with what the network really returns."""
    net = UNet(spatial_dims=1, out_channels=1, features=(1,) * (depth + 1), padding="valid").eval()
    n_valid = 0
    with torch.no_grad():
        for size in range(1, net.smallest_input + 3 * net.size_divisor + 1):
            walk = valid_mode_sizes(depth, size)
            if walk is None:
                with pytest.raises(ValueError):
                    net.output_size(size)
                continue
            n_valid += 1
            assert net.output_size(size) == walk[2] == net(torch.zeros(1, 1, size)).shape[-1]
    assert n_valid == 4  # smallest + k * size_divisor, k = 0..3
    for wanted in range(1, 3 * net.size_divisor):
        size = net.valid_input_size(wanted)
        assert net.output_size(size) >= wanted
        smaller = size - net.size_divisor
        assert smaller < net.smallest_input or net.output_size(smaller) < wanted  # smallest such size


def _measured_intervals(net: UNet, n: int, positions) -> dict:
    """Input interval each output pixel reacts to, by perturbing one input pixel at a time (1D network)."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, n)
    deps: dict = {p: set() for p in positions}
    with torch.no_grad():
        for amp in (50.0, -50.0):
            xs = x.repeat(n + 1, 1, 1)  # the last copy stays unperturbed (same batch: same conv algorithm)
            xs[torch.arange(n), 0, torch.arange(n)] += amp
            ys = net(xs)
            changed = (ys[:n] - ys[n:]).abs()[:, 0, :] > 1e-4
            for p in positions:
                deps[p].update(torch.nonzero(changed[:, p]).flatten().tolist())
    return {p: (min(d), max(d)) for p, d in deps.items()}


@pytest.mark.parametrize("depth, padding", [(1, "valid"), (1, "same"), (2, "valid"), (2, "same")])
def test_receptive_field_matches_measured(depth, padding):
    torch.manual_seed(depth)
    net = UNet(spatial_dims=1, out_channels=1, features=(8,) * (depth + 1), padding=padding).eval()
    if padding == "valid":
        n = net.valid_input_size(24)
        positions = range(net.output_size(n))
    else:
        n = 160  # a multiple of 2**depth: no internal padding; look away from the borders
        positions = range(60, 100)
    measured = _measured_intervals(net, n, positions)
    for p, (lo, hi) in measured.items():
        theory_lo, theory_hi = dependency_interval(depth, padding, p)
        assert theory_lo <= lo and hi <= theory_hi  # nothing outside the theoretical interval reacts
    assert max(hi - lo + 1 for lo, hi in measured.values()) == net.receptive_field


def test_receptive_field_values():
    # depth 4 (the paper): the bottleneck alone sees 140 pixels; the up-path adds 4 bottleneck pixels (4 * 16)
    assert UNet(features=(1,) * 5, padding="valid").receptive_field == 204
    assert UNet(features=(1,) * 5, padding="same").receptive_field == 204
    assert UNet(features=(1, 1), padding="valid").receptive_field == 18


def test_gradient_reaches_first_conv():
    net = UNet(features=SMALL, out_channels=3)
    net(torch.randn(2, 1, 20, 20)).sum().backward()
    first = net.encoder.blocks[0][0]
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_parameter_count_hand_computed():
    # features (2, 4), 1 -> 3 channels: enc (1*9*2+2) + (2*9*2+2) + (2*9*4+4) + (4*9*4+4) = 282;
    # up (4*2*4+2) = 34; dec (4*9*2+2) + (2*9*2+2) = 112; head (2*3+3) = 9  => 437
    net = UNet(in_channels=1, out_channels=3, features=(2, 4))
    assert sum(p.numel() for p in net.parameters()) == 437


def test_he_initialisation():
    torch.manual_seed(0)
    net = UNet(features=(64, 128))
    conv = net.decoder.ups[0].conv[0]  # 128 input channels (64 skip + 64 up), fan_in 128 * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / (128 * 9)), rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0


def test_batch_norm_and_dropout():
    net = UNet(features=SMALL, batch_norm=True, dropout=0.5)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 2 * (3 + 2)  # two per conv block: 3 encoder + 2 decoder blocks
    assert net.encoder.blocks[0][0].bias is None  # no conv bias before a batch norm
    assert isinstance(net.encoder.dropout, torch.nn.Dropout) and net.encoder.dropout.p == 0.5
    x = torch.randn(2, 1, 16, 16)
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    b = net(x)
    assert not torch.allclose(a, b)  # dropout active in training
    net.eval()
    assert torch.equal(net(x), net(x))
    assert isinstance(UNet(features=SMALL).encoder.dropout, torch.nn.Identity)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"features": SMALL}, (1, 1, 19, 24)),
        ({"features": SMALL, "batch_norm": True, "dropout": 0.2}, (2, 1, 16, 16)),
        ({"features": (2, 2, 2), "padding": "valid"}, (1, 1, 44, 60)),
    ],
)
def test_torchscript_round_trip(kwargs, shape):
    net = UNet(**kwargs).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = net(x)
        assert torch.allclose(scripted(x), expected, atol=1e-6)
    assert scripted.padding == net.padding and scripted.size_divisor == net.size_divisor


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"padding": "foo"}, ValueError),
        ({"features": (8,)}, ValueError),
        ({"features": (8, 0)}, ValueError),
        ({"features": (8, 2.5)}, ValueError),
        ({"features": "abc"}, TypeError),
        ({"features": 8}, TypeError),
        ({"spatial_dims": 4}, ValueError),
        ({"in_channels": 0}, ValueError),
        ({"out_channels": 2.0}, ValueError),
        ({"dropout": 1.0}, ValueError),
        ({"dropout": -0.1}, ValueError),
        ({"batch_norm": "yes"}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        UNet(**{"features": SMALL, **kwargs})
