"""scripts.networks.checkpoint: the network a model.pt describes, loading a whole bundle checkpoint, one-line
refusals, no silent partial load, data-convention checks."""

from __future__ import annotations

import logging

import pytest
import torch

from scripts.networks import (
    CheckpointMismatchError,
    ModelInfo,
    UNet,
    XNet,
    check_model_info,
    network_from_checkpoint,
    split_checkpoint,
)

NAMES = ["a", "b", "c"]


def save(path, net, with_info=True, **info):
    weights = net.state_dict()
    entry = ModelInfo(net, info.get("class_names", NAMES), info.get("intensity_max", 255), [64, 64]).state_dict()
    torch.save({"model": weights, "model_info": entry} if with_info else weights, path)
    return weights


def test_network_from_checkpoint_builds_the_saved_network(tmp_path, caplog):
    trained = XNet(2, 1, 3, [4, 8, 16], padding="valid", batch_norm=True)
    weights = save(tmp_path / "model.pt", trained)
    default = XNet(2, 1, 3, [8, 16, 32], padding="same")
    with caplog.at_level(logging.INFO, logger="scripts.networks.checkpoint"):  # INFO: the config's defaults, not the user's overrides
        net = network_from_checkpoint(tmp_path / "model.pt", default)
    assert type(net) is XNet and net.init_args == trained.init_args
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items()), "it holds the saved weights"
    assert "features: [4, 8, 16] (saved) vs [8, 16, 32] (now)" in caplog.text and "padding: 'valid'" in caplog.text


def test_no_checkpoint_gives_the_default(tmp_path):
    default = UNet(2, 1, 3, [4, 8])
    assert network_from_checkpoint(tmp_path / "missing.pt", default) is default
    assert network_from_checkpoint(None, default) is default


def test_bare_state_dict_loads_strictly_into_the_default(tmp_path):
    weights = save(tmp_path / "model.pt", UNet(2, 1, 3, [4, 8]), with_info=False)
    net = network_from_checkpoint(tmp_path / "model.pt", UNet(2, 1, 3, [4, 8]))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    with pytest.raises(CheckpointMismatchError, match=r"do not fit the UNet .*tensors differ in shape.*--features"):
        network_from_checkpoint(tmp_path / "model.pt", UNet(2, 1, 3, [8, 16]))


def test_load_state_dict_takes_a_whole_checkpoint_and_checks_model_info(tmp_path):
    source = XNet(2, 1, 3, [4, 8, 16])
    save(tmp_path / "model.pt", source)
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    weights, info = split_checkpoint({**ckpt, "optimizer": {}})
    assert info["network"]["features"] == [4, 8, 16] and weights.keys() == source.state_dict().keys()
    target = XNet(2, 1, 3, [4, 8, 16])
    target.load_state_dict(ckpt)  # the whole {"model", "model_info"} checkpoint
    assert torch.equal(target.head3.weight, source.head3.weight)
    with pytest.raises(CheckpointMismatchError, match=r"trained with another network \(padding: 'same' \(saved\) vs "
                                                      r"'valid' \(now\)\)") as err:
        XNet(2, 1, 3, [4, 8, 16], padding="valid").load_state_dict(ckpt)  # same shapes, other padding
    assert "\n" not in str(err.value)


def test_partial_load_is_never_silent(caplog):
    net = XNet(2, 1, 3, [4, 8])
    partial = {k: v for k, v in XNet(2, 1, 3, [4, 8]).state_dict().items() if not k.startswith("head")}
    with pytest.raises(CheckpointMismatchError, match="missing"):
        net.load_state_dict(partial)
    with caplog.at_level(logging.WARNING):
        net.load_state_dict(partial, strict=False)
    assert "Partial load into XNet: 6 of" in caplog.text


def test_check_model_info_names_the_overrides(tmp_path):
    save(tmp_path / "model.pt", UNet(2, 1, 3, [4, 8]), intensity_max=65535)
    check_model_info(tmp_path / "model.pt", class_names=NAMES, intensity_max=65535)
    check_model_info(tmp_path / "missing.pt", class_names=["x"])
    with pytest.raises(ValueError, match=r"override --class_names \"\['a','b','c'\]\" --intensity_max 65535 "
                                         r"--num_classes 3"):
        check_model_info(tmp_path / "model.pt", class_names=("x", "y"), intensity_max=255)


def test_trained_or_pretrained(tmp_path, caplog):
    import logging

    from scripts.networks import trained_or_pretrained

    trained, pretrained = tmp_path / "model.pt", tmp_path / "pretrained" / "model.pt"
    # nothing there: the trained path (the configs then say there is no model)
    assert trained_or_pretrained(trained, pretrained) == str(trained)
    pretrained.parent.mkdir()
    pretrained.write_bytes(b"shipped")
    with caplog.at_level(logging.INFO, logger="scripts.networks.checkpoint"):
        assert trained_or_pretrained(trained, pretrained) == str(pretrained)
    assert "shipped pretrained model" in caplog.text
    trained.write_bytes(b"yours")  # a model you trained always wins
    assert trained_or_pretrained(trained, pretrained) == str(trained)
    assert trained_or_pretrained(tmp_path / "none.pt", None) == str(tmp_path / "none.pt")


def test_shipped_model_by_name(tmp_path, caplog):
    """``--shipped_model NAME`` (inference.json, evaluate.json): that shipped file even beside a trained model; an
    unknown name and a missing file are refused in one line."""
    import logging

    from scripts.errors import ConfigError
    from scripts.networks import ModelFileError, shipped_model_path, trained_or_pretrained

    models = tmp_path / "models"
    assert shipped_model_path(models) == str(models / "pretrained" / "model.pt")  # the default: the U-Net
    assert shipped_model_path(models, "unet") == str(models / "pretrained" / "model.pt")
    xnet = shipped_model_path(models, "xnet")
    assert xnet == str(models / "pretrained" / "xnet.pt")
    with pytest.raises(ConfigError, match=r"shipped_model 'vnet': not a shipped model; use one of unet, xnet"):
        shipped_model_path(models, "vnet")
    trained = models / "model.pt"
    with pytest.raises(ModelFileError, match=r"xnet.pt: the shipped xnet model is missing"):
        trained_or_pretrained(trained, xnet, "xnet")
    (models / "pretrained").mkdir(parents=True)
    (models / "pretrained" / "xnet.pt").write_bytes(b"shipped")
    trained.write_bytes(b"yours")
    assert trained_or_pretrained(trained, xnet) == str(trained)  # without the switch a trained model wins
    with caplog.at_level(logging.INFO, logger="scripts.networks.checkpoint"):
        assert trained_or_pretrained(trained, xnet, "xnet") == xnet
    assert "Using the shipped xnet model" in caplog.text
