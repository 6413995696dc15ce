"""TorchScript inference with the default ``inference.json``, as the Model Zoo's CONTRIBUTING checks it: export with
``ckpt_export`` (its command), then run inference with ``network_def`` replaced by ``"$torch.jit.load(...)"`` and
the ``CheckpointLoader`` disabled. The label and probability maps equal those of the eager model (``model.pt``), every
picture but the feature maps is written (a ScriptModule takes no forward hooks: one warning says so), and the
overlap-tile inferer plans its tiles on the ScriptModule (its memory probe and, for a valid-padding network, its size
rule read from the exported attributes).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from bundle_runner import CONFIGS, TINY_INFERENCE

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated")

NUM_TEST = 2
PICTURES = ("input.png", "overlay.png", "confidence.png", "difficult.png", "refined.png", "label.png")


def _tiny_model(root, network: str) -> None:
    from scripts.data import CLASS_NAMES
    from scripts.networks import ModelInfo, UNet, XNet

    torch.manual_seed(0)
    net = (XNet(2, 1, 5, [4, 8, 16], batch_norm=True) if network == "xnet"
           else UNet(2, 1, 5, [4, 8, 16], padding="valid", batch_norm=True)).eval()
    (root / "models").mkdir(parents=True)
    info = ModelInfo(net, CLASS_NAMES, 255, [64, 64]).state_dict()
    torch.save({"model": net.state_dict(), "model_info": info}, root / "models" / "model.pt")


def _infer(root, output_dir, **overrides) -> dict:
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), workflow_type="infer",
                        meta_file=str(CONFIGS / "metadata.json"), bundle_root=str(root), output_dir=str(output_dir),
                        progress=False, **{**TINY_INFERENCE, "synthetic#num_test": NUM_TEST}, **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    logging.disable(logging.NOTSET)
    return json.loads((output_dir / "inference_report.json").read_text())


@pytest.mark.parametrize("network", ["xnet", "valid_unet"])
def test_inference_runs_on_the_exported_torchscript_module(tmp_path, capsys, network):
    from monai.bundle import ckpt_export

    root = tmp_path / "bundle"
    _tiny_model(root, network)
    ts = root / "models" / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(root / "models" / "model.pt"),
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                bundle_root=str(root))
    assert isinstance(torch.jit.load(str(ts)), torch.jit.ScriptModule)

    eager = _infer(root, tmp_path / "eager")
    capsys.readouterr()
    scripted = _infer(root, tmp_path / "scripted", network_def=f"$torch.jit.load({str(ts)!r})",
                      **{"handlers#0#_disabled_": True})
    log = capsys.readouterr().out  # the bundle's logging.conf logs to stdout
    for report in (eager, scripted):
        assert report["counts"] == {"ok": NUM_TEST, "skipped": 0, "failed": 0, "pending": 0}, report["counts"]
    warnings = [line for line in log.splitlines() if " - WARNING - " in line or " - ERROR - " in line]
    assert len(warnings) == 1 and "FeatureMapCapture: no feature-map picture" in warnings[0], warnings

    segs = sorted(p.name for p in (tmp_path / "eager").glob("*_seg.png"))
    assert len(segs) == NUM_TEST and segs == sorted(p.name for p in (tmp_path / "scripted").glob("*_seg.png"))
    for name in segs:
        a, b = (np.asarray(Image.open(tmp_path / d / name)) for d in ("eager", "scripted"))
        assert np.array_equal(a, b), name
        prob = name.replace("_seg.png", "_prob.tif")
        pa, pb = (tifffile.imread(tmp_path / d / prob).astype(int) for d in ("eager", "scripted"))
        assert np.abs(pa - pb).max() <= 1, prob  # uint8 probabilities: at most one rounding step apart
        stem = name[: -len("_seg.png")]
        written = {p.name for p in (tmp_path / "scripted" / "pictures" / stem).iterdir()}
        assert set(PICTURES) <= written and "features.png" not in written, written
        assert (tmp_path / "eager" / "pictures" / stem / "features.png").is_file()
