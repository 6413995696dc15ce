"""The configs as MONAI and MONAI Label read them: the definitions train.json and inference.json share are pinned
equal, handler lists hold dicts, every import is used; importing ``scripts`` leaves the interpreter's exception
hook alone. (MONAI's property checks run in ``tests/test_zoo_style.py``, as the Model Zoo runs them.)

Why the shared keys are copies: MONAI resolves a ``%file.json#key`` macro against the working directory before any
config code runs and an ``@`` reference cannot leave its file, so no config text reaches the other file from the
repository root, from ``bundle/`` and from a MONAI Label app alike (MONAI Label reads ``configs/inference.json``
alone, from the server's working directory). The test below is what keeps the copies one definition.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from bundle_runner import BUNDLE, CONFIGS
from monai.bundle import ConfigParser

#: Top-level keys both train.json and inference.json define, with one meaning: the network choice and its
#: hyper-parameters, the data conventions, the default data, paths and devices. (``overwrite`` and ``inferer`` are
#: also in both, with other meanings: a training run folder vs. finished outputs; inference's inferers differ.)
SHARED = ("bundle_root", "ckpt_dir", "data_root", "dataset_dir", "synthetic", "datalist_file", "device", "amp",
          "deterministic", "allow_tf32", "in_channels", "num_classes", "class_names", "intensity_max", "patch_size", "features",
          "padding", "batch_norm", "dropout", "xnet_skip", "networks")

#: The config files as the workflows merge them.
WORKFLOWS = {
    "train": ["train.json"],
    "evaluate": ["train.json", "evaluate.json"],
    "inference": ["inference.json"],
    "inference_measure": ["inference.json", "measure.json"],
    "volume": ["inference.json", "volume.json"],
    "multi_gpu_train": ["train.json", "multi_gpu_train.json"],
    "multi_gpu_evaluate": ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
}

#: Handler lists of the merged configs (``validate#handlers`` etc. when the workflow has a validator).
HANDLER_LISTS = ("train#handlers", "train#rank0_handlers", "validate#handlers", "validate#rank0_handlers", "handlers")


def _load(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def _merged(files: list[str]) -> ConfigParser:
    return ConfigParser(ConfigParser.load_config_files([str(CONFIGS / f) for f in files]))


def _expressions(config) -> list[str]:
    if isinstance(config, dict):
        return [e for v in config.values() for e in _expressions(v)]
    if isinstance(config, list):
        return [e for v in config for e in _expressions(v)]
    return [config] if isinstance(config, str) and config.startswith("$") else []


def test_train_and_inference_define_their_shared_keys_alike():
    train, inference = _load("train.json"), _load("inference.json")
    different = [k for k in SHARED if train.get(k) != inference.get(k) or k not in train]
    assert not different, f"train.json and inference.json must define {different} identically (see the docstring)"
    # inference builds the network train.json trains: the same default, from networks#xnet
    assert train["network_def"] == inference["network_def"]["default"] == "@networks#xnet"


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_handler_lists_hold_component_dicts(workflow):
    """MONAI's property checks (``h["_target_"]``) and MONAI Label (``h.get("_target_")``) read every item of a
    handler list as a component; a reference (``"@checkpoint_saver"``) breaks both."""
    parser = _merged(WORKFLOWS[workflow])
    lists = [k for k in HANDLER_LISTS if k in parser]
    assert lists
    for key in lists:
        items = parser[key]
        bad = [h for h in items if not (isinstance(h, dict) and isinstance(h.get("_target_"), str))]
        assert not bad, f"{workflow}: {key} holds {bad}"


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_every_import_is_used(workflow):
    """Each file's ``imports`` (``+imports`` in an override) are used by the expressions of its workflow."""
    files = WORKFLOWS[workflow]
    own = _load(files[-1])
    used = " ".join(e for k, v in _merged(files).get().items() if k != "imports" for e in _expressions(v))
    unused = []
    for statement in own.get("imports", own.get("+imports", [])):
        module, alias = re.fullmatch(r"\$import ([\w.]+)(?: as (\w+))?", statement).groups()
        if not re.search(rf"(?<![\w.]){re.escape(alias or module)}\.", used):
            unused.append(statement)
    assert not unused, f"{files[-1]}: no expression uses {unused}"


def test_importing_scripts_leaves_the_exception_hook_alone():
    """Only the entry points install the hook that prints a UserError as one message: every config's first
    ``initialize`` step and the ``python -m scripts...`` command lines."""
    code = "import sys; hook = sys.excepthook; import scripts, scripts.workflows, scripts.data; print(sys.excepthook is hook)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(BUNDLE)}).stdout
    assert out.strip() == "True"
    for workflow, files in WORKFLOWS.items():
        assert _merged(files)["initialize"][0] == "$scripts.start_run()", workflow


@pytest.mark.parametrize(
    "workflow, key, target",
    [
        ("inference", "inference_report", "scripts.workflows.InferenceReport"),
        ("train", "resumable#best_model_saver", "scripts.handlers.CheckpointSaver"),
        ("train", "resumable#early_stop", "scripts.handlers.EarlyStopHandler"),
        ("train", "resumable#divergence_guard", "scripts.handlers.StopOnNonFiniteLoss"),
        ("train", "resumable#time_budget", "scripts.handlers.FitEpochsToBudget"),
    ],
)
def test_references_into_handler_lists_name_the_handler_they_mean(workflow, key, target):
    """A handler defined in a list and named elsewhere by its place (``@train#handlers#5``) is still that handler
    after the list changed (an inserted handler shifts the places)."""
    parser = _merged(WORKFLOWS[workflow])
    ref = parser[key]
    assert isinstance(ref, str) and ref.startswith("@"), f"{key} should reference a handler list item, got {ref!r}"
    assert parser[ref[1:].replace("::", "#")]["_target_"] == target, f"{key} -> {ref} is not {target}"


def test_metadata_reads_as_written():
    """MONAI reads ``metadata.json`` as it is written. (MONAI >= 1.4 takes ``optional_packages_version``, which Model
    Zoo bundles use, as a deprecated name of ``required_packages_version`` and replaces the required list with it:
    every package stays in ``required_packages_version``; the manual says which ones inference does not need.) The
    output ``value_range`` is empty: the network returns logits, which have no bounds (the schema takes numbers
    only)."""
    raw = _load("metadata.json")
    parser = ConfigParser()
    parser.read_meta(str(CONFIGS / "metadata.json"))
    assert "optional_packages_version" not in raw
    assert parser["_meta_::required_packages_version"] == raw["required_packages_version"]
    assert raw["network_data_format"]["outputs"]["pred"]["value_range"] == []
