"""The CUDA path, checked where a CPU can check it, and on a GPU (``pytest -m cuda``) where only a GPU can.

CPU:
- the training network receives plain tensors, not MONAI ``MetaTensor``s (``MirrorPaddedInferer``);
- under autocast the losses keep class weights and the border weight map in float32 (fp16 overflows above 65504)
  and give the float32 result;
- no config pads with a NumPy-only mode (``"symmetric"`` etc.: a GPU->CPU->GPU round trip per call), and the
  training pad works for images smaller than half a patch;
- the configs' loss is moved to the network's device (its class-weight buffers with it);
- ``deterministic`` / ``allow_tf32`` / ``sync_bn`` switches reach PyTorch;
- the seeds of the random augmentation are unchanged (why the crop is not moved before the noise).

CUDA only (skipped with "needs CUDA"): TF32 policy honoured numerically, ``cudnn.benchmark`` with
``deterministic=false``, loss buffers on ``cuda``, no pageable host->device copy inside a training step, and the
feature-map picture pass under the engine's autocast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from bundle_runner import CONFIGS, TINY
from scripts.backends import set_backends
from scripts.inferers import MirrorPaddedInferer
from scripts.losses import BorderWeightedCELoss, IoULoss, SoftmaxCrossEntropyLoss
from scripts.networks import UNet, XNet
from scripts.transforms import MirrorSpatialPad

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

#: NumPy-only pad modes: MONAI pads with ``numpy.pad`` for them (a host round trip for a CUDA tensor).
NUMPY_ONLY_PAD_MODES = {"symmetric", "linear_ramp", "maximum", "mean", "median", "minimum", "empty", "wrap"}


@pytest.fixture
def restore_backends():
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    yield
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = flags


def parser(*files: str, **overrides) -> ConfigParser:
    p = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / f) for f in files]))
    for k, v in {**TINY, **overrides}.items():
        p[k] = v
    return p


# --------------------------------------------------------------------------------------------- plain tensors
class Spy(torch.nn.Module):
    """Calls ``module`` and records the type of every input it is given (``.module``: inferers see its geometry)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.seen: list[type] = []

    def forward(self, x):
        self.seen.append(type(x))
        return self.module(x)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_training_network_receives_plain_tensors(padding):
    torch.manual_seed(0)
    spy = Spy(XNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8), padding=padding).train())
    x = MetaTensor(torch.rand(2, 1, 32, 32), meta={"filename_or_obj": "a.png"})
    outs = MirrorPaddedInferer()(x, spy)
    assert spy.seen == [torch.Tensor], f"the network got {spy.seen}"
    assert all(type(o) is torch.Tensor and o.shape == (2, 3, 32, 32) for o in outs)


# --------------------------------------------------------------------------------------------- float32 losses
def _ce_reference(logits, labels, weight):
    return F.cross_entropy(logits.float(), labels, weight=torch.as_tensor(weight, dtype=torch.float32))


def _spy_cross_entropy(monkeypatch, module):
    dtypes: list[tuple] = []
    real = F.cross_entropy

    def spy(input, target, weight=None, **kwargs):
        dtypes.append((input.dtype, None if weight is None else weight.dtype))
        return real(input, target, weight=weight, **kwargs)

    monkeypatch.setattr(module.F, "cross_entropy", spy)
    return dtypes


def test_cross_entropy_keeps_weights_float32_under_autocast(monkeypatch):
    import scripts.losses.cross_entropy as ce

    torch.manual_seed(0)
    weight = [0.5, 3.0e4, 1.0e5, 7.0]  # 1e5: a class of <= 3 pixels in a 1024^2 image, above float16's 65504
    loss = SoftmaxCrossEntropyLoss(weight=weight)
    labels = torch.randint(0, 4, (2, 1, 16, 16))
    logits = torch.randn(2, 4, 16, 16)
    dtypes = _spy_cross_entropy(monkeypatch, ce)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = torch.nn.functional.conv2d(logits, torch.eye(4)[:, :, None, None])  # bfloat16 "network output"
        assert low.dtype == torch.bfloat16
        value = loss(low, labels)
    assert dtypes == [(torch.float32, torch.float32)]
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, _ce_reference(low, labels[:, 0], weight), rtol=1e-6, atol=1e-6)
    # float16 logits (CUDA autocast's type): the weights would overflow to inf in float16
    half = logits.half()
    torch.testing.assert_close(loss(half, labels), _ce_reference(half, labels[:, 0], weight), rtol=1e-6, atol=1e-6)


def test_border_loss_keeps_weight_map_float32_under_autocast(monkeypatch):
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (1, 1, 16, 16)).float()
    pixel_weight = torch.rand(1, 1, 16, 16) * 1.0e5  # large border weights
    target = torch.cat([labels, pixel_weight], dim=1)
    class_weight = [1.0, 2.0e4, 7.0e4]
    loss = BorderWeightedCELoss(weight=class_weight)
    logits = torch.randn(1, 3, 16, 16).half()
    w = pixel_weight[:, 0] + torch.as_tensor(class_weight)[labels[:, 0].long()]
    expected = (w * F.cross_entropy(logits.float(), labels[:, 0].long(), reduction="none")).mean()
    value = loss(logits, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(loss(logits.bfloat16(), target),
                                   (w * F.cross_entropy(logits.bfloat16().float(), labels[:, 0].long(),
                                                        reduction="none")).mean(), rtol=1e-6, atol=1e-6)


def test_region_loss_is_float32_for_low_precision_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 64, 64).bfloat16()
    labels = torch.randint(0, 3, (2, 1, 64, 64))
    loss = IoULoss(to_onehot_y=True, softmax=True, weight=[1.0, 7.0e4, 2.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits, labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(logits.float(), labels), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------- padding
def _modes(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("mode", "padding_mode"):  # a transform's or an inferer's (pad) mode, one or one per key
                for value in v if isinstance(v, list) else [v]:
                    yield f"{path}#{k}", value
            yield from _modes(v, f"{path}#{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _modes(v, f"{path}#{i}")


def test_no_numpy_only_pad_mode_in_any_config():
    files = sorted(CONFIGS.rglob("*.json"))
    assert len(files) > 10
    bad = []
    for f in files:
        text = f.read_text()
        if '"symmetric"' in text:
            bad.append(f"{f.relative_to(CONFIGS)}: \"symmetric\"")
        bad += [f"{f.relative_to(CONFIGS)}{key}: {v}" for key, v in _modes(json.loads(text))
                if v in NUMPY_ONLY_PAD_MODES]
    assert not bad, f"NumPy-only pad modes (a host round trip per call on a GPU): {bad}"


def test_training_pad_mirrors_in_torch_for_any_image_size():
    pad = parser("train.json", patch_size=[256, 256]).get_parsed_content("train#random_transforms")[-2]
    image = MetaTensor(torch.arange(64 * 50, dtype=torch.float32).reshape(1, 64, 50))  # < half a patch
    out = pad({"image": image, "label": image.clone()})
    assert out["image"].shape == (1, 256, 256) and type(out["image"]) is MetaTensor
    # numpy's "reflect" (no edge pixel repeated), applied repeatedly: the even periodic extension
    expected = np.pad(image.numpy()[0], ((96, 96), (103, 103)), mode="reflect")
    np.testing.assert_array_equal(out["image"].numpy()[0], expected)
    np.testing.assert_array_equal(out["label"].numpy(), out["image"].numpy())
    assert MirrorSpatialPad([32, 32])(image) is image, "no padding needed: the image is returned as it is"
    as_numpy = MirrorSpatialPad([256, 256])(image.numpy())  # NumPy in, NumPy out, the same pixels
    assert isinstance(as_numpy, np.ndarray)
    np.testing.assert_array_equal(as_numpy[0], expected)


# --------------------------------------------------------------------------------------------- loss on the device
@pytest.mark.parametrize("experiment", [None, "paper/xnet_sce_and_dice.json", "losses/unet_border_ce.json",
                                        "losses/unet_dice_ce.json"])
def test_configured_loss_is_on_the_network_device(experiment):
    # "meta": a device that is not the CPU and needs no GPU; every buffer must have followed .to(@device)
    files = ["train.json"] + ([f"experiments/{experiment}"] if experiment else [])
    p = parser(*files, device="$torch.device('meta')", class_weights=[1.0, 2.0, 3.0, 4.0, 5.0])
    loss = p.get_parsed_content("train#trainer#loss_function")
    network = p.get_parsed_content("network")
    assert next(network.parameters()).device.type == "meta"
    buffers = dict(loss.named_buffers())
    if experiment in (None, "paper/xnet_sce_and_dice.json"):
        assert any("class_weight" in k for k in buffers), "the SCE class weights should be buffers"
    assert all(b.device.type == "meta" for b in buffers.values()), {k: b.device for k, b in buffers.items()}


# --------------------------------------------------------------------------------------------- switches
def test_set_backends_switches(restore_backends):
    set_backends(3)
    a = torch.rand(4)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    set_backends(3, deterministic=False, allow_tf32=False)
    torch.testing.assert_close(torch.rand(4), a, rtol=0, atol=0)  # the same seeds: CPU results unchanged
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    with pytest.raises(ValueError, match="`deterministic` must be true or false"):
        set_backends(0, deterministic="false")


@pytest.mark.parametrize("files", [["train.json"], ["train.json", "evaluate.json"], ["inference.json"],
                                   ["train.json", "multi_gpu_train.json"],
                                   ["train.json", "evaluate.json", "multi_gpu_evaluate.json"]])
def test_every_workflow_applies_the_switches(files, restore_backends, tmp_path):
    """Each workflow seeds and sets the backends once, in its pre-flight (``initialize``), from its own settings."""
    p = parser(*files, deterministic=False, allow_tf32=False, bundle_root=str(tmp_path), ckpt_path=None)
    assert "$@preflight.run()" in p["initialize"] and not any("set_backends" in s for s in p["initialize"])
    p.get_parsed_content("preflight").run()  # tiny data in tmp_path; no process group here: rank 0
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("sync_bn", [False, True])
def test_multi_gpu_sync_batchnorm_switch(sync_bn):
    p = parser("train.json", "multi_gpu_train.json", sync_bn=sync_bn, device="$torch.device('cpu')")
    module = p.get_parsed_content("network#module")
    kinds = {type(m) for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert kinds == ({torch.nn.SyncBatchNorm} if sync_bn else {torch.nn.BatchNorm2d})
    # the same state_dict keys either way: model.pt loads into inference.json's plain-BatchNorm network
    assert module.state_dict().keys() == p.get_parsed_content("network_def", instantiate=True).state_dict().keys()


def test_augmentation_seeds_unchanged():
    """``Compose`` hands each random transform its own seed in list order, so moving the crop before the intensity
    transforms (to add noise to the patch only) would change every later transform's random numbers -- and the
    quick start's result -- even for patch-size images, where the crop draws none. Keep this order (or accept new
    numbers); the padding is not random and may move freely."""
    from monai.transforms import Randomizable

    transforms = parser("train.json", device="$torch.device('cpu')").get_parsed_content("train#random_transforms")
    random = [type(t).__name__ for t in transforms if isinstance(t, Randomizable)]
    assert random == ["Rand2DElasticd", "RandRotate90d", "RandFlipd", "RandFlipd", "RandShiftIntensityd",
                      "RandScaleIntensityd", "RandGaussianNoised", "RandSpatialCropd"]


# --------------------------------------------------------------------------------------------- CUDA only
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.usefixtures("restore_backends")
def test_cuda_tf32_policy_honoured(allow):
    set_backends(0, allow_tf32=allow)
    assert torch.backends.cudnn.allow_tf32 is allow and torch.backends.cuda.matmul.allow_tf32 is allow
    net = UNet(spatial_dims=2, in_channels=1, out_channels=5, features=(16, 32, 64)).eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        ref = net.double()(x.double()).float()
        out = net.float().cuda()(x.cuda()).cpu()
    err = (out - ref).abs().max().item()
    if not allow:
        assert err < 1e-4, f"allow_tf32=false must give float32 precision, max error {err}"
    elif torch.cuda.get_device_capability()[0] >= 8:
        assert err < 5e-2, f"TF32 error {err} larger than TF32's ~1e-3 relative"


@pytest.mark.cuda
@needs_cuda
def test_cuda_benchmark_mode_when_not_deterministic(restore_backends):
    p = parser("train.json", deterministic=False)
    p["probe"] = [s for s in p["initialize"] if "set_backends" in s][0]
    p.get_parsed_content("probe")
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    net = UNet(spatial_dims=2, in_channels=1, out_channels=5, features=(4, 8, 16)).cuda()
    net(torch.rand(2, 1, 64, 64, device="cuda")).sum().backward()  # runs with benchmark on


@pytest.mark.cuda
@needs_cuda
def test_cuda_loss_buffers_on_the_gpu():
    p = parser("train.json", class_weights=[1.0, 2.0, 3.0, 4.0, 5.0])
    loss = p.get_parsed_content("train#trainer#loss_function")
    assert next(p.get_parsed_content("network").parameters()).is_cuda
    buffers = dict(loss.named_buffers())
    assert buffers and all(b.is_cuda for b in buffers.values()), {k: b.device for k, b in buffers.items()}


@pytest.mark.cuda
@needs_cuda
def test_cuda_training_step_makes_no_host_to_device_copy(tmp_path):
    """One step of train.json's trainer (AMP on) with the batch already on the GPU (the cached pipeline puts it
    there): no tensor of more than one element crosses from the host to the GPU inside the step."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class HostToDevice(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
            outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            if any(i.device.type == "cpu" and i.numel() > 1 for i in ins) and any(o.is_cuda for o in outs):
                self.copies.append(str(func))
            return out

    p = parser("train.json", bundle_root=str(tmp_path), class_weights=[1.0, 2.0, 3.0, 4.0, 5.0])
    trainer = p.get_parsed_content("train#trainer")
    batch = {"image": torch.rand(2, 1, 64, 64, device="cuda"),
             "label": torch.randint(0, 5, (2, 1, 64, 64), device="cuda").float()}
    trainer._iteration(trainer, batch)  # warm-up: lazily created state (GradScaler, Adam)
    with HostToDevice() as mode:
        trainer._iteration(trainer, batch)
    torch.cuda.synchronize()
    assert not mode.copies, f"host->device copies in a training step: {mode.copies}"


@pytest.mark.cuda
@needs_cuda
def test_cuda_feature_map_capture_is_the_engines_own_pass(tmp_path):
    from monai.engines import SupervisedEvaluator

    from scripts.visualize import FeatureMapCapture, PictureWriter

    seen = []
    net = UNet(spatial_dims=2, in_channels=1, out_channels=5, features=(4, 8, 16)).cuda()
    net.head.register_forward_pre_hook(lambda m, inp: seen.append((torch.is_autocast_enabled("cuda"), m.training)))
    writer = PictureWriter(tmp_path)
    data = [{"image": torch.rand(1, 1, 64, 64)}]
    evaluator = SupervisedEvaluator(device=torch.device("cuda"), val_data_loader=data, network=net, amp=True,
                                    val_handlers=[FeatureMapCapture(), writer], decollate=False)
    evaluator.run()
    assert seen == [(True, False)], seen  # one pass: the engine's, under its autocast, in eval mode
    features = evaluator.state.output["features"]
    assert features.device.type == "cuda" and features.dtype == torch.float32 and features.shape == (1, 1, 64, 64)
    assert evaluator.state.output["pred"].shape == (1, 5, 64, 64)
    assert "features" in writer.rows[0][1]
    assert net.training, "the network's mode must be restored"