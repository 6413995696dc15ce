"""A command-line override that names no setting is refused with the closest known one, before anything runs."""

from __future__ import annotations

import pytest

from bundle_runner import CONFIGS

MAIN = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"
INFERENCE = str(CONFIGS / "inference.json")
TRAIN = str(CONFIGS / "train.json")


def test_overrides_are_read_in_both_spellings():
    from scripts.overrides import cli_overrides

    argv = ["training", "--config_file", "a.json", "--epochs=3", "--train::trainer::max_epochs", "2", "--flag"]
    assert cli_overrides(argv) == {"config_file": "a.json", "epochs": "3", "train#trainer#max_epochs": "2",
                                   "flag": ""}


def test_a_mistyped_key_is_refused_with_the_closest_one():
    from scripts.errors import ConfigError
    from scripts.overrides import check_overrides

    with pytest.raises(ConfigError, match=r"--inputt names no setting of .*inference\.json\. Did you mean --input\?"):
        check_overrides([MAIN, "run", "inference", "--config_file", INFERENCE, "--inputt", "foo"])


@pytest.mark.parametrize(
    "key, ok",
    [
        ("epochs", True),
        ("validate#dataloader#batch_size", True),  # a path into the config
        ("inferers#overlap_tile#overlap", True),  # a new argument of a component
        ("_meta_#version", True),
        ("validate#datalaoder#batch_size", False),  # a typo inside a path
        ("train#handlers#99", False),  # no such list item
        ("epoch", False),
    ],
)
def test_paths_must_exist_but_components_take_new_arguments(key, ok):
    from monai.bundle import ConfigParser

    from scripts.overrides import unknown_overrides

    config = ConfigParser.load_config_files([TRAIN])
    unknown = unknown_overrides({key: "1"}, config)
    assert (unknown == []) == ok, unknown
    if key == "epoch":
        assert unknown == [("epoch", "epochs")]


def test_merged_config_files_count_and_other_processes_are_left_alone():
    from scripts.overrides import check_overrides

    files = f"['{TRAIN}','{CONFIGS / 'evaluate.json'}']"
    check_overrides([MAIN, "run", "evaluating", "--config_file", files, "--test_key", "testing"])  # evaluate.json's
    check_overrides(["pytest", "run", "--config_file", INFERENCE, "--inputt", "foo"])  # not the bundle CLI
    check_overrides([MAIN, "verify_metadata", "--meta_file", "x.json", "--inputt", "foo"])  # not `run`


def test_overridden_names_only_settings_given_on_the_bundle_command_line():
    from scripts.overrides import overridden

    argv = [MAIN, "run", "inference", "--config_file", INFERENCE, "--features", "[8]", "--networks#unet#dropout", "0"]
    assert overridden(["network_def", "features", "networks"], argv) == ["features", "networks"]
    assert overridden(["features"], ["pytest", "run", "--features", "[8]"]) == []


def test_the_shipped_model_logs_its_configuration_at_info_unless_the_user_asked_for_another(tmp_path, caplog,
                                                                                              monkeypatch):
    import logging

    from bundle_runner import REPO
    from scripts.networks import XNet, network_from_checkpoint

    shipped = str(REPO / "bundle" / "models" / "pretrained" / "model.pt")
    config_default = XNet(spatial_dims=2, in_channels=1, out_channels=5, features=(4, 8, 16, 32, 64))
    with caplog.at_level(logging.INFO, logger="scripts.networks.checkpoint"):
        network_from_checkpoint(shipped, config_default)
    [record] = [r for r in caplog.records if "not used" in r.getMessage()]
    assert record.levelno == logging.INFO

    caplog.clear()
    monkeypatch.setattr("sys.argv", [MAIN, "run", "inference", "--config_file", INFERENCE, "--features", "[4,8]"])
    with caplog.at_level(logging.INFO, logger="scripts.networks.checkpoint"):
        network_from_checkpoint(shipped, config_default)
    [record] = [r for r in caplog.records if "not used" in r.getMessage()]
    assert record.levelno == logging.WARNING and "your --features cannot change a trained network" in record.getMessage()
