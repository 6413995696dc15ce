"""A real ``monailabel start_server`` with the ``monaibundle`` sample app and a tiny copy of this bundle.

The app comes from the monailabel wheel (``monailabel apps --download``, offline); the bundle copy sits in
``apps/monaibundle/model/cellseg_xnet``; the studies folder holds synthetic PNG, .tif and .tiff images (5 of them
labelled under ``labels/final``). The server listens on 127.0.0.1 only and is stopped by the fixture whatever
happens (SIGTERM to its process group, SIGKILL after a grace period). Run with the MONAI Label environment.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import numpy as np
import pytest

pytest.importorskip(
    "monailabel.tasks.infer.bundle",
    reason="monailabel is not installed here; create its environment with `bash tools/monailabel_env.sh` and run "
    "`.venv-monailabel/bin/python -m pytest -q tests/monailabel` (.ci/run does both)",
)

from mlabel_utils import (  # noqa: E402
    MODEL_NAME,
    TRAINED_FEATURES,
    class_names,
    ensure_model_info,
    load_weights,
    read_image,
    serve_app_copy,
)

pytestmark = [
    pytest.mark.slow,
    # SWIG objects of ITK/SimpleITK, imported by MONAI Label
    pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning"),
]

#: Seconds allowed for the server to answer /info/ (imports and app start on a busy 2-core machine).
STARTUP_TIMEOUT = 240
#: Seconds allowed for one training task (a subprocess that starts the app again, then one tiny epoch).
TRAIN_TIMEOUT = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_source):
    with serve_app_copy(tmp_path_factory.mktemp("monailabel_server"), trained_source, STARTUP_TIMEOUT) as srv:
        yield srv


def test_info_lists_model_and_labels(server):
    info = server.get_json("/info/")
    assert MODEL_NAME in info["models"], info["models"].keys()
    model = info["models"][MODEL_NAME]
    assert model["type"] == "segmentation"
    assert model["dimension"] == 2
    assert model["labels"] == class_names()
    assert MODEL_NAME in info["trainers"]
    assert not any(k.startswith("sam") for k in info["models"]), "sam2 is off (--conf sam2 false)"
    assert set(info["labels"]) >= set(class_names())


def test_datastore_lists_png_tif_tiff(server):
    ds = server.get_json("/datastore/?output=all")
    objects = ds["objects"]
    assert set(objects) == {n.rsplit(".", 1)[0] for n in server.shapes}, "all images, .tiff included via MONAI_LABEL_DATASTORE_FILE_EXT"
    labelled = [k for k, v in objects.items() if v.get("labels", {}).get("final")]
    assert len(labelled) == 5


def _check_label(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    label = read_image(data)
    assert label.shape == shape, f"label {label.shape} vs image {shape}"
    assert label.dtype == np.uint8
    assert set(np.unique(label)) <= set(class_names().values())
    return label


@pytest.mark.parametrize("name", ["wide.png", "tall.tif", "square.tiff"])
def test_infer_datastore_image(server, name):
    image_id = name.rsplit(".", 1)[0]
    status, headers, data = server.request("POST", f"/infer/{MODEL_NAME}?image={urllib.parse.quote(image_id)}&output=image")
    assert status == 200, f"HTTP {status}: {data[:2000]!r}\n{server.log_tail()}"
    _check_label(data, server.shapes[name])


def test_infer_uploaded_file_returns_label_and_params(server):
    """``output=all``: multipart answer with the label image and the params (label names)."""
    content = (server.studies / "wide.png").read_bytes()
    status, headers, data = server.post_file(f"/infer/{MODEL_NAME}?output=image", "file", "upload.png", content)
    assert status == 200, f"HTTP {status}: {data[:2000]!r}\n{server.log_tail()}"
    _check_label(data, server.shapes["wide.png"])

    status, headers, data = server.request("POST", f"/infer/{MODEL_NAME}?image=wide&output=json")
    assert status == 200
    assert json.loads(data)["label_names"] == class_names()


def _wait_for_training(server) -> dict:
    deadline = time.monotonic() + TRAIN_TIMEOUT
    task: dict = {}
    while time.monotonic() < deadline:
        task = server.get_json("/train/")
        if task.get("status") in ("DONE", "ERROR", "STOPPED"):
            break
        time.sleep(2)
    details = "\n".join(task.get("details", []))
    assert task.get("status") == "DONE", f"training task: {task.get('status')}\n{details}\n{server.log_tail()}"
    return task


def _assert_new_weights(before: dict, after: dict) -> None:
    assert after.keys() == before.keys()
    assert any(not (after[k] == before[k]).all() for k in before), "training wrote new weights to models/model.pt"


def test_train_one_epoch_writes_model(server):
    """``POST /train/`` (all trainers, params per model): one epoch from the datastore's labelled images."""
    model_pt = server.bundle / "models" / "model.pt"
    before = load_weights(model_pt)
    started = server.post_json("/train/", {MODEL_NAME: {"max_epochs": 1, "val_split": 0.4}})
    assert started[MODEL_NAME]["result"], started
    _wait_for_training(server)
    _assert_new_weights(before, load_weights(model_pt))

    # the inferer uses the new model.pt straight away
    status, _, data = server.request("POST", f"/infer/{MODEL_NAME}?image=tall&output=image")
    assert status == 200, f"HTTP {status}: {data[:2000]!r}"
    _check_label(data, server.shapes["tall.tif"])


def test_train_model_endpoint(server):
    """``POST /train/<model>`` with the params as the body (what MONAI Label's clients send)."""
    model_pt = server.bundle / "models" / "model.pt"
    ensure_model_info(model_pt, TRAINED_FEATURES)  # training wrote the width into model.pt
    before = load_weights(model_pt)
    started = server.post_json(f"/train/{MODEL_NAME}", {"max_epochs": 1, "val_split": 0.4, "pretrained": True})
    assert started.get("status") in ("SUBMITTED", "RUNNING", "DONE"), started
    task = _wait_for_training(server)
    assert task["request"]["max_epochs"] == 1
    _assert_new_weights(before, load_weights(model_pt))


def test_upload_leaves_no_files_behind(server):
    """The app copy saves no probability maps: an upload (a temporary file) leaves nothing in outputs/."""
    content = (server.studies / "wide.png").read_bytes()
    status, _, data = server.post_file(f"/infer/{MODEL_NAME}?output=image", "file", "upload.png", content)
    assert status == 200, f"HTTP {status}: {data[:2000]!r}"
    outputs = server.bundle / "outputs"
    assert not (outputs.is_dir() and list(outputs.iterdir())), sorted(p.name for p in outputs.iterdir())


def test_weights_of_another_width_give_a_readable_error(server):
    """model.pt replaced, while the server runs, by weights of another width without model_info: the client gets
    the one-line message (HTTP 422, JSON detail), not a bare 500."""
    import torch

    from mlabel_utils import bundle_scripts

    with bundle_scripts(server.bundle):
        from scripts.networks import XNet

        other = XNet(2, 1, 5, [8, 16, 32], batch_norm=True, skip="both")
    model_pt = server.bundle / "models" / "model.pt"
    torch.save(other.state_dict(), model_pt)
    status, _, data = server.request("POST", f"/infer/{MODEL_NAME}?image=wide&output=image")
    assert status == 422, f"HTTP {status}: {data[:2000]!r}"
    detail = json.loads(data)["detail"]
    assert "do not fit" in detail and "--features" in detail and "\n" not in detail
