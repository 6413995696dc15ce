"""tools/monailabel_app.py without MONAI Label installed: which weights the app copy serves as models/model.pt."""

from __future__ import annotations

import importlib.util
import json
import shutil

from bundle_runner import BUNDLE, REPO


def _tool():
    spec = importlib.util.spec_from_file_location("monailabel_app", REPO / "tools" / "monailabel_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source_bundle(tmp_path, trained: bytes | None, pretrained: bytes | None):
    src = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", src / "configs")
    shutil.copytree(BUNDLE / "scripts", src / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "models" / "pretrained").mkdir(parents=True)
    if trained is not None:
        (src / "models" / "model.pt").write_bytes(trained)
    if pretrained is not None:
        (src / "models" / "pretrained" / "model.pt").write_bytes(pretrained)
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("# a MONAI Label app\n")
    return src, app


def test_app_copy_serves_the_trained_model_else_the_shipped_one(tmp_path):
    tool = _tool()
    src, app = _source_bundle(tmp_path / "a", trained=None, pretrained=b"shipped")
    dst = tool.make_app_copy(app, "cellseg", bundle=src)
    assert (dst / "models" / "model.pt").read_bytes() == b"shipped"
    assert not (dst / "models" / "pretrained").exists()  # one model file: MONAI Label offers every .pt it finds
    src, app = _source_bundle(tmp_path / "b", trained=b"trained", pretrained=b"shipped")
    assert (tool.make_app_copy(app, "cellseg", bundle=src) / "models" / "model.pt").read_bytes() == b"trained"
    src, app = _source_bundle(tmp_path / "c", trained=None, pretrained=None)
    assert not (tool.make_app_copy(app, "cellseg", bundle=src) / "models" / "model.pt").exists()


def test_app_copy_installs_the_request_checks_once(tmp_path):
    """The sample app's main.py gets the two lines that wrap MyApp (once, however often the tool runs) and
    lib/cellseg_checks.py; a main.py without the sample app's class is left alone (the tool says so)."""
    tool = _tool()
    src, app = _source_bundle(tmp_path, trained=b"trained", pretrained=None)
    sample = "from monailabel.interfaces.app import MONAILabelApp\n\n\nclass MyApp(MONAILabelApp):\n    pass\n"
    (app / "main.py").write_text(sample)
    tool.make_app_copy(app, "cellseg", bundle=src)
    tool.make_app_copy(app, "cellseg", bundle=src)
    main_py = (app / "main.py").read_text()
    assert main_py.startswith(sample) and main_py.count("MyApp = with_checks(MyApp)") == 1
    assert (app / "lib" / "cellseg_checks.py").read_text() == (REPO / "tools" / "monailabel_checks.py").read_text()
    assert (app / "lib" / "__init__.py").is_file()

    other = tmp_path / "other"
    src, app = _source_bundle(other, trained=b"trained", pretrained=None)
    assert tool.main(["--app", str(app), "--name", "cellseg", "--bundle", str(src)]) == 0
    assert (app / "main.py").read_text() == "# a MONAI Label app\n" and not (app / "lib").exists()


def _trained_network(copy, caplog):
    """The network the copy's ``/train`` trains (train.json's ``initial_network``), and the fine-tuning log line."""
    import logging

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "train.json"))
    parser["bundle_root"] = str(copy)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scripts.networks.finetune"):
        network = parser.get_parsed_content("initial_network")
    return network, " ".join(r.getMessage() for r in caplog.records)


def test_app_copy_train_fine_tunes_the_served_model_for_its_classes(tmp_path, caplog):
    """The copy's /train fine-tunes models/model.pt: every tensor for the same classes; with --class_names the head
    afresh for those (the copy's class_names); without a model.pt, the configured network from its initialisation."""
    import torch

    shipped_pt = BUNDLE / "models" / "pretrained" / "model.pt"
    shipped = torch.load(shipped_pt, map_location="cpu", weights_only=True)["model"]
    tool = _tool()
    src, app = _source_bundle(tmp_path / "a", trained=None, pretrained=shipped_pt.read_bytes())
    network, log = _trained_network(tool.make_app_copy(app, "cellseg", bundle=src), caplog)
    assert "loaded 118 of 118 tensors." in log
    assert all(torch.equal(network.state_dict()[k], v) for k, v in shipped.items())

    assert tool.main(["--app", str(app), "--name", "two", "--bundle", str(src), "--class_names", "rest", "membrane"]) == 0
    copy = app / "model" / "two"
    assert json.loads((copy / "configs" / "train.json").read_text())["class_names"] == ["rest", "membrane"]
    network, log = _trained_network(copy, caplog)
    assert "loaded 116 of 118 tensors; re-initialised head.weight, head.bias for 2 classes (rest, membrane;" in log
    state = network.state_dict()
    assert state["head.weight"].shape[0] == 2 and not torch.equal(state["head.bias"], shipped["head.bias"][:2])
    assert all(torch.equal(state[k], v) for k, v in shipped.items() if not k.startswith("head."))

    (copy / "models" / "model.pt").unlink()
    network, log = _trained_network(copy, caplog)
    assert "No " in log and "yet: training UNet from its initialisation" in log
    assert network.state_dict()["head.weight"].shape[0] == 2
    assert not torch.equal(network.state_dict()["encoder.blocks.0.0.weight"], shipped["encoder.blocks.0.0.weight"])


def test_app_copy_serves_a_shipped_model_by_name(tmp_path, caplog):
    """``--shipped_model xnet``: the shipped X-Net is served even beside a trained model, and the copy's ``/train``
    continues it with its recipe (the shipped sampling and schedule, X-Net's decoder losses), every tensor loaded;
    an unknown name or a missing file: exit status 1 with one message."""
    import torch

    xnet_pt = BUNDLE / "models" / "pretrained" / "xnet.pt"
    tool = _tool()
    src, app = _source_bundle(tmp_path / "a", trained=b"trained", pretrained=b"shipped")
    shutil.copy2(xnet_pt, src / "models" / "pretrained" / "xnet.pt")
    assert tool.main(["--app", str(app), "--name", "cellseg", "--bundle", str(src), "--shipped_model", "xnet"]) == 0
    copy = app / "model" / "cellseg"
    assert (copy / "models" / "model.pt").read_bytes() == xnet_pt.read_bytes()
    train = json.loads((copy / "configs" / "train.json").read_text())
    assert train["network_def"] == "@networks#xnet" and train["loss"]["_target_"] == "scripts.losses.MultiOutputLoss"
    assert train["epochs"] == 90 and train["train_key"] == "training_sections"  # the shipped recipe under it
    network, log = _trained_network(copy, caplog)
    shipped = torch.load(xnet_pt, map_location="cpu", weights_only=True)["model"]
    assert type(network).__name__ == "XNet" and f"loaded {len(shipped)} of {len(shipped)} tensors." in log
    assert all(torch.equal(network.state_dict()[k], v) for k, v in shipped.items())

    assert tool.main(["--app", str(app), "--name", "u", "--bundle", str(src), "--shipped_model", "unet"]) == 0
    assert (app / "model" / "u" / "models" / "model.pt").read_bytes() == b"shipped"
    (src / "models" / "pretrained" / "xnet.pt").unlink()
    assert tool.main(["--app", str(app), "--name", "x", "--bundle", str(src), "--shipped_model", "xnet"]) == 1
