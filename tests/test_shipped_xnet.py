"""The shipped X-Net (``bundle/models/pretrained/xnet.pt``, ``--shipped_model xnet``; manual "Model card").

- the file is there, small enough to ship, pinned by ``large_files.json`` and described in ``metadata.json``'s
  ``pretrained_xnet``;
- it records its configuration (X-Net 16..256, the five classes, 8-bit scaling, the training images' intensity
  statistics) and the bundle builds that network from it and loads it strictly;
- ``--shipped_model xnet`` makes inference and evaluation use it, even beside a trained model; the default stays
  the U-Net;
- on real data (skipped with a reason when the Drosophila dataset is absent) it segments a crop of each fold-0 test
  section (never seen in training or validation) to at least the mIoU stated in ``metadata.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import pytest
import torch

from bundle_runner import BUNDLE, CONFIGS

XNET = BUNDLE / "models" / "pretrained" / "xnet.pt"
METADATA = json.loads((CONFIGS / "metadata.json").read_text())
CARD = METADATA.get("pretrained_xnet", {})


def test_shipped_file_is_pinned_and_small():
    assert XNET.is_file(), "bundle/models/pretrained/xnet.pt is shipped with the bundle"
    assert XNET.stat().st_size <= 25 * 2**20 and CARD["size_bytes"] == XNET.stat().st_size
    sha = hashlib.sha256(XNET.read_bytes()).hexdigest()
    assert CARD["sha256"] == sha, "metadata.json pretrained_xnet.sha256 must match the shipped file"
    pinned = json.loads((BUNDLE / "large_files.json").read_text())["large_files"]
    assert next(f for f in pinned if f["path"] == "models/pretrained/xnet.pt")["hash_val"] == sha


def test_recorded_configuration_builds_and_loads_strictly():
    from scripts.data import CLASS_NAMES
    from scripts.networks import XNet, network_from_checkpoint, read_checkpoint

    state, info = read_checkpoint(XNET)
    assert info["network"]["_target_"] == "scripts.networks.XNet"
    assert info["network"] == CARD["network"] and list(info["network"]["features"]) == [16, 32, 64, 128, 256]
    assert info["class_names"] == list(CLASS_NAMES) and info["intensity_max"] == 255
    assert info["patch_size"] == [256, 256]
    stats = info["intensity_statistics"]
    assert stats["images"] == 12 and stats["dtypes"] == ["uint8"]  # the 12 training sections of fold 0
    net = network_from_checkpoint(XNET)
    assert isinstance(net, XNet) and net.init_args["features"] == CARD["network"]["features"]
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert sum(p.numel() for p in net.parameters()) == CARD["parameters"]


@pytest.mark.parametrize("config", ["inference.json", "evaluate.json"])
def test_shipped_model_switch(tmp_path, config):
    """``--shipped_model xnet`` picks the X-Net, even beside a trained model; without it the U-Net (or the
    trained model) as before."""
    from monai.bundle import ConfigParser

    root = tmp_path / "bundle"
    (root / "models" / "pretrained").mkdir(parents=True)
    shutil.copy2(XNET, root / "models" / "pretrained" / "xnet.pt")
    shutil.copy2(BUNDLE / "models" / "pretrained" / "model.pt", root / "models" / "pretrained" / "model.pt")
    (root / "models" / "model.pt").write_bytes((BUNDLE / "models" / "pretrained" / "model.pt").read_bytes())

    def parsed(**overrides):
        parser = ConfigParser()
        files = [CONFIGS / "inference.json"] if config == "inference.json" else [CONFIGS / "train.json",
                                                                                 CONFIGS / config]
        parser.read_config([str(f) for f in files])
        parser.update({"bundle_root": str(root), **overrides})
        return parser

    parser = parsed(shipped_model="xnet")
    assert parser.get_parsed_content("ckpt_path") == str(root / "models" / "pretrained" / "xnet.pt")
    assert type(parser.get_parsed_content("network_def")).__name__ == "XNet"
    assert parsed().get_parsed_content("ckpt_path") == str(root / "models" / "model.pt")  # the trained one wins
    assert parsed(shipped_model="unet").get_parsed_content("ckpt_path") == str(
        root / "models" / "pretrained" / "model.pt")


@pytest.mark.realdata
def test_segments_crops_of_the_unseen_drosophila_test_sections(drosophila_dir):
    """The centre 512x512 crop of each fold-0 test section (never seen in training or validation), read as the
    bundle reads them (MONAI's LoadImage), through the default inferer: IoU accumulated over the crops."""
    from drosophila_scoring import section_iou

    crop = CARD["test"]["crop"]
    iou = section_iou(drosophila_dir, XNET, CARD["test"]["sections"], window=(slice(256, 768), slice(256, 768)))
    assert float(iou.mean()) >= crop["min_mean_iou"], iou.tolist()
    assert float(iou.mean()) == pytest.approx(crop["mean_iou"], abs=2e-3), "the number metadata.json states"


def test_the_tools_know_the_same_shipped_models(monkeypatch):
    """``scripts.networks.SHIPPED_MODELS`` is the one list of shipped files; the packaging tool and the MONAI Label
    app tool (which do not import the bundle's scripts) list the same ones."""
    import importlib.util

    from bundle_runner import REPO
    from scripts.networks import SHIPPED_MODELS

    def tool(name):
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # a dataclass looks its module up there (alone, it failed)
        spec.loader.exec_module(module)
        return module

    package, app = tool("package_bundle"), tool("monailabel_app")
    assert {f"pretrained/{m}" for m in ("model.pt", *package.SHIPPED_EXTRA)} == set(SHIPPED_MODELS.values())
    assert {k: rel for k, (rel, _) in app.SHIPPED.items()} == SHIPPED_MODELS
