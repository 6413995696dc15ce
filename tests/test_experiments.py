"""Every override file -- ``configs/experiments/<group>/`` (``paper/``: the X-Net paper's Table 2 rows and schedule,
``losses/``: the loss studies, ``recipe/``: the training-recipe axes, ``peers/``: MONAI's standard recipe) and
``configs/recipes/`` (the shipped model's recipe, fine-tuning) -- trains a couple of iterations and evaluates, through
``monai.bundle.run`` -- the function behind ``python -m monai.bundle run`` -- called in-process so that each config
costs seconds, not an interpreter start-up.

Each run checks what could go wrong in its config: the network the file names is the one built, the loss it wires
takes that network's output (a tuple for X-Net/Double U-Net in training), the weights stay finite, the checkpoint is
written, and evaluation reads it back and writes its metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, create_workflow, run

from bundle_runner import CONFIGS

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*/*.json"))
CONFIG_FILES = EXPERIMENTS + sorted((CONFIGS / "recipes").glob("*.json"))
NETWORK_OF = {
    "unet": "UNet", "xnet": "XNet", "double_unet": "DoubleUNet", "ensemble_unet": "EnsembleUNet", "basic_unet": "BasicUNet"
}

TINY = {
    "features": [4, 8, 16],
    "patch_size": [64, 64],
    "epochs": 1,
    "batch_size": 2,
    "val_batch_size": 2,
    "cache_workers": 0,
    "show_progress": False,
}


def test_experiments_are_grouped_by_axis():
    """The paper's rows in ``paper/``, the loss studies in ``losses/``, every file in a group, and one file per name
    (``benchmarks/peer_benchmark.py --arm`` names them without their group)."""
    groups: dict[str, set[str]] = {}
    for path in EXPERIMENTS:
        groups.setdefault(path.parent.name, set()).add(path.stem)
    paper = {"unet_sce_dice", "unet_sce_iou", "double_unet_sce_iou", "ensemble_unet_sce_iou", "xnet_sce_plus_dice",
             "xnet_sce_plus_iou", "xnet_sce_and_dice", "xnet_sce_and_iou"}
    studies = {"unet_dice", "unet_iou", "unet_focal", "unet_tversky", "unet_kappa", "unet_dice_ce", "unet_border_ce"}
    assert paper | {"paper_protocol"} <= groups["paper"] and studies <= groups["losses"]
    assert {"section_patches", "poly_lr", "no_class_weights"} <= groups["recipe"]
    assert not list((CONFIGS / "experiments").glob("*.json")), "every experiment file belongs to a group folder"
    names = [p.stem for p in CONFIG_FILES]
    assert len(names) == len(set(names)), "an override file name is used twice"


@pytest.mark.parametrize("experiment", CONFIG_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIG_FILES])
def test_experiment_trains_and_evaluates(experiment: Path, synthetic_dataset, tmp_path):
    files = [str(CONFIGS / "train.json"), str(experiment)]
    overrides = {**TINY, "bundle_root": str(tmp_path), "datalist_file": str(synthetic_dataset)}

    parser = ConfigParser(ConfigParser.load_config_files(files))
    parser.update(overrides)
    network = parser.get_parsed_content("initial_network")  # network_def, or the network --finetune_from records
    if parser.get_parsed_content("finetune_from") is None:
        expected = NETWORK_OF[parser["network_def"].replace("::", "#").split("#")[-1]]
    else:  # recipes/finetune.json: the network its model.pt records (the shipped U-Net), with this config's classes
        from scripts.networks import read_checkpoint

        expected = read_checkpoint(parser.get_parsed_content("finetune_from"))[1]["network"]["_target_"].split(".")[-1]
    assert type(network).__name__ == expected

    workflow = create_workflow(config_file=files, run_id="training", **overrides)  # what `run` does, kept in hand
    workflow.run()
    workflow.finalize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    # 4 training images, batch 2, 1 epoch; section patches: 4 images x 4 repeats, 2 // 4 -> 1 image (4 patches) a step
    assert trainer.state.iteration == (16 if parser["train_key"] == "training_sections" else 2)
    loss = trainer.state.output[0]["loss"]  # the last iteration's loss (the output is decollated per sample)
    assert math.isfinite(float(loss)) and float(loss) > 0, f"{experiment.stem}: training loss {loss}"
    ckpt = tmp_path / "models" / "model.pt"
    assert ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu")["model"]
    assert set(state) == set(network.state_dict()), "checkpoint must hold the experiment's network"
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    run("evaluating", config_file=files + [str(CONFIGS / "evaluate.json")], **overrides)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["num_images"] == 2
    assert 0.0 <= report["mean_iou"] <= 1.0
