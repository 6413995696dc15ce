"""The weights shipped with the bundle (``bundle/models/pretrained/model.pt``, manual section "Model card").

- the file is there, small enough to ship, pinned by ``large_files.json`` (sha256) and described in
  ``metadata.json``'s ``pretrained_model``;
- it records the network that built it, and the bundle builds that network from it and loads it strictly;
- ``inference.json`` uses it when no model was trained, and a trained ``models/model.pt`` wins;
- on real data (skipped with a reason when the Drosophila dataset is absent) it segments the 4 fold-0 test sections
  (never seen in training or validation) to at least the mIoU stated in ``metadata.json``, and to the model card's
  number.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from bundle_runner import BUNDLE, CONFIGS

PRETRAINED = BUNDLE / "models" / "pretrained" / "model.pt"
METADATA = json.loads((CONFIGS / "metadata.json").read_text())
CARD = METADATA.get("pretrained_model", {})


def test_shipped_file_is_pinned_and_small():
    assert PRETRAINED.is_file(), "bundle/models/pretrained/model.pt is shipped with the bundle"
    assert PRETRAINED.stat().st_size <= 25 * 2**20
    sha = hashlib.sha256(PRETRAINED.read_bytes()).hexdigest()
    assert CARD["sha256"] == sha, "metadata.json pretrained_model.sha256 must match the shipped file"
    pinned = json.loads((BUNDLE / "large_files.json").read_text())["large_files"]
    assert {"path": "models/pretrained/model.pt", "hash_val": sha} == {
        k: v for k, v in next(f for f in pinned if f["path"] == "models/pretrained/model.pt").items()
        if k in ("path", "hash_val")
    }


def test_recorded_network_builds_and_loads_strictly():
    from scripts.data import CLASS_NAMES
    from scripts.networks import UNet, network_from_checkpoint, read_checkpoint

    state, info = read_checkpoint(PRETRAINED)
    assert info is not None, "the shipped model records its network (model_info)"
    assert info["network"] == CARD["network"]
    assert info["class_names"] == list(CLASS_NAMES) and info["intensity_max"] == 255
    net = network_from_checkpoint(PRETRAINED)
    assert isinstance(net, UNet) and list(net.init_args["features"]) == CARD["network"]["features"]
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert sum(p.numel() for p in net.parameters()) == CARD["parameters"]


def test_inference_uses_the_shipped_model_until_one_is_trained(tmp_path):
    from monai.bundle import ConfigParser

    root = tmp_path / "bundle"
    (root / "models" / "pretrained").mkdir(parents=True)
    shutil.copy2(PRETRAINED, root / "models" / "pretrained" / "model.pt")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(root)
    assert parser.get_parsed_content("ckpt_path") == str(root / "models" / "pretrained" / "model.pt")
    assert type(parser.get_parsed_content("network")).__name__ == "UNet"  # what the shipped model records
    (root / "models" / "model.pt").write_bytes(PRETRAINED.read_bytes())  # "trained"
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(root)
    assert parser.get_parsed_content("ckpt_path") == str(root / "models" / "model.pt")


@pytest.mark.realdata
def test_segments_the_unseen_drosophila_test_sections(drosophila_dir):
    """The 4 fold-0 test sections (never seen in training or validation), read as the bundle reads them (MONAI's
    LoadImage), whole 1024x1024 sections through the default inferer: IoU accumulated over the sections."""
    from drosophila_scoring import section_iou

    iou = section_iou(drosophila_dir, PRETRAINED, CARD["test"]["sections"])
    assert float(iou.mean()) >= CARD["test"]["min_mean_iou"], iou.tolist()
    assert float(iou.mean()) == pytest.approx(CARD["test"]["mean_iou"], abs=2e-3), "the model card's number"


def test_the_cards_five_folds_are_the_committed_results():
    """metadata.json's ``cross_validation`` (the model card's five-fold line) states what
    ``benchmarks/results/cross_validation/summary.json`` holds: five folds, fold 0 scored on the shipped file itself."""
    from bundle_runner import REPO

    summary = json.loads((REPO / "benchmarks" / "results" / "cross_validation" / "summary.json").read_text())
    cv = CARD["cross_validation"]
    assert summary["folds"] == [0, 1, 2, 3, 4] and cv["folds"] == 5
    assert cv["mean_iou_per_fold"] == [round(r["mean_iou"], 4) for r in summary["per_fold"]]
    assert cv["mean_iou"] == round(summary["summary"]["mean_iou"]["mean"], 4)
    assert cv["mean_iou_sd"] == round(summary["summary"]["mean_iou"]["sd"], 4)
    fold0 = summary["per_fold"][0]
    assert fold0["model_sha256"] == CARD["sha256"] and round(fold0["mean_iou"], 4) == CARD["test"]["mean_iou"]
