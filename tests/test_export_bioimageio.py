"""The bioimage.io export (``python -m scripts.export bioimageio``) in the bundle's own environment, on a tiny U-Net
(features 4, 8, 16: two poolings, halo 24) and a synthetic section; the shipped model only where it is cheap.

What the package promises and is checked here: its description (axes, sizes on the pooling grid, the spec's
preprocessing, halo = the overlap-tile context margin, licence, citations, every file's sha256), test tensors that are
the bundle network's own output, whose centre (the halo cropped) IS the bundle's overlap-tile prediction of the whole
section (so tiling with the halo is seamless), and all three weight formats reproducing them (TorchScript, ONNX in
onnxruntime, the state dict in the package's plain-PyTorch ``torch_unet.py``). ``bioimageio test`` itself runs in
its own environment: tests/bioimageio_zoo.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import scripts
from scripts.data import CLASS_NAMES, make_sample, write_png
from scripts.errors import ExportError
from scripts.export import export_bioimageio
from scripts.export.__main__ import main as export_main
from scripts.export.reference import bundle_probabilities
from scripts.export.torch_unet import UNet2d
from scripts.export.weights import ProbabilityNetwork, architecture_kwargs
from scripts.inferers.tiling import context_margins, network_grid
from scripts.networks import ModelInfo, UNet, network_from_checkpoint

pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean"),
]

FEATURES = [4, 8, 16]
HALO = 24  # context_margins of a depth-2 same-padding U-Net (receptive field 44), checked below
TEST_SIZE = 16


def tiny_unet(padding: str = "same") -> UNet:
    """A depth-2 U-Net with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    net = UNet(2, 1, len(CLASS_NAMES), FEATURES, padding=padding, batch_norm=True)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return net.eval()


def save_model(net: torch.nn.Module, path) -> str:
    info = ModelInfo(net, CLASS_NAMES, 255, [64, 64]).state_dict()
    torch.save({"model": net.state_dict(), "model_info": info}, path)
    return str(path)


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    """A synthetic 8-bit 96x112 section as a PNG (the export's --image)."""
    image, _ = make_sample((96, 112), seed=3)
    return write_png(tmp_path_factory.mktemp("section") / "section.png", image), image


@pytest.fixture(scope="module")
def package(tmp_path_factory, section):
    root = tmp_path_factory.mktemp("export")
    net = tiny_unet()
    model = save_model(net, root / "model.pt")
    rdf = export_bioimageio(root / "package", section[0], model=model, test_size=TEST_SIZE,
                            zip_path=root / "package.zip")
    return rdf, net, root


def test_torch_unet_is_the_bundle_unet():
    """The package's architecture source loads the bundle's U-Net state dict strictly and computes what the
    TorchScript/ONNX weights compute (transposed, softmax), also at sizes off the pooling grid."""
    net = tiny_unet()
    arch = UNet2d(**architecture_kwargs(net)).eval()
    arch.load_state_dict(net.state_dict(), strict=True)
    for shape in ((2, 1, 64, 48), (1, 1, 37, 50)):
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(arch(x), ProbabilityNetwork(net)(x), rtol=1e-5, atol=1e-6)
    shipped = network_from_checkpoint(Path(scripts.BUNDLE_ROOT) / "models" / "pretrained" / "model.pt")
    kwargs = architecture_kwargs(shipped)
    assert kwargs["features"] == [16, 32, 64, 128, 256] and kwargs["out_channels"] == 5
    arch = UNet2d(**kwargs).eval()
    arch.load_state_dict(shipped.state_dict(), strict=True)
    x = torch.rand(1, 1, 48, 32) * 0.8
    with torch.no_grad():
        torch.testing.assert_close(arch(x), ProbabilityNetwork(shipped.eval())(x), rtol=1e-5, atol=1e-6)
    assert architecture_kwargs(tiny_unet("valid")) is None


@pytest.mark.parametrize("name", ["UNet", "XNet", "DoubleUNet", "EnsembleUNet"])
def test_probability_network_scripts_for_every_network(name):
    """The TorchScript weights of every bundle network: X-Net and the baselines are typed to return their training
    outputs too (before v0.10.2 scripting them failed, so no X-Net could be exported); scripted = eager."""
    import scripts.networks as networks

    torch.manual_seed(0)
    net = getattr(networks, name)(2, 1, len(CLASS_NAMES), FEATURES, padding="same", batch_norm=True).eval()
    model = ProbabilityNetwork(net).eval()
    scripted = torch.jit.script(model)
    x = torch.rand(1, 1, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        torch.testing.assert_close(model(x), torch.softmax(net(x.transpose(-2, -1)), 1).transpose(-2, -1))


def test_package_description(package):
    rdf_path, net, root = package
    rdf = yaml.safe_load(rdf_path.read_text())
    folder = rdf_path.parent
    _, padding, div = network_grid(net)
    assert context_margins(net, padding, div, None, None)[0] == HALO
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"
    assert rdf["license"] == "CC-BY-NC-SA-3.0"
    assert [c.get("doi") for c in rdf["cite"]][1:] == ["10.1007/978-3-319-24574-4_28", "10.6084/m9.figshare.856713"]
    assert "X-Net" in rdf["cite"][0]["text"] and rdf["authors"]
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert [a.get("id", a["type"]) for a in out["axes"]] == ["batch", "channel", "y", "x"]
    assert inp["axes"][2]["size"] == inp["axes"][3]["size"] == {"min": 52, "step": div}  # > 2 * halo, on the grid
    assert out["axes"][1]["channel_names"] == list(CLASS_NAMES)
    assert [a.get("halo") for a in out["axes"]] == [None, None, HALO, HALO]
    assert out["axes"][2]["size"] == {"tensor_id": "input", "axis_id": "y"}
    assert inp["pad"] == {"mode": "reflect"}
    assert [p["id"] for p in inp["preprocessing"]] == ["ensure_dtype", "scale_linear", "clip"]
    assert inp["preprocessing"][1]["kwargs"]["gain"] == pytest.approx(1 / 255)
    assert inp["preprocessing"][2]["kwargs"] == {"min": 0.0, "max": 1.0}
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["features"] == FEATURES
    entries = [rdf["documentation"], *rdf["covers"], inp["test_tensor"], out["test_tensor"], inp["sample_tensor"],
               out["sample_tensor"], rdf["weights"]["pytorch_state_dict"]["architecture"],
               *rdf["weights"].values()]
    for entry in entries:
        assert hashlib.sha256((folder / entry["source"]).read_bytes()).hexdigest() == entry["sha256"], entry["source"]
    assert "# Validation" in (folder / "README.md").read_text() or "## Validation" in (folder / "README.md").read_text()
    with zipfile.ZipFile(root / "package.zip") as zf:
        assert sorted(zf.namelist()) == sorted(["rdf.yaml", *(e["source"] for e in entries)])


def test_test_tensors_are_the_bundle_prediction(package, section):
    """test_output = the bundle network on test_input as it is (the spec's test convention); its centre = the
    bundle's overlap-tile prediction of the whole section there (the halo makes tiles seamless)."""
    rdf_path, net, _ = package
    folder = rdf_path.parent
    x, y = np.load(folder / "test_input.npy"), np.load(folder / "test_output.npy")
    size = TEST_SIZE + 2 * HALO
    assert x.shape == (1, 1, size, size) and y.shape == (1, 5, size, size)
    image = section[1]
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    np.testing.assert_array_equal(x[0, 0], image[top:top + size, left:left + size])
    with torch.no_grad():  # independent of the exporter: transpose (MONAI's view), scale, network, softmax
        raw = torch.softmax(net(torch.as_tensor(x).transpose(-2, -1) / 255), dim=1).transpose(-2, -1).numpy()
    np.testing.assert_allclose(y, raw, atol=1e-6)
    whole = bundle_probabilities(net, image[None].astype(np.float32), 255)
    centre = whole[:, top + HALO:top + HALO + TEST_SIZE, left + HALO:left + HALO + TEST_SIZE]
    np.testing.assert_allclose(y[0, :, HALO:-HALO, HALO:-HALO], centre, atol=1e-5)
    assert (y[0, :, :HALO] - whole[:, top:top + HALO, left:left + size]).__abs__().max() > 1e-3, \
        "the halo band sees the tile's zero padding: it must differ (else the test would not test the halo)"


def test_every_weight_format_reproduces_the_test_output(package):
    import onnxruntime as ort

    folder = package[0].parent
    rdf = yaml.safe_load(package[0].read_text())
    x, expected = np.load(folder / "test_input.npy"), np.load(folder / "test_output.npy")
    ts = torch.jit.load(str(folder / "weights_torchscript.pt"))
    spec = importlib.util.spec_from_file_location("package_arch", folder / "torch_unet.py")
    arch_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch_module)
    sd = rdf["weights"]["pytorch_state_dict"]
    arch = getattr(arch_module, sd["architecture"]["callable"])(**sd["architecture"]["kwargs"]).eval()
    arch.load_state_dict(torch.load(folder / sd["source"], weights_only=True), strict=True)
    sess = ort.InferenceSession(str(folder / "weights.onnx"), providers=["CPUExecutionProvider"])
    scaled = x / 255  # the rdf's preprocessing (the values lie in 0..255, the clip changes nothing)
    with torch.no_grad():
        got = {"torchscript": ts(torch.as_tensor(scaled)).numpy(), "state_dict": arch(torch.as_tensor(scaled)).numpy(),
               "onnx": sess.run(None, {"input": scaled.astype(np.float32)})[0]}
    for fmt, y in got.items():
        np.testing.assert_allclose(y, expected, atol=1e-5, err_msg=fmt)
    # other sizes the rdf allows (min + n * step), batch 2, off-square: ONNX = TorchScript
    z = torch.rand(2, 1, 52, 60)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": z.numpy()})[0], ts(z).numpy(), atol=1e-5)


def test_refusals(tmp_path, section, package):
    png = section[0]
    model = save_model(tiny_unet(), tmp_path / "model.pt")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_bioimageio(tmp_path / "busy", png, model=model, test_size=TEST_SIZE)
    with pytest.raises(ExportError, match="other files than an exported package"):
        export_bioimageio(tmp_path / "busy", png, model=model, test_size=TEST_SIZE, overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="--model .*: no such file"):
        export_bioimageio(tmp_path / "m", png, model=tmp_path / "missing.pt")
    with pytest.raises(ExportError, match="valid"):
        export_bioimageio(tmp_path / "v", png, model=save_model(tiny_unet("valid"), tmp_path / "v.pt"))
    with pytest.raises(ExportError, match="multiple of 4"):
        export_bioimageio(tmp_path / "t", png, model=model, test_size=18)
    with pytest.raises(ExportError, match="smaller than the test input"):
        export_bioimageio(tmp_path / "t", png, model=model, test_size=64)
    bright = tmp_path / "bright.tif"
    import tifffile

    tifffile.imwrite(bright, (np.arange(96 * 96, dtype=np.uint16).reshape(96, 96)))
    with pytest.raises(ExportError, match="outside the model's 0..255"):
        export_bioimageio(tmp_path / "b", bright, model=model, test_size=TEST_SIZE)
    assert not any((tmp_path / name).exists() for name in ("v", "t", "b")), "a refused export writes nothing"
    # an earlier package is replaced with --overwrite (the CLI), and the rdf's files change with the model
    out = shutil.copytree(package[0].parent, tmp_path / "package")
    before = (out / "rdf.yaml").read_text()
    other = tiny_unet()
    with torch.no_grad():
        other.head.bias.add_(0.5)
    argv = ["bioimageio", "--out", str(out), "--image", str(png), "--model", save_model(other, tmp_path / "o.pt"),
            "--test-size", str(TEST_SIZE)]
    assert export_main(argv) == 1, "no overwrite without --overwrite"
    assert export_main([*argv, "--overwrite"]) == 0
    assert (out / "rdf.yaml").read_text() != before


def test_the_shipped_xnet_exports_as_an_xnet_with_its_card(tmp_path):
    """``--model bundle/models/pretrained/xnet.pt``: the package names the X-Net (name, description, README), its
    validation is the X-Net's model card (``metadata.json`` ``pretrained_xnet``), not the U-Net's nor "trained by
    its user"; TorchScript and ONNX only (the plain-PyTorch architecture is the U-Net's), and the TorchScript weights
    reproduce the test output. Before v0.10.2 the package called any model a U-Net."""
    import json

    from scripts.export.bioimageio import shipped_card

    models = Path(scripts.BUNDLE_ROOT) / "models" / "pretrained"
    metadata = json.loads((Path(scripts.BUNDLE_ROOT) / "configs" / "metadata.json").read_text())
    sha = hashlib.sha256((models / "xnet.pt").read_bytes()).hexdigest()
    assert shipped_card(metadata, sha) is metadata["pretrained_xnet"]
    unet_sha = hashlib.sha256((models / "model.pt").read_bytes()).hexdigest()
    assert shipped_card(metadata, unet_sha) is metadata["pretrained_model"]
    assert shipped_card(metadata, "0" * 64) is None

    image, _ = make_sample((256, 256), seed=5)
    png = write_png(tmp_path / "section.png", image)
    rdf_path = export_bioimageio(tmp_path / "package", png, model=models / "xnet.pt", test_size=16, cover_size=256)
    rdf = yaml.safe_load(rdf_path.read_text())
    assert rdf["name"] == "Microscopy cell segmentation X-Net (Drosophila ssTEM)"
    assert rdf["description"].startswith("X-Net segmentation of ssTEM sections")
    assert set(rdf["weights"]) == {"torchscript", "onnx"}
    readme = (rdf_path.parent / "README.md").read_text()
    card = metadata["pretrained_xnet"]["test"]
    assert "classes with the bundle's X-Net, trained on serial-section TEM" in readme
    assert "The shipped X-Net, on 4 Drosophila" in readme and f"mean IoU {card['mean_iou']}" in readme
    assert "trained by its user" not in readme
    test_input = torch.from_numpy(np.load(rdf_path.parent / rdf["inputs"][0]["test_tensor"]["source"]))
    expected = np.load(rdf_path.parent / rdf["outputs"][0]["test_tensor"]["source"])
    scripted = torch.jit.load(str(rdf_path.parent / rdf["weights"]["torchscript"]["source"]))
    with torch.no_grad():
        got = scripted(test_input / 255.0).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
