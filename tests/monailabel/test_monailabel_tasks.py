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

from mlabel_utils import (  # noqa: E402
    BUNDLE,
    MODEL_NAME,
    TRAINED_FEATURES,
    bundle_scripts,
    class_names,
    load_weights,
    read_image,
)

pytestmark = [
    pytest.mark.slow,
    # SWIG objects of ITK/SimpleITK, imported by MONAI Label
    pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning"),
]


def trained_network(bundle_dir):
    """The trained model, built independently of the configs: an X-Net of :data:`TRAINED_FEATURES` (the width it
    was trained with) holding model.pt's weights, in eval mode."""
    with bundle_scripts(bundle_dir):
        from scripts.networks import XNet

        net = XNet(2, 1, 5, TRAINED_FEATURES, padding="same", batch_norm=True, dropout=0.0, skip="both")
    torch.nn.Module.load_state_dict(net, load_weights(bundle_dir / "models" / "model.pt"))
    return net.eval()


def expected_prediction(bundle_dir, image: np.ndarray) -> np.ndarray:
    """The trained model's prediction for ``image`` (H, W), computed directly: MONAI's (W, H) layout in, argmax out,
    back to (H, W). MONAI Label's output must equal it pixel for pixel (same size, same orientation)."""
    with bundle_scripts(bundle_dir):
        parser = ConfigParser()
        parser.read_config(str(bundle_dir / "configs" / "inference.json"))
        parser["bundle_root"] = str(bundle_dir)
        inferer = parser.get_parsed_content("inferer", instantiate=True)
    net = trained_network(bundle_dir)
    x = torch.from_numpy(np.ascontiguousarray(image.T, dtype=np.float32) / 255.0)[None, None]
    with torch.no_grad():
        logits = inferer(x, net)
    return logits.argmax(1)[0].numpy().T.astype(np.uint8)


def test_app_copy_has_no_width_override(tiny_bundle):
    """The manual's copy keeps the bundle's default width (32..512); the model was trained at 4..16; only model.pt
    goes into models/ (no resumable checkpoints)."""
    default = json.loads((BUNDLE / "configs" / "inference.json").read_text())["features"]
    for name in ("inference.json", "train.json"):
        config = json.loads((tiny_bundle / "configs" / name).read_text())
        assert config["features"] == default != TRAINED_FEATURES, name
    assert sorted(p.name for p in (tiny_bundle / "models").iterdir()) == ["model.pt"]
    ckpt = torch.load(tiny_bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["model_info"]["network"]["features"] == TRAINED_FEATURES


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


def test_infer_task_maps_other_bit_depths_as_cli_inference_does(infer_task, tiny_bundle, studies, tmp_path):
    """A uint16 copy (x 257) of an image: MONAI Label's pipeline (no pre-flight) maps its percentiles onto the
    training images' recorded in model.pt (the 'matched' scaling of the CLI pre-flight), not onto 0..1."""
    import tifffile

    root, _ = studies
    image = read_image(root / "wide.png")
    tifffile.imwrite(tmp_path / "wide16.tif", image.astype(np.uint16) * 257)
    with bundle_scripts(tiny_bundle):
        from scripts.data.intensity import intensity_scaling
        from scripts.networks import model_intensity_statistics

        stats = model_intensity_statistics(tiny_bundle / "models" / "model.pt")
        assert stats is not None and stats["dtypes"] == ["uint8"], "train.json recorded the training statistics"
        scaling = intensity_scaling(tifffile.imread(tmp_path / "wide16.tif"), "auto", 255, "uint16", stats)
    assert scaling.rule == "matched"
    data = {"image": str(tmp_path / "wide16.tif"), "image_path": str(tmp_path / "wide16.tif")}
    for t in infer_task.pre_transforms({"device": "cpu"}):
        data = t(data)
    expected = np.clip((image.T.astype(np.float64) * 257 - scaling.low) / (scaling.high - scaling.low), 0, 1)
    np.testing.assert_allclose(np.asarray(data["image"][0]), expected, atol=1e-5)


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
    assert all(after[k].shape == before[k].shape for k in before), "it continued the trained 4..16 network"
    assert any(not torch.equal(after[k], before[k]) for k in before), "training updated the weights in model.pt"
    assert (tiny_bundle / "models" / "checkpoint_epoch=1.pt").is_file()


def test_train_task_from_scratch_without_model(tmp_path, trained_source, studies):
    """No model.pt in the app yet: MONAI Label trains the configured network (random initialisation)."""
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.train.bundle import BundleTrainTask

    from mlabel_utils import make_app_copy

    bundle = make_app_copy(trained_source, tmp_path / "app", with_model=False)
    # a small configured width for speed: here the configs, not a model, decide the network
    config = json.loads((bundle / "configs" / "train.json").read_text())
    config["features"] = [4, 8]
    (bundle / "configs" / "train.json").write_text(json.dumps(config))
    root, _ = studies
    datastore = LocalDatastore(str(root), extensions=["*.png"], auto_reload=False)
    task = BundleTrainTask(str(bundle), {})
    request = {"model": MODEL_NAME, "max_epochs": 1, "val_split": 0.4, "device": "cpu", "multi_gpu": False}
    assert task(request, datastore) == {}
    weights = load_weights(bundle / "models" / "model.pt")
    assert weights["encoder1.blocks.0.0.weight"].shape[0] == 4 and "decoder1.ups.1.up.weight" not in weights


def test_infer_task_readable_error_for_weights_of_another_width(infer_task, tiny_bundle, studies):
    """model.pt replaced while the app runs, by weights of another width without model_info: one clear message
    (an HTTP error with that detail in a server, see test_monailabel_server), not hundreds of size mismatches."""
    root, _ = studies
    with bundle_scripts(tiny_bundle):
        from scripts.networks import XNet

        other = XNet(2, 1, 5, [8, 16, 32], batch_norm=True, skip="both")
    torch.save(other.state_dict(), tiny_bundle / "models" / "model.pt")
    with pytest.raises(ValueError) as err:
        infer_task({"image": str(root / "wide.png"), "device": "cpu"})
    message = str(err.value)
    assert "\n" not in message and "size mismatch" not in message
    assert "do not fit" in message and "--features" in message
