"""MONAI Label with the shipped model, driven by MONAI Label's own client (``MONAILabelClient``), as a viewer would:
``/train`` continues the shipped U-Net with its own recipe (v0.7.1 met the app's X-Net loss, failed, and had already
archived ``models/model.pt``), then ``/infer`` serves the new model."""

from __future__ import annotations

import shutil
import time

import pytest

pytest.importorskip(
    "monailabel.client",
    reason="monailabel is not installed here; create its environment with `bash tools/monailabel_env.sh` and run "
    "`.venv-monailabel/bin/python -m pytest -q tests/monailabel` (.ci/run does both)",
)

from mlabel_utils import (  # noqa: E402
    BUNDLE,
    MODEL_NAME,
    load_weights,
    read_image,
    serve_app_copy,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning"),
]

STARTUP_TIMEOUT = 240
TRAIN_TIMEOUT = 300


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel_shipped")
    source = root / "bundle"  # the bundle as a user has it before training: the shipped model only
    for folder in ("configs", "scripts"):
        shutil.copytree(BUNDLE / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(BUNDLE / "LICENSE", source / "LICENSE")
    shutil.copytree(BUNDLE / "models" / "pretrained", source / "models" / "pretrained")
    with serve_app_copy(root, source, STARTUP_TIMEOUT) as srv:
        yield srv


def test_train_continues_the_shipped_model_then_infer_serves_it(shipped_server):
    from monailabel.client import MONAILabelClient

    model_pt = shipped_server.bundle / "models" / "model.pt"
    shipped = load_weights(BUNDLE / "models" / "pretrained" / "model.pt")
    assert load_weights(model_pt).keys() == shipped.keys()
    client = MONAILabelClient(f"http://127.0.0.1:{shipped_server.port}")
    client.train_start(MODEL_NAME, {"max_epochs": 1, "val_split": 0.4})
    deadline = time.time() + TRAIN_TIMEOUT
    status = {}
    while time.time() < deadline:
        status = client.train_status()
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(2)
    details = "\n".join(str(d) for d in status.get("details", [])[-30:])
    assert status.get("status") == "DONE", f"{status.get('status')}\n{details}\n{shipped_server.log_tail()}"
    assert model_pt.is_file(), "the trained model is served from models/model.pt"
    after = load_weights(model_pt)
    assert after.keys() == shipped.keys(), "the same network (the shipped U-Net), continued"
    assert any(not (after[k] == shipped[k]).all() for k in shipped), "training changed the weights"

    label_file, _ = client.infer(MODEL_NAME, "wide", {})
    label = read_image(label_file)
    assert label.shape == (64, 96) and label.max() < 5
