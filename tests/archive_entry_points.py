"""Run every MONAI entry point that takes a bundle on an extracted archive, the way a user does (run with the
extracted bundle as the working directory, so that its own ``scripts`` is imported); used by
``tests/test_archive_entry_points.py``.

Usage: ``python archive_entry_points.py <bundle_dir> <name> <repo> <out>``. Writes, for each entry point, either
``<out>/<entry>.pt`` (the state dict of the network it gives) or ``<out>/<entry>.txt`` (the message it refused with).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")  # MONAI's notes on parsing configs, TorchScript's deprecation

from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, download_large_files, load, verify_net_in_out

bundle_dir, name, repo, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
root = bundle_dir / name
configs = root / "configs"
meta = str(configs / "metadata.json")


def record(entry: str, make) -> None:
    """Save the state dict of the network ``make()`` gives, or the message it refused with."""
    from scripts.errors import user_error_in

    try:
        result = make()
    except Exception as e:  # noqa: BLE001 - each refusal is recorded, the test checks its message
        error = user_error_in(e) or e
        (out / f"{entry}.txt").write_text(f"{type(error).__name__}: {error}")
        return
    if isinstance(result, torch.jit.ScriptModule) or isinstance(result, torch.nn.Module):
        state = result.state_dict()
    else:  # a checkpoint dictionary
        state = result["model"]
    torch.save({k: v.detach().cpu() for k, v in state.items()}, out / f"{entry}.pt")


def parsed_network(config: str, **override):
    parser = ConfigParser()
    parser.read_config(str(configs / config))
    parser.read_meta(meta)
    for k, v in override.items():
        parser[k] = v
    return parser.get_parsed_content("network_def")


def workflow_network(config: str | list[str], workflow_type: str):
    files = [str(configs / c) for c in ([config] if isinstance(config, str) else config)]
    workflow = ConfigWorkflow(config_file=files, workflow_type=workflow_type)
    workflow.initialize()
    return workflow.network_def


def exported(config: str):
    path = out / f"export_{Path(config).stem}.ts"
    ckpt_export(net_id="network_def", filepath=str(path), ckpt_file=str(root / "models" / "model.pt"), meta_file=meta,
                config_file=str(configs / config), bundle_root=str(root))
    return torch.jit.load(str(path))


def verified(config: str):
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=str(configs / config), bundle_root=str(root),
                      device="cpu")
    return parsed_network(config, bundle_root=str(root))  # the network verify_net_in_out checked


def monailabel_copy(config: str, key: str = "network_def"):
    spec = importlib.util.spec_from_file_location("monailabel_app", repo / "tools" / "monailabel_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = out / "app"
    if not (app / "main.py").is_file():
        app.mkdir(exist_ok=True)
        (app / "main.py").write_text("")
        module.make_app_copy(app, "cellseg", bundle=root)
    copy = app / "model" / "cellseg"
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / config))
    parser["bundle_root"] = str(copy)
    return parser.get_parsed_content(key)


def load_ts_module():
    """``load(..., load_ts_module=True)`` after the manual's one command that makes ``models/model.ts`` in the
    extracted bundle (the archive ships ``model.pt`` only)."""
    ckpt_export(net_id="network_def", filepath="models/model.ts", ckpt_file="models/model.pt",
                meta_file="configs/metadata.json", config_file="configs/inference.json")
    module, saved_meta, extra = load(name, load_ts_module=True, config_files=["inference.json"], **kw)
    assert saved_meta["version"] == ConfigParser.load_config_file(meta)["version"] and extra["inference.json"]
    return module


def check_large_files():
    download_large_files(bundle_path=str(root))  # downloads nothing: the file is there with the pinned sha256
    return torch.load(root / "models" / "model.pt", weights_only=True)


kw = {"bundle_dir": str(bundle_dir), "device": "cpu", "progress": False}
entries = {
    "load_default": lambda: load(name, **kw),
    "load_train": lambda: load(name, workflow_type="train", **kw),
    "load_training": lambda: load(name, workflow_type="training", **kw),
    "load_inference": lambda: load(name, workflow_type="inference", **kw),
    "load_inference_key": lambda: load(name, workflow_type="inference", key_in_ckpt="model", **kw),
    "load_infer": lambda: load(name, workflow_type="infer", **kw),
    "load_eval": lambda: load(name, workflow_type="eval", **kw),
    "workflow_inference": lambda: workflow_network("inference.json", "inference"),
    "workflow_evaluate": lambda: workflow_network(["train.json", "evaluate.json"], "eval"),
    "workflow_train": lambda: workflow_network("train.json", "train"),
    "ckpt_export_inference": lambda: exported("inference.json"),
    "ckpt_export_train": lambda: exported("train.json"),
    "verify_net_in_out_inference": lambda: verified("inference.json"),
    "monailabel_inference": lambda: monailabel_copy("inference.json"),
    "monailabel_train": lambda: monailabel_copy("train.json", "initial_network"),  # what its /train trains
    "download_large_files": check_large_files,
    "load_ts_module": load_ts_module,  # last: it adds models/model.ts to the extracted bundle
}
os.chdir(root)
only = os.environ.get("ENTRY_POINTS")
for entry, make in entries.items():
    if not only or entry in only.split(","):
        record(entry, make)
