from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from scripts.data import check_datalist, pair_files, parse_class_map, prepare_folders, read_image, write_png
from scripts.data.prepare import main

GREYS = np.array([0, 128, 255], np.uint8)  # raw label values, class map "0:0,128:1,255:2"


def _label(rng, shape) -> np.ndarray:
    return GREYS[rng.integers(0, 3, shape)]


def _make(root: Path, n: int = 5, shape=(40, 36)) -> tuple[Path, Path, dict]:
    """n image/label pairs in mixed formats: grey PNG, RGB PNG, 16-bit TIFF, RGB TIFF, NIfTI."""
    rng = np.random.default_rng(1)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    truth = {}
    for i in range(n):
        label = _label(rng, shape)
        kind = i % 5
        if kind == 0:
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            write_png(images / f"img{i}.png", image)
            write_png(labels / f"img{i}.png", label)
        elif kind == 1:
            image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            write_png(images / f"img{i}.png", image)
            tifffile.imwrite(labels / f"img{i}.tif", label)
        elif kind == 2:
            image = rng.integers(0, 4096, shape, dtype=np.uint16)
            tifffile.imwrite(images / f"img{i}.tiff", image)
            write_png(labels / f"img{i}.png", label)
        elif kind == 3:
            image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            tifffile.imwrite(images / f"img{i}.tif", image)
            write_png(labels / f"img{i}.png", np.stack([label] * 3, -1))  # grey label saved as RGB
        else:
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            nib.save(nib.Nifti1Image(image.T, np.eye(4)), str(images / f"img{i}.nii.gz"))
            nib.save(nib.Nifti1Image(label.T, np.eye(4)), str(labels / f"img{i}.nii.gz"))
        truth[f"img{i}"] = (image, label)
    return images, labels, truth


def test_parse_class_map():
    assert parse_class_map("0:0, 128:1,255:2") == {0: 0, 128: 1, 255: 2}
    assert parse_class_map({1: 0, 2: 0}) == {1: 0, 2: 0}
    for bad, match in [("0-1", "value:index"), ("a:1", "two integers"), ("1:0,1:2", "twice"), ("1:300", "0..255"), ("", "empty")]:
        with pytest.raises(ValueError, match=match):
            parse_class_map(bad)


def test_prepare_whole_images(tmp_path):
    images, labels, truth = _make(tmp_path / "in")
    out = tmp_path / "out"
    datalist_path = prepare_folders(images, labels, out, "0:0,128:1,255:2", val_fraction=0.2, test_fraction=0.2, seed=0)
    dl = json.loads(datalist_path.read_text())
    assert [len(dl[k]) for k in ("training", "validation", "testing")] == [3, 1, 1]
    for key in ("training", "validation", "testing"):  # no crops: the items are the whole images
        assert dl[f"{key}_sections"] == dl[key]
    stems = [Path(i["image"]).stem for k in ("training", "validation", "testing") for i in dl[k]]
    assert sorted(stems) == sorted(truth)
    lut = {0: 0, 128: 1, 255: 2}
    for stem, (image, label) in truth.items():
        out_image = read_image(out / "sections" / "images" / f"{stem}.png")
        out_label = read_image(out / "sections" / "labels" / f"{stem}.png")
        np.testing.assert_array_equal(out_label, np.vectorize(lut.get)(label))
        if image.dtype == np.uint8:
            np.testing.assert_array_equal(out_image, image)  # grey, RGB, NIfTI orientation all preserved
        else:  # 16-bit: rescaled from its min..max to 0..255
            assert out_image.dtype == np.uint8 and out_image.min() == 0 and out_image.max() == 255
            assert np.corrcoef(out_image.ravel(), image.ravel())[0, 1] > 0.999
    classes = json.loads((out / "classes.json").read_text())["classes"]
    assert [(c["index"], c["source_values"]) for c in classes] == [(0, [0]), (1, [128]), (2, [255])]
    assert check_datalist(datalist_path, 3)["image_channels"] == [1, 3]
    # same inputs and seed: same split, same files
    before = datalist_path.read_bytes()
    prepare_folders(images, labels, out, "0:0,128:1,255:2", seed=0)
    assert datalist_path.read_bytes() == before


def test_prepare_with_crops_and_seeded_split(tmp_path):
    images, labels, _ = _make(tmp_path / "in")
    out = tmp_path / "out"
    assert main([
        "folders", "--images", str(images), "--labels", str(labels), "--out", str(out),
        "--class-map", "0:0,128:1,255:2", "--crop", "16", "--seed", "3", "--class-names", "a,b,c",
    ]) == 0
    dl = json.loads((out / "datalist.json").read_text())
    # a 40x36 image gives rows at 0, 16, 24 and columns at 0, 16, 20: 9 crops per image
    assert [len(dl[k]) for k in ("training", "validation", "testing")] == [27, 9, 9]
    first = read_image(out / dl["testing"][0]["image"])
    assert first.shape[:2] == (16, 16)
    test_stem = Path(dl["testing_sections"][0]["image"]).stem
    assert all(Path(i["image"]).name.startswith(test_stem + "_r") for i in dl["testing"])  # split by image
    whole = read_image(out / "sections" / "images" / f"{test_stem}.png")
    np.testing.assert_array_equal(read_image(out / "crops" / "images" / f"{test_stem}_r2_c1.png"), whole[24:40, 16:32])
    assert [c["name"] for c in json.loads((out / "classes.json").read_text())["classes"]] == ["a", "b", "c"]
    other = prepare_folders(images, labels, tmp_path / "out2", "0:0,128:1,255:2", crop=16, seed=4)
    assert json.loads(other.read_text())["testing_sections"] != dl["testing_sections"]


def test_unpaired_files_are_listed(tmp_path):
    images, labels, _ = _make(tmp_path / "in", n=3)
    write_png(images / "extra.png", np.zeros((8, 8), np.uint8))
    write_png(labels / "lonely.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"(?s)images without a label .*extra\.png.*labels without an image .*lonely\.png"):
        pair_files(images, labels)


def test_unmapped_label_values_name_the_file(tmp_path):
    images, labels, _ = _make(tmp_path / "in", n=3)
    with pytest.raises(ValueError, match=r"img\d\.(png|tif|nii\.gz): label values \[255\] are not in the class map"):
        prepare_folders(images, labels, tmp_path / "out", "0:0,128:1", val_fraction=0, test_fraction=0)
    assert main([
        "folders", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "o"), "--class-map", "0:0",
    ]) == 1


def test_other_input_errors(tmp_path):
    images, labels, _ = _make(tmp_path / "in", n=2)
    with pytest.raises(ValueError, match="2 image.*cannot be split"):
        prepare_folders(images, labels, tmp_path / "out", "0:0,128:1,255:2", val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        prepare_folders(images, labels, tmp_path / "out", "0:0,128:1,255:2", val_fraction=1.0)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        prepare_folders(images, labels, tmp_path / "out", "0:0,128:1,255:2", class_names=["a", "b"])
    with pytest.raises(FileNotFoundError, match="nowhere: folder not found"):
        pair_files(tmp_path / "nowhere", labels)
    write_png(images / "img0.png", np.zeros((10, 10), np.uint8))  # now smaller than its label
    with pytest.raises(ValueError, match=r"img0\.png: label size \[40, 36\] differs from its image"):
        prepare_folders(images, labels, tmp_path / "out", "0:0,128:1,255:2", val_fraction=0, test_fraction=0)
    write_png(images / "img0.png", np.zeros((40, 36), np.uint8))
    colour = np.zeros((40, 36, 3), np.uint8)
    colour[..., 0] = 255
    write_png(labels / "img1.png", colour)
    (labels / "img1.tif").unlink()
    with pytest.raises(ValueError, match=r"img1\.png: colour-coded \(RGB\) label"):
        prepare_folders(images, labels, tmp_path / "out", "0:0,128:1,255:2", val_fraction=0, test_fraction=0)
    (tmp_path / "dup").mkdir()
    write_png(tmp_path / "dup" / "a.png", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "dup" / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="a.png and a.tif have the same stem"):
        pair_files(tmp_path / "dup", labels)


def test_synthetic_command(tmp_path):
    assert main(["synthetic", "--out", str(tmp_path), "--num-train", "2", "--num-val", "1", "--num-test", "1", "--size", "48"]) == 0
    dl = json.loads((tmp_path / "datalist.json").read_text())
    assert [len(dl[k]) for k in ("training", "validation", "testing")] == [2, 1, 1]
    assert read_image(tmp_path / dl["testing"][0]["image"]).shape == (48, 48)
