"""The shipped model's recipe is one file, ``configs/recipes/shipped.json``, merged on top of ``train.json``:

- it is the config the model was trained with: the four override files and two command-line values of the run
  that made ``models/pretrained/model.pt`` give the same merged config, key for key;
- its network is the one the shipped file records (``model_info``), with the same weight names and shapes;
- ``metadata.json``, the manual's model card and the peer benchmark name it.
"""

from __future__ import annotations

import importlib.util
import json

import torch
from monai.bundle import ConfigParser

from bundle_runner import BUNDLE, CONFIGS, REPO

SHIPPED = CONFIGS / "recipes" / "shipped.json"
PRETRAINED = BUNDLE / "models" / "pretrained" / "model.pt"
#: the v0.7.0 training run (commit 9c900bd): train.json + these files, then --features and --epochs
RUN_FILES = ("paper/unet_sce_iou", "recipe/section_patches", "recipe/poly_lr", "recipe/no_class_weights")
RUN_OVERRIDES = {"features": [16, 32, 64, 128, 256], "epochs": 90}


def merged(*files) -> dict:
    config = ConfigParser.load_config_files([str(CONFIGS / "train.json"), *map(str, files)])
    config.pop("_desc_", None)  # each file's own description
    return config


def test_shipped_recipe_is_the_run_that_made_the_shipped_model():
    run = merged(*(CONFIGS / "experiments" / f"{f}.json" for f in RUN_FILES))
    run.update(RUN_OVERRIDES)  # what `--features ... --epochs 90` does to the parser
    recipe = merged(SHIPPED)
    assert recipe == run, sorted(k for k in set(recipe) | set(run) if recipe.get(k) != run.get(k))
    # and it is not train.json's default (a recipe file that changed nothing would pass the line above too)
    for key, value in (("network_def", "@networks#unet"), ("class_weight_mode", "none"), ("epochs", 90),
                       ("train_key", "training_sections")):
        assert recipe[key] == value and merged()[key] != value, key


def test_shipped_recipe_builds_the_network_the_shipped_model_records(tmp_path):
    from scripts.networks import network_config, read_checkpoint

    state, info = read_checkpoint(PRETRAINED)
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / "train.json"), str(SHIPPED)]))
    parser["bundle_root"] = str(tmp_path)
    network = parser.get_parsed_content("network_def")
    assert network_config(network) == info["network"]
    ours = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in state.items()}
    network.load_state_dict(state)  # strict
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert isinstance(scheduler, torch.optim.lr_scheduler.PolynomialLR) and scheduler.total_iters == 90


def test_metadata_model_card_and_peer_benchmark_name_the_recipe():
    pretrained = json.loads((CONFIGS / "metadata.json").read_text())["pretrained_model"]
    assert "'bundle/configs/train.json','bundle/configs/recipes/shipped.json'" in pretrained["training"]["command"]
    assert "recipes/shipped.json" in pretrained["training"]["recipe"]
    card = (BUNDLE / "docs" / "README.md").read_text(encoding="utf-8").split('<a id="model-card"></a>')[1]
    assert "'bundle/configs/train.json','bundle/configs/recipes/shipped.json'" in card
    spec = importlib.util.spec_from_file_location("bench_peer_benchmark", REPO / "benchmarks" / "peer_benchmark.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    assert driver.ENTRIES["ours_shipped"][1] == ("shipped",) and driver.config_file("shipped") == SHIPPED
