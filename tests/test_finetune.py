"""Fine-tuning (``--finetune_from``, ``configs/recipes/finetune.json``, :func:`scripts.networks.finetune_network`).

- the tensors that fit are the checkpoint's exactly, the others (the head for other classes) are the network's fresh
  initialisation, and the log line counts them;
- a grey model starts an RGB network with its first convolution spread over the three channels (same response to a
  grey picture stored as RGB);
- a checkpoint of another network is refused in one line, never loaded in part silently;
- through the configs: a tiny fine-tuning run builds the checkpoint's network for the new classes, and a run killed
  after its first epoch and resumed (with the fine-tuning source gone) ends bit-identical to the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from bundle_runner import BUNDLE, CONFIGS, assert_identical
from scripts.errors import UserError
from scripts.networks import (CheckpointMismatchError, ModelFileError, ModelInfo, UNet, XNet, build_network,
                              finetune_network, network_config)

FEATURES = [4, 8, 16]
FIVE = ["intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"]
TWO = ["rest", "membrane"]
RECIPE = CONFIGS / "recipes" / "finetune.json"


def _save(path: Path, network: torch.nn.Module, class_names=FIVE, model_info: bool = True) -> dict:
    state = {k: v.clone() for k, v in network.state_dict().items()}
    # distinct values everywhere (BN statistics included), so that "equal to the checkpoint" means loaded
    for k, v in state.items():
        if v.is_floating_point():
            v.copy_(torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v))
    saved = {"model": state}
    if model_info:
        saved["model_info"] = ModelInfo(network, class_names=class_names, intensity_max=255, patch_size=[64, 64]).state_dict()
    torch.save(saved, path)
    return state


@pytest.fixture
def unet_checkpoint(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "model.pt"
    return path, _save(path, UNet(2, 1, 5, features=FEATURES, batch_norm=True))


def _default(in_channels=1, out_channels=2):
    """What train.json's network_def builds (another network and width: the checkpoint's wins)."""
    return XNet(2, in_channels, out_channels, features=[8, 16])


def test_fitting_tensors_are_the_checkpoints_and_the_head_starts_afresh(unet_checkpoint, caplog):
    path, saved = unet_checkpoint
    caplog.set_level(logging.INFO, logger="scripts.networks.finetune")
    default = _default()
    torch.manual_seed(7)
    network = finetune_network(path, default, in_channels=1, out_channels=2, class_names=TWO)
    assert network_config(network) == {"_target_": "scripts.networks.UNet", "spatial_dims": 2, "in_channels": 1,
                                       "out_channels": 2, "features": FEATURES, "padding": "same", "batch_norm": True,
                                       "dropout": 0.0}
    state = network.state_dict()
    head = {"head.weight", "head.bias"}
    assert all(torch.equal(state[k], saved[k]) for k in state if k not in head)
    assert state["head.weight"].shape == (2, 4, 1, 1) and state["head.bias"].shape == (2,)
    assert not torch.equal(state["head.weight"], saved["head.weight"][:2])
    torch.manual_seed(7)
    fresh = UNet(2, 1, 2, features=FEATURES, batch_norm=True).state_dict()  # the same draw: the network's own init
    assert all(torch.equal(state[k], fresh[k]) for k in head)
    assert (f"Fine-tuning from {path}: loaded {len(state) - 2} of {len(state)} tensors; re-initialised head.weight, "
            f"head.bias for 2 classes (rest, membrane; the checkpoint's: {', '.join(FIVE)})") in caplog.text


def test_the_same_classes_load_every_tensor(unet_checkpoint, caplog):
    path, saved = unet_checkpoint
    caplog.set_level(logging.INFO, logger="scripts.networks.finetune")
    network = finetune_network(path, _default(out_channels=5), in_channels=1, out_channels=5, class_names=FIVE)
    assert all(torch.equal(v, saved[k]) for k, v in network.state_dict().items())
    assert f"loaded {len(saved)} of {len(saved)} tensors." in caplog.text


def test_an_xnet_for_other_classes_restarts_its_three_heads(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scripts.networks.finetune")
    saved = _save(tmp_path / "x.pt", XNet(2, 1, 5, features=FEATURES))
    network = finetune_network(tmp_path / "x.pt", UNet(2, 1, 3, features=FEATURES), out_channels=3,
                               class_names=["a", "b", "c"])
    heads = {k for k in saved if k.startswith("head")}
    assert heads == {f"head{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    state = network.state_dict()
    assert isinstance(network, XNet) and state["head3.weight"].shape == (3, 6, 1, 1)
    assert all(torch.equal(state[k], saved[k]) for k in state if k not in heads)
    assert f"loaded {len(saved) - 6} of {len(saved)} tensors; re-initialised " in caplog.text


def test_a_grey_model_starts_an_rgb_network_with_the_same_response(unet_checkpoint, caplog):
    path, saved = unet_checkpoint
    caplog.set_level(logging.INFO, logger="scripts.networks.finetune")
    rgb = finetune_network(path, _default(in_channels=3, out_channels=5), in_channels=3, out_channels=5,
                           class_names=FIVE).eval()
    first = "encoder.blocks.0.0.weight"
    assert torch.equal(rgb.state_dict()[first], saved[first].repeat(1, 3, 1, 1) / 3)
    grey = build_network({**network_config(rgb), "in_channels": 1})
    grey.load_state_dict(saved)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = grey.eval()(x)
        torch.testing.assert_close(rgb(x.repeat(1, 3, 1, 1)), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert (f"loaded {len(saved) - 1} of {len(saved)} tensors; adapted {first} from 1 to 3 input channels") in caplog.text


@pytest.mark.parametrize("case", ["another_network", "another_width", "damaged"])
def test_a_checkpoint_of_another_network_is_refused_in_one_line(tmp_path, case):
    path = tmp_path / "other.pt"
    if case == "another_network":  # a bare state dict (no model_info): the config's network gets it
        _save(path, XNet(2, 1, 5, features=FEATURES), model_info=False)
    elif case == "another_width":
        _save(path, UNet(2, 1, 5, features=[8, 16, 32], batch_norm=True), model_info=False)
    else:  # model_info says [4, 8, 16], the weights are of [8, 16, 32]
        _save(path, UNet(2, 1, 5, features=[8, 16, 32], batch_norm=True))
        saved = torch.load(path, weights_only=True)
        saved["model_info"]["network"]["features"] = FEATURES
        torch.save(saved, path)
    default = UNet(2, 1, 2, features=FEATURES, batch_norm=True)
    with pytest.raises(CheckpointMismatchError) as info:
        finetune_network(path, default, class_names=TWO)
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith(f"{path}: cannot fine-tune from it: ") and "do not fit (e.g. " in message
    assert ("is not in the file" if case == "another_network" else " saved vs ") in message


def test_no_source_keeps_the_config_network_and_a_missing_file_is_named(tmp_path):
    default = _default()
    assert finetune_network(None, default) is default
    with pytest.raises(ModelFileError, match=r"^--finetune_from .*nope\.pt: no such model file"):
        finetune_network(tmp_path / "nope.pt", default)
    assert finetune_network(tmp_path / "nope.pt", default, missing_ok=True) is default  # (an app before its first model)


def test_a_resumed_run_builds_its_own_network_and_does_not_read_the_source(unet_checkpoint, tmp_path):
    path, _ = unet_checkpoint
    own = tmp_path / "checkpoint_epoch=1.pt"
    network = UNet(2, 1, 2, features=FEATURES, batch_norm=True)
    torch.save({"model": network.state_dict(), "model_info": ModelInfo(network, TWO).state_dict(), "optimizer": {}}, own)
    path.unlink()  # the fine-tuning source is gone: a resume must not need it
    resumed = finetune_network(path, _default(), class_names=TWO, resume_from=own)
    assert network_config(resumed) == network_config(network)


def _recipe(tmp_path, **overrides) -> ConfigParser:
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / "train.json"), str(RECIPE)]))
    parser["bundle_root"] = str(tmp_path)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def test_the_recipe_fine_tunes_the_shipped_model_with_its_loss_and_section_patches(tmp_path):
    recipe = json.loads(RECIPE.read_text())
    patches = json.loads((CONFIGS / "experiments" / "recipe" / "section_patches.json").read_text())
    patches.pop("_desc_")
    assert {k: recipe[k] for k in patches} == patches, "the recipe samples as section_patches.json does"
    parser = _recipe(tmp_path, class_names=TWO, class_weights=None)  # (none: no labels read)
    assert parser.get_parsed_content("finetune_from") == str(BUNDLE / "models" / "pretrained" / "model.pt")
    network = parser.get_parsed_content("initial_network")
    assert type(network).__name__ == "UNet" and network.init_args["out_channels"] == 2
    loss = parser.get_parsed_content("loss")
    assert len(loss.losses) == network.num_outputs == 1


# -- through the configs: a tiny fine-tuning run, killed after epoch 1 and resumed --------------------------------

RUN = {"patch_size": [32, 32], "epochs": 2, "batch_size": 2, "patches_per_section": 2, "section_repeats": 1,
       "cache_workers": 0, "show_progress": False, "class_names": TWO}


def _train(root: str, datalist: str, source: str, kill_in_epoch: int | None, **extra) -> None:
    """Child process: one fine-tuning run; SIGKILLed when epoch ``kill_in_epoch`` starts."""
    torch.set_num_threads(1)
    if kill_in_epoch is not None:
        import ignite.engine

        fire = ignite.engine.Engine._fire_event

        def fire_event(self, event, *args, **kwargs):
            if type(self).__name__ == "SupervisedTrainer" and event == ignite.engine.Events.EPOCH_STARTED \
                    and self.state.epoch == kill_in_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return fire(self, event, *args, **kwargs)

        ignite.engine.Engine._fire_event = fire_event
    from monai.bundle import run

    try:
        run("training", final_id="no_finalize", config_file=[str(CONFIGS / "train.json"), str(RECIPE)], **RUN,
            bundle_root=root, datalist_file=datalist, finetune_from=source, **extra)
    except BaseException as e:  # noqa: BLE001 - reported through the exit code
        print(f"training failed: {e!r}", file=sys.stderr)
        os._exit(1)
    os._exit(0)


def _fork(*args, **kwargs) -> int:
    proc = multiprocessing.get_context("fork").Process(target=_train, args=args, kwargs=kwargs)
    proc.start()
    proc.join(timeout=300)
    if proc.is_alive():
        proc.kill()
        raise AssertionError("training did not finish in 300 s")
    return proc.exitcode


@pytest.fixture
def two_class_data(synthetic_dataset, tmp_path):
    """The tiny synthetic dataset with membrane (1) vs the rest (0) as its two classes."""
    root = Path(synthetic_dataset).parent
    datalist = json.loads(Path(synthetic_dataset).read_text())
    out = tmp_path / "two_class"
    (out / "labels").mkdir(parents=True)
    for key, items in datalist.items():
        if not isinstance(items, list):
            continue
        for item in items:
            label = out / "labels" / Path(item["label"]).name
            if not label.exists():
                Image.fromarray((np.asarray(Image.open(root / item["label"])) == 1).astype(np.uint8)).save(label)
            item["image"], item["label"] = str(root / item["image"]), str(label)
    (out / "datalist.json").write_text(json.dumps(datalist))
    return out / "datalist.json"


@pytest.mark.skipif(sys.platform != "linux", reason="forks the training runs")
def test_a_fine_tuning_run_through_the_configs_resumes_exactly(two_class_data, unet_checkpoint, tmp_path, capfd):
    source, _ = unet_checkpoint
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _fork(str(whole), str(two_class_data), str(source), None) == 0
    out = "".join(capfd.readouterr())
    assert f"Fine-tuning from {source}: loaded 64 of 66 tensors; re-initialised head.weight, head.bias for 2 classes" in out
    info = torch.load(whole / "models" / "model.pt", weights_only=True)["model_info"]
    assert info["class_names"] == TWO and info["network"]["features"] == FEATURES  # the checkpoint's network
    assert info["network"]["_target_"] == "scripts.networks.UNet" and info["network"]["out_channels"] == 2

    assert _fork(str(killed), str(two_class_data), str(source), 2) == -signal.SIGKILL
    assert [p.name for p in (killed / "models").glob("checkpoint_epoch=*.pt")] == ["checkpoint_epoch=1.pt"]
    source.rename(tmp_path / "moved.pt")  # the resumed run continues from its own checkpoint, not from the source
    assert _fork(str(killed), str(two_class_data), str(source), None, resume=True) == 0
    assert "is not read again" in "".join(capfd.readouterr())
    for name in ("checkpoint_epoch=2.pt", "model.pt"):
        a, b = (torch.load(r / "models" / name, weights_only=True) for r in (whole, killed))
        assert_identical(a, b, name)

