"""Inference and evaluation never change the model, and their results do not depend on pictures or image order.

Properties of the whole workflows (``inference.json``, ``train.json`` + ``evaluate.json``), run in-process through
``monai.bundle.ConfigWorkflow`` on tiny synthetic data (64x64, X-Net with features 4, 8, 16 and BatchNorm) from a
``model.pt`` whose BatchNorm running statistics are far from their initial values, so that a forward pass in
training mode (which renormalises with the batch statistics and moves the running ones) shows in the outputs:

- the network's ``state_dict`` (parameters *and* buffers: running mean/var, ``num_batches_tracked``) is
  bit-identical before and after a full ``run inference`` with every picture option on, and a full
  ``run evaluating``;
- the label and probability maps are identical with pictures (and the feature-map capture) on and off;
- they are identical when the images come in the reverse order.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from bundle_runner import CONFIGS, TINY

pytestmark = pytest.mark.slow

NUM_TEST = 4
OVERRIDES = {**TINY, "synthetic#num_test": NUM_TEST}
PICTURES_ON = {"pictures": True, "feature_maps": True, "save_refined": True, "save_probabilities": True}


def _model(path) -> dict[str, torch.Tensor]:
    """An X-Net as the configs build it, with non-trivial BatchNorm running statistics, saved as ``model.pt``."""
    from scripts.networks import XNet

    torch.manual_seed(0)
    net = XNet(spatial_dims=2, in_channels=1, out_channels=5, features=TINY["features"], batch_norm=True)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns, "the property needs BatchNorm layers"
    for bn in bns:
        bn.running_mean.normal_(0.0, 0.5)
        bn.running_var.uniform_(0.2, 3.0)
        bn.num_batches_tracked.fill_(100)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def _run(config_files, workflow_type: str | None, **overrides):
    """Initialise and run a bundle workflow in this process; return its parsed network afterwards."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in config_files], workflow_type=workflow_type,
                        **{**OVERRIDES, **overrides})
    wf.initialize()
    wf.run()
    net = wf.parser.get_parsed_content("network")
    wf.finalize()
    logging.disable(logging.NOTSET)
    return net


def _assert_same_state(net: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    after = net.state_dict()
    assert after.keys() == state.keys()
    changed = [k for k, v in state.items() if not torch.equal(after[k].cpu(), v)]
    assert not changed, f"{what} changed the network: {changed[:6]}{' ...' if len(changed) > 6 else ''}"


def _outputs(folder) -> dict[str, np.ndarray]:
    out = {p.name: np.asarray(Image.open(p)) for p in folder.glob("*_seg.png")}
    out.update({p.name: tifffile.imread(p) for p in folder.glob("*_prob.tif")})
    return out


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("state_root")
    state = _model(root / "models" / "model.pt")
    return root, state


@pytest.fixture(scope="module")
def with_pictures(bundle_root):
    root, state = bundle_root
    out = root / "out_pictures"
    net = _run(["inference.json"], "inference", bundle_root=str(root), output_dir=str(out), **PICTURES_ON)
    return net, out


def test_inference_with_every_picture_option_leaves_the_network_unchanged(bundle_root, with_pictures):
    _, state = bundle_root
    net, out = with_pictures
    assert len(list((out / "pictures").glob("*/features.png"))) == NUM_TEST, "the feature maps must have been captured"
    assert len(list(out.glob("*_refined.png"))) == NUM_TEST and len(list(out.glob("*_prob.tif"))) == NUM_TEST
    _assert_same_state(net, state, "run inference (pictures, feature maps, refinement, probabilities)")
    assert not net.training, "inference.json's network must stay in eval mode for the whole run"


def test_label_maps_do_not_depend_on_pictures(bundle_root, with_pictures):
    root, _ = bundle_root
    _, out_on = with_pictures
    out_off = root / "out_plain"
    _run(["inference.json"], "inference", bundle_root=str(root), output_dir=str(out_off), pictures=False,
         save_probabilities=True)
    on, off = _outputs(out_on), _outputs(out_off)
    assert len(on) == 2 * NUM_TEST and on.keys() == off.keys()
    differ = [name for name in sorted(on) if not np.array_equal(on[name], off[name])]
    assert not differ, f"outputs differ with pictures on and off: {differ}"


def test_outputs_do_not_depend_on_image_order(bundle_root, with_pictures):
    root, state = bundle_root
    _, out_fwd = with_pictures
    datalist_file = root / "data" / "synthetic" / "datalist.json"
    datalist = json.loads(datalist_file.read_text())
    datalist["testing"] = datalist["testing"][::-1]
    reversed_file = datalist_file.with_name("datalist_reversed.json")
    reversed_file.write_text(json.dumps(datalist))
    out_rev = root / "out_reversed"
    net = _run(["inference.json"], "inference", bundle_root=str(root), output_dir=str(out_rev),
               input=str(reversed_file), **PICTURES_ON)
    fwd, rev = _outputs(out_fwd), _outputs(out_rev)
    assert len(fwd) == 2 * NUM_TEST and fwd.keys() == rev.keys()
    differ = [name for name in sorted(fwd) if not np.array_equal(fwd[name], rev[name])]
    assert not differ, f"outputs differ when the images come in reverse order: {differ}"
    _assert_same_state(net, state, "run inference in reverse order")


def test_evaluation_leaves_the_network_unchanged(bundle_root):
    root, state = bundle_root
    net = _run(["train.json", "evaluate.json"], None, bundle_root=str(root), save_predictions=True,
               output_dir=str(root / "eval"))
    assert (root / "eval" / "metrics.json").is_file()
    assert len(list((root / "eval" / "predictions").glob("*.png"))) == NUM_TEST
    _assert_same_state(net, state, "run evaluating")
    assert not net.training, "evaluate.json's network must stay in eval mode for the whole run"


def test_feature_map_capture_keeps_the_mode_and_the_state_and_removes_its_hooks(tmp_path):
    """The capture alone, on a network in training mode (what a fresh config network is): it runs no pass of its
    own, so it neither switches the mode nor touches the state, and no hook outlives the forward pass."""
    from scripts.networks import UNet
    from scripts.visualize import FeatureMapCapture

    net = UNet(spatial_dims=2, in_channels=1, out_channels=5, features=TINY["features"], batch_norm=True).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    capture = FeatureMapCapture(net)
    capture._start()
    assert net.training and net.head._forward_hooks, "hooked for the forward pass"
    capture.remove()
    assert net.training, "the capture must not change the network's mode"
    _assert_same_state(net, state, "the feature-map capture")
    assert not any(m._forward_hooks for m in net.modules()), "no hook may stay on the network"
