"""The built archive gives the shipped network to every MONAI entry point that takes a bundle, or refuses in one
line (issue: ``monai.bundle.load`` returned random weights without a word).

The real bundle is packaged with ``tools/package_bundle.py``, extracted, and each entry point is run on it offline
from a fresh process inside the extracted folder (``tests/archive_entry_points.py``): ``monai.bundle.load`` with
each workflow type, ``ConfigWorkflow`` (``evaluate.json``'s ``network_def`` too), ``ckpt_export`` and
``verify_net_in_out`` as the Model Zoo's ``verify_bundle.py`` calls them, ``download_large_files``, the MONAI Label
app copy, and ``load(..., load_ts_module=True)`` after the documented export of ``models/model.ts``. Every network
given is compared tensor by tensor with ``bundle/models/pretrained/model.pt``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from bundle_runner import BUNDLE, REPO
from test_packaging import NAME, pb

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated")]

SHIPPED = BUNDLE / "models" / "pretrained" / "model.pt"
DRIVER = REPO / "tests" / "archive_entry_points.py"

#: Entry points that give the shipped network (or, where the bundle has no config of that name, MONAI's fallback:
#: the checkpoint dictionary itself, whose "model" is compared).
GIVE_SHIPPED = ["load_inference", "load_inference_key", "load_training", "load_infer", "load_eval",
                "workflow_inference", "ckpt_export_inference", "verify_net_in_out_inference",
                "monailabel_inference", "monailabel_train", "download_large_files", "workflow_evaluate",
                "load_ts_module"]
#: Entry points that refuse (train.json builds a new, untrained network), with the start of their one message.
REFUSE = {
    "load_default": "RunFolderError: {model} is the model this bundle ships",
    "load_train": "RunFolderError: {model} is the model this bundle ships",
    "workflow_train": "RunFolderError: {model} is the model this bundle ships",
    "ckpt_export_train": "CheckpointMismatchError: the checkpoint was trained with another network",
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The real bundle packaged (no git check: the working tree may be ahead of the version's commit) and
    extracted as ``monai.bundle.download`` does: ``<bundle_dir>/<name>/``."""
    tmp = tmp_path_factory.mktemp("archive")
    result = pb.package_bundle(BUNDLE, tmp / "dist", git_check=False)
    bundle_dir = tmp / "bundles"
    with zipfile.ZipFile(result.archive) as zf:
        zf.extractall(bundle_dir)
    return result, bundle_dir


@pytest.fixture(scope="module")
def entry_points(archive):
    """Run every entry point on the extracted archive in a fresh process (the extracted ``scripts`` imported, as a
    user's process does); return the folder of results."""
    _, bundle_dir = archive
    root, out = bundle_dir / NAME, bundle_dir.parent / "results"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, str(DRIVER), str(bundle_dir), NAME, str(REPO), str(out)], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, out


def test_archive_ships_the_weights_as_models_model_pt(archive):
    result, bundle_dir = archive
    # the U-Net where every entry point looks; the X-Net (--shipped_model xnet) at its own path
    assert [f for f in result.files if "/models/" in f] == [f"{NAME}/models/model.pt", f"{NAME}/models/pretrained/xnet.pt"]
    extracted = bundle_dir / NAME
    assert (extracted / "models" / "model.pt").read_bytes() == SHIPPED.read_bytes()
    xnet = BUNDLE / "models" / "pretrained" / "xnet.pt"
    assert (extracted / "models" / "pretrained" / "xnet.pt").read_bytes() == xnet.read_bytes()
    manifest = json.loads((extracted / pb.MANIFEST).read_text())
    unet, xnet_pin = json.loads((BUNDLE / pb.MANIFEST).read_text())["large_files"]
    assert manifest["large_files"] == [{**unet, "path": "models/model.pt"}, xnet_pin]


@pytest.mark.parametrize("entry", GIVE_SHIPPED)
def test_entry_point_gives_the_shipped_weights(entry_points, entry):
    _, out = entry_points
    assert not (out / f"{entry}.txt").exists(), (out / f"{entry}.txt").read_text()
    given = torch.load(out / f"{entry}.pt", weights_only=True)
    shipped = torch.load(SHIPPED, weights_only=True)["model"]
    assert given.keys() == shipped.keys()
    for k, v in shipped.items():
        assert torch.equal(given[k], v), k


@pytest.mark.parametrize("entry", sorted(REFUSE))
def test_entry_point_refuses_in_one_line(entry_points, entry):
    root, out = entry_points
    assert not (out / f"{entry}.pt").exists(), "gave a network instead of refusing"
    message = (out / f"{entry}.txt").read_text()
    assert message.startswith(REFUSE[entry].format(model=root / "models" / "model.pt")) and "\n" not in message
    if entry != "ckpt_export_train":
        assert "workflow_type='inference'" in message


def test_shipped_model_in_models_is_not_a_run(tmp_path):
    """A new run in an extracted archive names the shipped model.pt; a trained one is refused as a run."""
    from scripts.errors import RunFolderError
    from scripts.workflows import prepare_run_folder

    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(SHIPPED.read_bytes())
    manifest = json.loads((BUNDLE / pb.MANIFEST).read_text())
    manifest["large_files"][0]["path"] = "models/model.pt"
    (tmp_path / pb.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match=r"model.pt is the model this bundle ships .*workflow_type='inference'"):
        prepare_run_folder(str(model.parent), str(tmp_path / "logs"))
    model.write_bytes(SHIPPED.read_bytes()[:-1] + b"x")  # not the pinned file: a run of the user's
    with pytest.raises(RunFolderError, match="already holds a training run"):
        prepare_run_folder(str(model.parent), str(tmp_path / "logs"))
    assert prepare_run_folder(str(model.parent), str(tmp_path / "logs"), overwrite=True)
    assert not model.exists()
