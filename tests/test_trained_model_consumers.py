"""Every consumer of ``model.pt`` with a model TRAINED at a non-default width (X-Net 4..16; the configs say 32..512)
and no width override: evaluation, inference, ``ckpt_export``, ``monai.bundle.load`` and the extracted archive
(MONAI Label infer and train: ``tests/monailabel``). Each builds the network from ``model.pt``'s ``model_info`` or
stops with one line naming the fix; nothing loads part of a network silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import monai
import numpy as np
import pytest
import torch
from PIL import Image

from bundle_runner import BUNDLE, CONFIGS, REPO, TINY, config_arg, run_bundle

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated"),
]

TRAINED_FEATURES = [4, 8, 16]
#: Overrides of the consumers: tiny data and tiles, never the width.
DATA = {k: v for k, v in TINY.items() if k.startswith("synthetic#")} | {"patch_size": [64, 64]}


def ensure_model_info(path, features=TRAINED_FEATURES) -> None:
    """Training wrote ``model.pt`` as ``{"model", "model_info"}``, recording the width it was trained with."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"model", "model_info"}, sorted(ckpt)
    assert ckpt["model_info"]["network"]["features"] == list(features)


def trained_network(model_pt):
    """The trained model built independently of the configs and of ``network_from_checkpoint``."""
    from scripts.networks import XNet

    net = XNet(2, 1, 5, TRAINED_FEATURES, padding="same", batch_norm=True, dropout=0.0, skip="both")
    ckpt = torch.load(model_pt, map_location="cpu", weights_only=True)
    torch.nn.Module.load_state_dict(net, ckpt["model"])
    return net.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bundle root whose models/model.pt was trained (1 epoch) through train.json at features 4..16."""
    root = tmp_path_factory.mktemp("trained_root")
    run_bundle(config_arg("train.json"), "training", {**TINY, "features": TRAINED_FEATURES, "epochs": 1,
                                                       "bundle_root": str(root)})
    ensure_model_info(root / "models" / "model.pt")
    return root


def _predict(net, image_path) -> np.ndarray:
    """Overlap-tile prediction (64x64 tiles) of a PNG, (H, W) class indices."""
    from scripts.inferers import OverlapTileInferer

    image = torch.from_numpy(np.asarray(Image.open(image_path), dtype=np.float32) / 255.0)
    with torch.no_grad():  # LoadImage reads a PNG as (W, H): transpose in, transpose back
        return OverlapTileInferer(roi_size=[64, 64], sw_batch_size=4)(image.T[None, None], net).argmax(1)[0].T.numpy()


def test_evaluate_builds_the_trained_network(trained):
    proc = run_bundle(config_arg("train.json", "evaluate.json"), None, {**DATA, "bundle_root": str(trained)})
    log = proc.stdout + proc.stderr
    assert "building the network it was trained with" in log and "features: [4, 8, 16] (saved)" in log
    assert "size mismatch" not in log
    report = json.loads((trained / "eval" / "metrics.json").read_text())
    assert 0.0 <= report["mean_iou"] <= 1.0


def test_inference_equals_the_trained_network(trained, tmp_path):
    datalist = trained / "data" / "synthetic" / "datalist.json"
    out = tmp_path / "out"
    run_bundle(config_arg("inference.json"), None, {**DATA, "bundle_root": str(trained), "input": str(datalist),
                                                    "output_dir": str(out), "pictures": False})
    net = trained_network(trained / "models" / "model.pt")
    items = json.loads(datalist.read_text())["testing"]
    assert items
    for item in items:
        image = datalist.parent / item["image"] if not os.path.isabs(item["image"]) else item["image"]
        stem = os.path.basename(str(image)).rsplit(".", 1)[0]
        seg = np.asarray(Image.open(out / f"{stem}_seg.png"))
        assert (seg == _predict(net, image)).mean() > 0.999


def _inference_parser(root, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(root), **overrides})
    return parser


def test_other_padding_is_not_silent(trained, caplog, monkeypatch):
    """``--padding valid`` on a model trained ``same``: the trained network is built, with one warning naming the
    ignored value; an explicit other network stops in one line naming the differing keys."""
    bundle_cli = [str(Path(monai.__file__).parent / "bundle" / "__main__.py"), "run", "inference", "--padding", "valid"]
    monkeypatch.setattr("sys.argv", bundle_cli)  # as given on the command line (a config default would log at INFO)
    with caplog.at_level("WARNING"):
        net = _inference_parser(trained, padding="valid").get_parsed_content("network_def")
    assert net.padding == "same" and net.init_args["features"] == TRAINED_FEATURES
    assert "padding: 'same' (saved) vs 'valid' (now)" in caplog.text
    from scripts.networks import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match=r"trained with another network \(_target_: .*XNet.*UNet") as err:
        network = _inference_parser(trained, network_def="@networks#unet").get_parsed_content("network_def")
        network.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    assert "\n" not in str(err.value)


def test_bare_state_dict_of_another_width_names_the_override(trained, tmp_path):
    """An older model.pt (bare state dict, no model_info) is loaded strictly into the config's network: a width
    mismatch is one line that names --features."""
    from scripts.networks import CheckpointMismatchError

    (tmp_path / "models").mkdir()
    ckpt = torch.load(trained / "models" / "model.pt", weights_only=True)
    torch.save(ckpt["model"], tmp_path / "models" / "model.pt")
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps what the component raised
        _inference_parser(tmp_path).get_parsed_content("network_def")
    cause = err.value
    while cause is not None and not isinstance(cause, CheckpointMismatchError):
        cause = cause.__cause__
    assert cause is not None, err.value
    assert "--features" in str(cause) and "\n" not in str(cause) and "size mismatch" not in str(cause)
    net = _inference_parser(tmp_path, features=TRAINED_FEATURES).get_parsed_content("network_def")
    assert torch.equal(net.state_dict()["head3.weight"], ckpt["model"]["head3.weight"])


def test_ckpt_export_without_width_or_key(trained, tmp_path):
    from monai.bundle import ckpt_export

    ts_file = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts_file), ckpt_file=str(trained / "models" / "model.pt"),
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                bundle_root=str(trained))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts_file))(x), trained_network(trained / "models" / "model.pt")(x))


def test_archive_load_and_inference(trained, tmp_path):
    """Package the bundle with the trained model.pt (configs untouched), download the archive, then from inside the
    extracted folder: ``monai.bundle.load(..., workflow_type="inference")`` gives the trained network with all its
    tensors, and ``monai.bundle run`` infers with it."""
    from monai.bundle import download

    name = "microscopy_cell_segmentation"
    source = tmp_path / "src"
    top_level = {"data", "eval", "logs", "outputs", "runs", "models", "large_files.json"}
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")

    def ignore(folder, names):
        return set(caches(folder, names)) | (top_level & set(names) if os.path.samefile(folder, BUNDLE) else set())

    shutil.copytree(BUNDLE, source, ignore=ignore)
    (source / "models").mkdir()
    shutil.copy2(trained / "models" / "model.pt", source / "models" / "model.pt")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "package_bundle.py"), "--bundle", str(source),
                           "--out", str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version = json.loads((source / "configs" / "metadata.json").read_text())["version"]
    archive = tmp_path / "dist" / f"{name}_v{version}.zip"
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read(f"{name}/large_files.json"))
    assert manifest["version"] == version and manifest["large_files"][0]["path"] == "models/model.pt"

    download(name=name, url=archive.as_uri(), bundle_dir=str(tmp_path / "bundles"), progress=False)
    extracted = tmp_path / "bundles" / name
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", "."],
                          cwd=extracted, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Verified 'model.pt'" in proc.stderr + proc.stdout, proc.stderr[-2000:]
    code = (
        "import json, torch, monai.bundle\n"
        f"net = monai.bundle.load({name!r}, bundle_dir='..', workflow_type='inference', device='cpu')\n"
        "print(json.dumps({'features': net.init_args['features'], 'bundle': __import__('scripts').BUNDLE_ROOT}))\n"
        "torch.save(net.state_dict(), 'loaded.pt')\n"
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=extracted, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["features"] == TRAINED_FEATURES and os.path.samefile(info["bundle"], extracted)
    loaded = torch.load(extracted / "loaded.pt", weights_only=True)
    expected = trained_network(trained / "models" / "model.pt").state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items()), "every tensor comes from model.pt"

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8)).save(images / "b.png")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--input",
           str(images), "--pictures", "False", "--save_probabilities", "False", "--patch_size", "[64, 64]"]
    proc = subprocess.run(cmd, cwd=extracted, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seg = np.asarray(Image.open(extracted / "outputs" / "b_seg.png"))
    assert (seg == _predict(trained_network(trained / "models" / "model.pt"), images / "b.png")).mean() > 0.999
