from __future__ import annotations

import json
import time

import numpy as np
import pytest

from scripts.data import NUM_CLASSES, ensure_synthetic_dataset, generate_dataset, make_sample, read_image
from scripts.data.classes import GLIA, INTRACELLULAR, MEMBRANE, MITOCHONDRIA, SYNAPSE


def test_deterministic_by_seed():
    a_img, a_lab = make_sample(96, seed=3)
    b_img, b_lab = make_sample(96, seed=3)
    c_img, c_lab = make_sample(96, seed=4)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_lab, c_lab)
    assert not np.array_equal(a_img, c_img)


@pytest.mark.parametrize("size,shape", [(64, (64, 64)), ((48, 80), (48, 80))])
def test_shapes_and_dtypes(size, shape):
    image, label = make_sample(size, seed=0)
    assert image.shape == shape and label.shape == shape
    assert image.dtype == np.uint8 and label.dtype == np.uint8
    assert label.max() < NUM_CLASSES


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_classes_present_and_plausible(seed):
    image, label = make_sample(256, seed=seed)
    fractions = np.bincount(label.ravel(), minlength=NUM_CLASSES) / label.size
    assert np.all(fractions > 0), fractions  # every class drawn
    assert fractions[INTRACELLULAR] > 0.5  # cytoplasm dominates, as in ssTEM
    assert 0.05 < fractions[MEMBRANE] < 0.35
    assert fractions[SYNAPSE] < 0.02  # synapses are small
    mean = {c: image[label == c].mean() for c in range(NUM_CLASSES)}
    # EM contrast: bright cytoplasm, dark membranes, glia and mitochondria in between, synapses darkest
    assert mean[INTRACELLULAR] > mean[GLIA] > mean[MEMBRANE] > mean[SYNAPSE]
    assert mean[INTRACELLULAR] > mean[MITOCHONDRIA] > mean[SYNAPSE]
    assert image.std() > 20  # texture and noise, not flat regions


def test_speed():
    # CPU time of this process (not wall time), so that other jobs on a shared machine do not fail the test
    make_sample(256, seed=0)  # warm up imports/caches
    best = min(_timed(seed) for seed in (1, 2, 3))
    assert best < 0.5, f"256x256 sample took {best:.3f} s of CPU time"


def _timed(seed: int) -> float:
    t = time.process_time()
    make_sample(256, seed=seed)
    return time.process_time() - t


@pytest.mark.parametrize(
    "size,error,match",
    [(16, ValueError, "at least 32"), ("big", TypeError, "size must be an int"), ((64, 64, 3), TypeError, "pair")],
)
def test_bad_size(size, error, match):
    with pytest.raises(error, match=match):
        make_sample(size)


def test_generate_dataset(synthetic_dataset):
    root = synthetic_dataset.parent
    datalist = json.loads(synthetic_dataset.read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "testing")] == [4, 2, 2]
    assert datalist["training"][0] == {"image": "images/train_000.png", "label": "labels/train_000.png"}
    assert json.loads((root / "manifest.json").read_text())["size"] == [64, 64]
    names = {item["image"] for k in ("training", "validation", "testing") for item in datalist[k]}
    assert len(names) == 8
    label = read_image(root / datalist["validation"][1]["label"])
    assert label.shape == (64, 64) and label.max() < NUM_CLASSES


def test_generate_dataset_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="num_train must be at least 1"):
        generate_dataset(tmp_path, num_train=0)
    with pytest.raises(ValueError, match="num_val must be a non-negative int"):
        generate_dataset(tmp_path, num_train=1, num_val=-1)


def test_ensure_regenerates_only_when_needed(tmp_path):
    params = dict(num_train=2, num_val=1, num_test=0, size=48, seed=5)
    path = ensure_synthetic_dataset(tmp_path, **params)
    first = tmp_path / "images" / "train_000.png"
    before = first.read_bytes()
    stamp = first.stat().st_mtime_ns
    assert ensure_synthetic_dataset(tmp_path, **params) == path
    assert first.stat().st_mtime_ns == stamp  # untouched

    (tmp_path / "labels" / "val_000.png").unlink()  # a missing file triggers regeneration
    ensure_synthetic_dataset(tmp_path, **params)
    assert (tmp_path / "labels" / "val_000.png").is_file()

    ensure_synthetic_dataset(tmp_path, **{**params, "num_train": 3})  # new parameters: regenerated
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert len(datalist["training"]) == 3
    assert first.read_bytes() == before  # sample 0 does not depend on the number of samples
