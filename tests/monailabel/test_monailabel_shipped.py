"""MONAI Label with the shipped model, driven by MONAI Label's own client (``MONAILabelClient``), as a viewer would:
requests the server cannot serve get HTTP 4xx with a one-line reason and change nothing (v0.7.1: bare HTTP 500, a
``.txt`` upload listed in the datastore, unknown ``/train`` keys ignored); ``/train`` continues the shipped U-Net
with its own recipe (v0.7.1 met the app's X-Net loss, failed, and had already archived ``models/model.pt``), then
``/infer`` serves the new model. The same server serves a second copy made with ``--class_names rest membrane``
(the studies' labels are membrane vs the rest, which the 5-class copy trains on too): its ``/train`` fine-tunes the
shipped model for those 2 classes, then ``/info`` and ``/infer`` serve them (v0.8.0 trained a 5-output network
for them, and ``/infer`` would have refused the new model.pt). A third copy, made with ``--shipped_model xnet``,
serves the shipped X-Net: ``/infer`` answers its prediction."""

from __future__ import annotations

import json
import re
import shutil
import time

import numpy as np
import pytest

pytest.importorskip(
    "monailabel.client",
    reason="monailabel is not installed here; create its environment with `bash tools/monailabel_env.sh` and run "
    "`.venv-monailabel/bin/python -m pytest -q tests/monailabel` (.ci/run does both)",
)

from mlabel_utils import (  # noqa: E402
    BUNDLE,
    MODEL_NAME,
    bundle_scripts,
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
#: The second copy's classes and model name; the studies' labels: membrane (shipped class 1) is 1, the rest 0.
TWO_CLASSES = ["rest", "membrane"]
TWO_CLASS_MODEL = "cellseg_membrane"
MEMBRANE_VS_REST = [0, 1, 0, 0, 0]
#: A third copy, made with ``--shipped_model xnet``: it serves the shipped X-Net.
XNET_MODEL = "cellseg_shipped_xnet"


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel_shipped")
    source = root / "bundle"  # the bundle as a user has it before training: the shipped model only
    for folder in ("configs", "scripts"):
        shutil.copytree(BUNDLE / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(BUNDLE / "LICENSE", source / "LICENSE")
    shutil.copytree(BUNDLE / "models" / "pretrained", source / "models" / "pretrained")
    more = {TWO_CLASS_MODEL: {"class_names": TWO_CLASSES}, XNET_MODEL: {"shipped_model": "xnet"}}
    with serve_app_copy(root, source, STARTUP_TIMEOUT, more_models=more, label_map=MEMBRANE_VS_REST) as srv:
        yield srv


def _refused(call) -> tuple[int, str]:
    """``(HTTP status, detail)`` of a request the server refuses (``MONAILabelClient`` raises with both in ``msg``)."""
    from monailabel.client.client import MONAILabelClientException

    with pytest.raises(MONAILabelClientException) as caught:
        call()
    match = re.fullmatch(r"Status: (\d+); Response: (.*)", caught.value.msg, re.S)
    assert match, caught.value.msg
    body = match.group(2)
    detail = json.loads(body)["detail"] if body.startswith("{") else body
    assert "\n" not in detail, detail
    return int(match.group(1)), detail


def _state(srv, client) -> dict:
    """What a refused request must leave as it was: the datastore, the studies folder, the served model, the archive
    and the last training task."""
    from monailabel.client.client import MONAILabelClientException

    try:
        task = client.train_status().get("id")
    except MONAILabelClientException:  # no training task yet
        task = None
    archive = srv.bundle / "archive"
    return {
        "datastore": sorted(client.datastore()["objects"]),
        "studies": sorted(str(p.relative_to(srv.studies)) for p in srv.studies.rglob("*") if p.suffix != ".lock"),
        "model.pt": (srv.bundle / "models" / "model.pt").read_bytes(),
        "archive": sorted(str(p) for p in archive.rglob("*")) if archive.is_dir() else [],
        "train task": task,
    }


@pytest.fixture
def client(shipped_server, tmp_path):
    """MONAI Label's client, saving results in a folder of its own: it names a result file as the server named its
    temporary file, and the server deletes that file in /tmp after answering, so a client saving into /tmp too loses
    its result when the server's clean-up comes second (a test failed once that way)."""
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(f"http://127.0.0.1:{shipped_server.port}", tmpdir=str(tmp_path))


@pytest.fixture
def not_images(tmp_path):
    """A ``.txt`` file and a ``.png`` file holding text."""
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "fake.png").write_text("not an image either\n")
    return tmp_path / "notes.txt", tmp_path / "fake.png"


def test_infer_errors_reach_the_client_as_4xx_with_the_reason(shipped_server, client, not_images):
    """Unknown image id, unknown model, a non-image uploaded to /infer (v0.7.1: 500 "Internal Server Error")."""
    text, fake_png = not_images
    before = _state(shipped_server, client)
    status, detail = _refused(lambda: client.infer(MODEL_NAME, "no_such_image", {}))
    assert status == 404 and "no_such_image" in detail and "datastore" in detail
    status, detail = _refused(lambda: client.infer("no_such_model", "wide", {}))
    assert status == 404 and "no_such_model" in detail and MODEL_NAME in detail
    status, detail = _refused(lambda: client.infer(MODEL_NAME, "", {}, file=str(text)))
    assert status == 415 and ".txt" in detail and ".png" in detail
    status, detail = _refused(lambda: client.infer(MODEL_NAME, "", {}, file=str(fake_png)))
    assert status == 415 and "cannot be read" in detail
    assert _state(shipped_server, client) == before
    label_file, _ = client.infer(MODEL_NAME, "wide", {})  # the server still serves
    assert read_image(label_file).shape == (64, 96)


def test_upload_of_a_non_image_is_refused_naming_the_accepted_extensions(shipped_server, client, not_images):
    """v0.7.1 took a ``.txt`` upload (200) and listed it in the datastore; now nothing reaches the studies folder."""
    text, fake_png = not_images
    before = _state(shipped_server, client)
    status, detail = _refused(lambda: client.upload_image(str(text), "notes"))
    assert status == 415 and "'notes'" in detail and ".txt" in detail
    assert all(ext in detail for ext in (".png", ".jpg", ".tif", ".tiff")), "names the accepted extensions"
    status, detail = _refused(lambda: client.upload_image(str(fake_png), "fake"))
    assert status == 415 and "not a readable image" in detail
    assert _state(shipped_server, client) == before


def test_unknown_train_parameters_are_refused_naming_the_known_ones(shipped_server, client):
    """v0.7.1 started a training with ``bogus_key`` (ignored); now no task starts and nothing is archived."""
    before = _state(shipped_server, client)
    status, detail = _refused(lambda: client.train_start(MODEL_NAME, {"bogus_key": 1, "max_epoch": 1}))
    assert status == 422 and "bogus_key" in detail and "did you mean 'max_epochs'?" in detail
    assert "known: " in detail and "val_split" in detail, "names the known parameters"
    status, detail = _refused(lambda: client.train_start(MODEL_NAME, {"pretrained": False}))
    assert status == 422 and "model.pt" in detail
    status, detail = _refused(lambda: client.train_start("no_such_model", {"max_epochs": 1}))
    assert status == 404 and MODEL_NAME in detail
    status, detail = _refused(lambda: client.train_start("", {MODEL_NAME: {"bogus_key": 1}}))  # POST /train/
    assert status == 422 and "bogus_key" in detail
    assert _state(shipped_server, client) == before, "no training task, model.pt and archive/ as they were"


def _train(srv, client, model: str) -> None:
    """``/train`` one epoch of ``model`` through the client and wait until it is done."""
    client.train_start(model, {"max_epochs": 1, "val_split": 0.4})
    deadline = time.time() + TRAIN_TIMEOUT
    status = {}
    while time.time() < deadline:
        status = client.train_status()
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(2)
    details = "\n".join(str(d) for d in status.get("details", [])[-30:])
    assert status.get("status") == "DONE", f"{status.get('status')}\n{details}\n{srv.log_tail()}"


def test_train_continues_the_shipped_model_then_infer_serves_it(shipped_server, client):
    model_pt = shipped_server.bundle / "models" / "model.pt"
    shipped = load_weights(BUNDLE / "models" / "pretrained" / "model.pt")
    assert load_weights(model_pt).keys() == shipped.keys()
    _train(shipped_server, client, MODEL_NAME)
    log = shipped_server.log_path.read_text(errors="replace")
    assert f"{MODEL_NAME}/models/model.pt: loaded 118 of 118 tensors." in log, "the same classes: every tensor"
    assert model_pt.is_file(), "the trained model is served from models/model.pt"
    after = load_weights(model_pt)
    assert after.keys() == shipped.keys(), "the same network (the shipped U-Net), continued"
    assert any(not (after[k] == shipped[k]).all() for k in shipped), "training changed the weights"

    label_file, _ = client.infer(MODEL_NAME, "wide", {})
    label = read_image(label_file)
    assert label.shape == (64, 96) and label.max() < 5


def test_train_with_other_classes_fine_tunes_the_shipped_model_then_infer_serves_them(shipped_server, client):
    """The copy made with ``--class_names rest membrane`` serves the shipped model (and its 5 labels) until its first
    ``/train``, which fine-tunes it for the 2 classes; /info and /infer then serve those, without a restart."""
    import torch

    model_pt = shipped_server.bundles[TWO_CLASS_MODEL] / "models" / "model.pt"
    shipped = torch.load(BUNDLE / "models" / "pretrained" / "model.pt", map_location="cpu", weights_only=True)
    shipped_labels = {name: i for i, name in enumerate(shipped["model_info"]["class_names"])}
    assert client.info()["models"][TWO_CLASS_MODEL]["labels"] == shipped_labels, "the labels of the model served"
    _train(shipped_server, client, TWO_CLASS_MODEL)
    log = shipped_server.log_path.read_text(errors="replace")
    assert (f"{TWO_CLASS_MODEL}/models/model.pt: loaded 116 of 118 tensors; re-initialised head.weight, head.bias "
            "for 2 classes (rest, membrane; the checkpoint's: ") in log
    trained = torch.load(model_pt, map_location="cpu", weights_only=True)
    assert trained["model_info"]["class_names"] == TWO_CLASSES
    assert trained["model_info"]["network"]["out_channels"] == 2
    assert trained["model"].keys() == shipped["model"].keys()
    assert trained["model"]["head.weight"].shape[0] == 2 and trained["model"]["head.bias"].shape == (2,)
    assert not (model_pt.parents[1] / "data").exists(), "the pre-flight checked the datastore's images, no synthetic set"

    labels = {"rest": 0, "membrane": 1}
    assert client.info()["models"][TWO_CLASS_MODEL]["labels"] == labels, "/info: the new model's classes"
    label_file, params = client.infer(TWO_CLASS_MODEL, "wide", {})
    label = read_image(label_file)
    assert label.shape == (64, 96) and set(np.unique(label).tolist()) <= {0, 1}
    assert params["label_names"] == labels
    assert client.info()["models"][MODEL_NAME]["labels"] == shipped_labels, "the other copy keeps its classes"


def test_a_copy_made_with_shipped_model_xnet_serves_the_shipped_xnet(shipped_server, client):
    """``tools/monailabel_app.py --shipped_model xnet`` (the manual's switch): the server serves the shipped X-Net,
    its 5 labels, and ``/infer`` answers the X-Net's prediction pixel for pixel (the network built from the copy's
    configs and model.pt, run directly)."""
    import torch
    from monai.bundle import ConfigParser

    copy = shipped_server.bundles[XNET_MODEL]
    xnet = BUNDLE / "models" / "pretrained" / "xnet.pt"
    shipped_xnet = load_weights(xnet)
    served = load_weights(copy / "models" / "model.pt")
    assert served.keys() == shipped_xnet.keys() and all(torch.equal(served[k], shipped_xnet[k]) for k in served)
    info = torch.load(xnet, map_location="cpu", weights_only=True)["model_info"]
    labels = {name: i for i, name in enumerate(info["class_names"])}
    assert client.info()["models"][XNET_MODEL]["labels"] == labels

    label_file, params = client.infer(XNET_MODEL, "wide", {})
    label = read_image(label_file)
    assert params["label_names"] == labels
    with bundle_scripts(copy):
        parser = ConfigParser()
        parser.read_config(str(copy / "configs" / "inference.json"))
        parser["bundle_root"] = str(copy)
        net = parser.get_parsed_content("network_def", instantiate=True).eval()
        inferer = parser.get_parsed_content("inferer", instantiate=True)
    assert type(net).__name__ == "XNet" and list(net.init_args["features"]) == [16, 32, 64, 128, 256]
    image = read_image(shipped_server.studies / "wide.png")
    x = torch.from_numpy(np.ascontiguousarray(image.T, dtype=np.float32) / 255.0)[None, None]
    with torch.no_grad():
        expected = inferer(x, net).argmax(1)[0].numpy().T.astype(np.uint8)
    assert label.shape == (64, 96) and np.array_equal(label, expected)
    assert len(np.unique(expected)) > 1, "a prediction of more than one class, so that the equality says something"
