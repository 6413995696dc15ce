"""The bioimage.io package as bioimage.io tools see it: ``bioimageio test`` on it, and bioimageio.core's prediction
pipeline (each weight format, the whole image and in blocks with the halo) against the bundle's own overlap-tile
inference. Run in the BioImage Model Zoo environment (``bash tools/bioimageio_env.sh``)::

    .venv-bioimageio/bin/python -m pytest -q tests/bioimageio_zoo

Offline: the packages are exported here (synthetic sections from ``scripts.data.synthetic``; the real-data test
reads a Drosophila section from the shared dataset and skips with a reason without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "bioimageio.core",
    reason="bioimageio.core is not installed here; create its environment with `bash tools/bioimageio_env.sh` and run "
    "`.venv-bioimageio/bin/python -m pytest -q tests/bioimageio_zoo` (.ci/run does both)",
)

import torch  # noqa: E402
import yaml  # noqa: E402

from scripts.data import CLASS_NAMES, make_sample, read_image, write_png  # noqa: E402
from scripts.export import export_bioimageio  # noqa: E402
from scripts.export.reference import bundle_probabilities, to_channel_first  # noqa: E402
from scripts.networks import ModelInfo, UNet, network_from_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from bioimageio_agreement import FORMATS, package_prediction  # noqa: E402

SHIPPED = REPO / "bundle" / "models" / "pretrained" / "model.pt"
SHIPPED_XNET = REPO / "bundle" / "models" / "pretrained" / "xnet.pt"
MIN_AGREEMENT = 0.999


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, int(os.environ.get("OMP_NUM_THREADS", "2")))))
    yield
    torch.set_num_threads(threads)


def _section(path: Path, size, seed: int) -> Path:
    image, _ = make_sample(size, seed=seed)
    return write_png(path, image)


@pytest.fixture(scope="module")
def shipped_package(tmp_path_factory):
    """The shipped model's package, its test tensors made from a synthetic 512x512 section."""
    root = tmp_path_factory.mktemp("shipped")
    return export_bioimageio(root / "package", _section(root / "section.png", 512, seed=0), model=SHIPPED)


def bioimageio_test(rdf: Path) -> dict:
    """``bioimageio test <rdf>`` (the command line) -> its JSON summary; offline: every HTTP(S) request goes to a
    closed local port."""
    summary = rdf.parent.parent / f"{rdf.parent.name}_summary.json"
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
           "NO_PROXY": "", "no_proxy": ""}
    result = subprocess.run([str(Path(sys.executable).with_name("bioimageio")), "test", str(rdf), "--summary",
                             str(summary)], capture_output=True, text=True, cwd=rdf.parent, timeout=900, env=env)
    assert summary.is_file(), (result.stdout + result.stderr)[-4000:]
    report = json.loads(summary.read_text())
    report["returncode"] = result.returncode
    return report


def test_bioimageio_test_passes(shipped_package):
    """The BioImage Model Zoo's own check: the description validates and every weight format reproduces the test
    output and runs at the other sizes and batch sizes the description allows."""
    report = bioimageio_test(shipped_package)
    failed = [d["name"] for d in report["details"] if d["status"] != "passed"]
    assert report["returncode"] == 0 and report["status"] == "passed" and not failed, failed
    names = [d["name"] for d in report["details"]]
    for fmt in FORMATS:
        assert f"Reproduce test outputs from test inputs ({fmt})" in names, fmt
        assert sum(n.startswith(f"Run {fmt} inference for inputs") for n in names) == 6, fmt


def test_bioimageio_test_passes_for_the_shipped_xnet(tmp_path):
    """The shipped X-Net's package (``--model bundle/models/pretrained/xnet.pt``; TorchScript and ONNX, no
    plain-PyTorch architecture): ``bioimageio test`` passes, and bioimageio.core's prediction of a whole synthetic
    section agrees with the bundle's overlap-tile inference of the X-Net (v0.10.1 could not export it)."""
    section = _section(tmp_path / "section.png", 256, seed=4)
    rdf = export_bioimageio(tmp_path / "package", section, model=SHIPPED_XNET, test_size=16)
    assert set(yaml.safe_load(rdf.read_text())["weights"]) == {"torchscript", "onnx"}
    report = bioimageio_test(rdf)
    failed = [d["name"] for d in report["details"] if d["status"] != "passed"]
    assert report["returncode"] == 0 and report["status"] == "passed" and not failed, failed
    names = [d["name"] for d in report["details"]]
    for fmt in ("torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in names, fmt
    pixels = to_channel_first(read_image(section)).astype(np.float32)
    reference = bundle_probabilities(network_from_checkpoint(SHIPPED_XNET), pixels, 255)
    for fmt in ("torchscript", "onnx"):
        predicted, _ = package_prediction(rdf, fmt, pixels, None)
        agreement, max_diff = _agreement(reference, predicted)
        assert agreement >= MIN_AGREEMENT and max_diff < 1e-3, (fmt, agreement, max_diff)


def _agreement(reference: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    assert predicted.shape == reference.shape
    return float(np.mean(predicted.argmax(0) == reference.argmax(0))), float(np.abs(predicted - reference).max())


def _tiny_model(path: Path) -> tuple[UNet, Path]:
    torch.manual_seed(0)
    net = UNet(2, 1, len(CLASS_NAMES), [4, 8, 16], padding="same", batch_norm=True).eval()
    torch.save({"model": net.state_dict(), "model_info": ModelInfo(net, CLASS_NAMES, 255, [64, 64]).state_dict()},
               path)
    return net, path


def test_bioimageio_test_catches_a_wrong_test_output(tmp_path):
    """The check can fail: a package whose test output is off (its sha256 updated, so only the values are wrong)
    is refused, for every weight format."""
    _, model = _tiny_model(tmp_path / "model.pt")
    rdf = export_bioimageio(tmp_path / "package", _section(tmp_path / "s.png", 96, seed=1), model=model, test_size=16)
    out = rdf.parent / "test_output.npy"
    y = np.load(out)
    np.save(out, np.roll(y, 1, axis=1))  # classes swapped
    rdf_yaml = yaml.safe_load(rdf.read_text())
    rdf_yaml["outputs"][0]["test_tensor"]["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    rdf.write_text(yaml.safe_dump(rdf_yaml, sort_keys=False))
    report = bioimageio_test(rdf)
    assert report["returncode"] != 0 and report["status"] != "passed"  # "valid-format": valid, not reproduced
    failed = {d["name"] for d in report["details"] if d["status"] == "failed"}
    assert {f"Reproduce test outputs from test inputs ({fmt})" for fmt in FORMATS} <= failed, failed


def test_tiny_model_agreement_synthetic(tmp_path):
    """A tiny U-Net (features 4, 8, 16) on a synthetic 128x160 section: every weight format through bioimageio.core,
    whole and in blocks (tiles of min + step pixels with the halo), gives the bundle's overlap-tile prediction."""
    net, model = _tiny_model(tmp_path / "model.pt")
    section = _section(tmp_path / "section.png", (128, 160), seed=5)
    rdf = export_bioimageio(tmp_path / "package", section, model=model, test_size=16)
    pixels = to_channel_first(read_image(section)).astype(np.float32)
    reference = bundle_probabilities(net, pixels, 255)
    for fmt in FORMATS:
        for blocksize in (None, 1):
            predicted, _ = package_prediction(rdf, fmt, pixels, blocksize)
            agreement, max_diff = _agreement(reference, predicted)
            assert agreement >= MIN_AGREEMENT and max_diff < 1e-4, (fmt, blocksize, agreement, max_diff)


@pytest.mark.realdata
def test_shipped_model_agreement_on_a_drosophila_section(drosophila_dir, tmp_path):
    """The shipped model on a 1024x1024 Drosophila section (stack 1, section 0): each weight format, the whole image
    through bioimageio.core, against the bundle's overlap-tile prediction (label agreement >= 99.9%)."""
    section = drosophila_dir / "stack1" / "raw" / "00.tif"
    rdf = export_bioimageio(tmp_path / "package", section, model=SHIPPED)
    pixels = to_channel_first(read_image(section)).astype(np.float32)
    assert pixels.shape == (1, 1024, 1024)
    reference = bundle_probabilities(network_from_checkpoint(SHIPPED), pixels, 255)
    for fmt in FORMATS:
        predicted, _ = package_prediction(rdf, fmt, pixels, None)
        agreement, max_diff = _agreement(reference, predicted)
        assert agreement >= MIN_AGREEMENT and max_diff < 1e-3, (fmt, agreement, max_diff)
