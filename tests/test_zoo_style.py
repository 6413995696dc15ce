"""The MONAI Model Zoo's unit-test style run (its ``ci/unit_tests/test_<bundle>.py``): random images written into a
``dataset_dir``, the configs run through ``ConfigWorkflow`` with a dict of overrides, and its ``check_workflow``:
``initialize()``, ``check_properties()`` must find every required property (``dataset_dir`` included, which the
configs define) and no optional one under a wrong ID, then ``run()`` and ``finalize()``.

Order as the zoo's ``test_order``: train (``train.json``, ``workflow_type="train"``), evaluate (``train.json`` +
``evaluate.json``, with ``"train"`` as the zoo's tests use for it, and with ``"eval"``), infer (``inference.json``,
``"infer"``, the ``CheckpointLoader`` disabled as the zoo's tests do: ``network_def`` holds the weights anyway).
Evaluation and inference use the model the training run wrote.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from bundle_runner import CONFIGS

SIZE, NUM_CLASSES = 64, 5
SPLITS = {"training": 2, "validation": 1, "testing": 2}

TRAIN_CASE = {  # train, evaluate
    "datalist_file": "$@dataset_dir + '/datalist.json'",
    "epochs": 1,
    "features": [4, 8, 16],
    "patch_size": [SIZE, SIZE],
    "batch_size": 2,
    "val_batch_size": 1,
    "train#dataset#cache_rate": 0.0,
    "validate#dataset#cache_rate": 0.0,
    "cache_workers": 0,
    "show_progress": False,
}
INFER_CASE = {  # inference
    "input": "$@dataset_dir + '/images'",
    "handlers#0#_disabled_": True,
    "progress": False,
}


def check_workflow(workflow, check_properties: bool = False) -> None:
    """The zoo's ``ci/unit_tests/utils.py`` ``check_workflow``."""
    workflow.initialize()
    if check_properties is True:
        check_result = workflow.check_properties()
        if check_result is not None and len(check_result) > 0:
            raise ValueError(f"check properties for workflow failed: {check_result}")
    workflow.run()
    workflow.finalize()


def workflow(files: list[str], workflow_type: str, **override):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(workflow_type=workflow_type, config_file=[str(CONFIGS / f) for f in files],
                          logging_file=str(CONFIGS / "logging.conf"), meta_file=str(CONFIGS / "metadata.json"),
                          **override)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """Random 8-bit images and class-index labels, as the zoo's ``setUp`` writes them, with a datalist."""
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    datalist = {}
    for split, count in SPLITS.items():
        datalist[split] = []
        for i in range(count):
            item = {"image": f"images/{split}_{i}.png", "label": f"labels/{split}_{i}.png"}
            for key, high in (("image", 256), ("label", NUM_CLASSES)):
                (root / item[key]).parent.mkdir(exist_ok=True)
                Image.fromarray(rng.integers(0, high, (SIZE, SIZE), dtype=np.uint8)).save(root / item[key])
            datalist[split].append(item)
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle_root")
    check_workflow(workflow(["train.json"], "train", bundle_root=str(root), dataset_dir=str(dataset_dir),
                            **TRAIN_CASE), check_properties=True)
    return root


def test_train_config(trained):
    ckpt = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert ckpt["model_info"]["network"]["features"] == [4, 8, 16]


@pytest.mark.parametrize("workflow_type", ["train", "eval"])
def test_evaluate_config(trained, dataset_dir, workflow_type):
    report = trained / "eval" / "metrics.json"
    report.unlink(missing_ok=True)
    check_workflow(workflow(["train.json", "evaluate.json"], workflow_type, bundle_root=str(trained),
                            dataset_dir=str(dataset_dir), **TRAIN_CASE), check_properties=True)
    assert report.is_file()


def test_infer_config(trained, dataset_dir):
    check_workflow(workflow(["inference.json"], "infer", bundle_root=str(trained), dataset_dir=str(dataset_dir),
                            features=TRAIN_CASE["features"], **INFER_CASE), check_properties=True)
    report = json.loads((trained / "outputs" / "inference_report.json").read_text())
    assert report["counts"]["ok"] == SPLITS["training"] + SPLITS["validation"] + SPLITS["testing"]
    assert report["model_sha256"] == hashlib.sha256((trained / "models" / "model.pt").read_bytes()).hexdigest()
