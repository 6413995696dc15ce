"""MONAI Label's bundle tasks, in process, on a tiny copy of this bundle (CPU, offline).

``BundleInferTask`` reads ``network_def``/``preprocessing``/``inferer``/``postprocessing`` from inference.json and
the labels from metadata.json; ``BundleTrainTask`` runs train.json with MONAI Label's datastore list in place of
``train#dataset#data``/``validate#dataset#data``. Run with the MONAI Label environment:
``.venv-monailabel/bin/python -m pytest -q tests/monailabel``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip(
    "monailabel.tasks.infer.bundle",
    reason="monailabel is not installed here; create its environment with `bash tools/monailabel_env.sh` and run "
    "`.venv-monailabel/bin/python -m pytest -q tests/monailabel` (.ci/run does both)",
)

import torch  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402

from mlabel_utils import MODEL_NAME, bundle_scripts, class_names, load_weights, read_image  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # SWIG objects of ITK/SimpleITK, imported by MONAI Label
    pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning"),
]


def expected_prediction(bundle_dir, image: np.ndarray) -> np.ndarray:
    """The bundle's own prediction for ``image`` (H, W), computed directly: MONAI's (W, H) layout in, argmax out,
    back to (H, W). MONAI Label's output must equal it pixel for pixel (same size, same orientation)."""
    with bundle_scripts(bundle_dir):
        parser = ConfigParser()
        parser.read_config(str(bundle_dir / "configs" / "inference.json"))
        parser["bundle_root"] = str(bundle_dir)
        net = parser.get_parsed_content("network_def", instantiate=True)
        inferer = parser.get_parsed_content("inferer", instantiate=True)
    net.load_state_dict(load_weights(bundle_dir / "models" / "model.pt"))
    net.eval()
    x = torch.from_numpy(np.ascontiguousarray(image.T, dtype=np.float32) / 255.0)[None, None]
    with torch.no_grad():
        logits = inferer(x, net)
    return logits.argmax(1)[0].numpy().T.astype(np.uint8)


@pytest.fixture
def infer_task(tiny_bundle):
    from monailabel.tasks.infer.bundle import BundleInferTask

    task = BundleInferTask(str(tiny_bundle), {})
    assert task.is_valid(), "BundleInferTask rejected the bundle copy"
    return task


def test_infer_task_info(infer_task):
    info = infer_task.info()
    assert info["type"] == "segmentation"
    assert info["dimension"] == 2, "metadata.json's 2D spatial_shape gives a 2D model"
    assert info["labels"] == class_names()
    assert info["labels"] == {"intracellular": 0, "membrane": 1, "glia_extracellular": 2, "mitochondria": 3, "synapse": 4}
    with open(f"{infer_task.bundle_path}/configs/metadata.json") as f:
        meta = json.load(f)
    assert info["version"] == meta["version"]


@pytest.mark.parametrize("name", ["wide.png", "tall.tif", "square.tiff"])
def test_infer_task_label_image(infer_task, tiny_bundle, studies, name):
    root, shapes = studies
    path = root / name
    result_file, result_json = infer_task({"image": str(path), "device": "cpu"})

    assert str(result_file).lower().endswith(path.suffix.lower()), "the label is written in the input's format"
    label = read_image(result_file)
    assert label.shape == shapes[name], "label size = input size (H, W), not transposed"
    assert label.dtype == np.uint8
    assert set(np.unique(label)) <= set(class_names().values())
    assert result_json["label_names"] == class_names()

    expected = expected_prediction(tiny_bundle, read_image(path))
    assert (label == expected).mean() > 0.99, "MONAI Label's label matches the bundle's own prediction pixel-wise"


def test_infer_task_ignores_missing_label_key(infer_task, studies):
    """inference.json loads an optional ground truth; a MONAI Label request has only the image."""
    root, _ = studies
    pre = infer_task.pre_transforms({"device": "cpu"})
    data = {"image": str(root / "wide.png"), "image_path": str(root / "wide.png")}
    for t in pre:
        data = t(data)
    assert "label" not in data
    assert tuple(data["image"].shape) == (1, 96, 64), "MONAI's (C, W, H) layout inside the pipeline"


def test_train_task_one_epoch_from_datastore(tiny_bundle, studies):
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.train.bundle import BundleTrainTask

    root, _ = studies
    datastore = LocalDatastore(str(root), extensions=["*.png", "*.tif", "*.tiff"], auto_reload=False)
    datalist = datastore.datalist()
    assert len(datalist) == 5, "only the labelled images are listed for training"

    model_pt = tiny_bundle / "models" / "model.pt"
    before = load_weights(model_pt)

    task = BundleTrainTask(str(tiny_bundle), {})
    assert task.is_valid()
    request = {"model": MODEL_NAME, "max_epochs": 1, "val_split": 0.4, "device": "cpu", "multi_gpu": False}
    assert task(request, datastore) == {}

    after = load_weights(model_pt)
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before), "training updated the weights in model.pt"
    assert (tiny_bundle / "models" / "checkpoint_epoch=1.pt").is_file()
