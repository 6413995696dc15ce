from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from scripts.data import (
    DROSOPHILA_VALUE_MAP,
    check_datalist,
    crop_grid,
    map_label_values,
    prepare_drosophila,
    read_image,
    section_folds,
    write_png,
)
from scripts.data.prepare import main

KEYS = ("training", "validation", "testing")


def _section(item: dict) -> int:
    return int(re.search(r"sec_(\d+)", item["image"]).group(1))


@pytest.fixture(scope="module")
def prepared(drosophila_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("drosophila")
    assert main(["drosophila", "--src", str(drosophila_dir), "--out", str(out)]) == 0
    return out


@pytest.mark.realdata
def test_layout_and_counts(prepared):
    assert len(list((prepared / "crops" / "images").glob("sec_*_r*_c*.png"))) == 320
    assert len(list((prepared / "crops" / "labels").glob("*.png"))) == 320
    assert len(list((prepared / "sections" / "images").glob("sec_*.png"))) == 20
    assert len(list((prepared / "unlabelled").glob("stack2_*.png"))) == 20
    assert read_image(prepared / "sections" / "images" / "sec_00.png").shape == (1024, 1024)
    classes = json.loads((prepared / "classes.json").read_text())["classes"]
    assert [c["name"] for c in classes] == ["intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"]
    assert classes[1]["source_grey_values"] == [0, 32, 64, 96, 128]
    readme = (prepared / "README.txt").read_text()
    assert "CC BY-NC-SA 3.0" in readme and "10.6084/m9.figshare.856713" in readme


@pytest.mark.realdata
def test_folds_split_by_section(prepared):
    test_count: dict[str, int] = {}
    val_count: dict[str, int] = {}
    for k in range(5):
        dl = json.loads((prepared / f"datalist_fold{k}.json").read_text())
        assert [len(dl[key]) for key in KEYS] == [192, 64, 64]
        sections = {key: {_section(i) for i in dl[key]} for key in KEYS}
        assert [len(sections[key]) for key in KEYS] == [12, 4, 4]
        assert not sections["training"] & sections["validation"]
        assert not sections["training"] & sections["testing"]
        assert not sections["validation"] & sections["testing"]
        # groups of 4 consecutive sections: test = group k, validation = group (k + 1) % 5
        assert sections["testing"] == set(range(4 * k, 4 * k + 4))
        assert sections["validation"] == set(range(4 * ((k + 1) % 5), 4 * ((k + 1) % 5) + 4))
        for key in KEYS:  # the whole sections of each split (random patches: experiments/recipe/section_patches.json)
            assert sorted(_section(i) for i in dl[f"{key}_sections"]) == sorted(sections[key])
            assert all(i["image"].startswith("sections/images/") for i in dl[f"{key}_sections"])
        assert len(dl["unlabelled"]) == 20 and "label" not in dl["unlabelled"][0]
        for item in dl["testing"]:
            test_count[item["image"]] = test_count.get(item["image"], 0) + 1
        for item in dl["validation"]:
            val_count[item["image"]] = val_count.get(item["image"], 0) + 1
    assert len(test_count) == 320 and set(test_count.values()) == {1}
    assert len(val_count) == 320 and set(val_count.values()) == {1}


@pytest.mark.realdata
def test_label_mapping_and_crop_content(prepared, drosophila_dir):
    raw_label = read_image(drosophila_dir / "stack1" / "labels" / "labels00000005.png")
    label = read_image(prepared / "sections" / "labels" / "sec_05.png")
    assert label.dtype == np.uint8 and set(np.unique(label)) <= set(range(5))
    y, x = np.argwhere(raw_label == 191)[0]
    assert label[y, x] == 3  # mitochondria
    lut = np.zeros(256, np.uint8)
    for value, index in DROSOPHILA_VALUE_MAP.items():
        lut[value] = index
    np.testing.assert_array_equal(label, lut[raw_label])
    raw = tifffile.imread(drosophila_dir / "stack1" / "raw" / "05.tif")
    np.testing.assert_array_equal(read_image(prepared / "sections" / "images" / "sec_05.png"), raw)
    np.testing.assert_array_equal(read_image(prepared / "crops" / "images" / "sec_05_r2_c1.png"), raw[512:768, 256:512])
    np.testing.assert_array_equal(
        read_image(prepared / "crops" / "labels" / "sec_05_r2_c1.png"), lut[raw_label][512:768, 256:512]
    )


@pytest.mark.realdata
def test_idempotent_and_checks_clean(prepared, drosophila_dir):
    fold = prepared / "datalist_fold0.json"
    before = fold.read_bytes()
    stamp = (prepared / "crops" / "images" / "sec_00_r0_c0.png").stat().st_mtime_ns
    prepare_drosophila(drosophila_dir, prepared)
    assert fold.read_bytes() == before
    assert (prepared / "crops" / "images" / "sec_00_r0_c0.png").stat().st_mtime_ns == stamp
    summary = check_datalist(fold, 5, in_channels=1, keys=KEYS + ("testing_sections",))
    assert summary["counts"] == {"training": 192, "validation": 64, "testing": 64, "testing_sections": 4}
    assert all(n > 0 for n in summary["class_pixels"])


# ---- small fake datasets: no real data needed ----


def _fake(root: Path, n: int = 6, size: int = 32, bad_value: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    values = np.array(sorted(DROSOPHILA_VALUE_MAP), np.uint8)
    for i in range(n):
        (root / "stack1" / "raw").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "stack1" / "raw" / f"{i:02d}.tif", rng.integers(0, 256, (size, size), dtype=np.uint8))
        label = values[rng.integers(0, len(values), (size, size))]
        if bad_value is not None and i == 1:
            label[3, 4] = bad_value
        write_png(root / "stack1" / "labels" / f"labels{i:08d}.png", label)
    return root


def test_fake_dataset_three_folds(tmp_path):
    paths = prepare_drosophila(_fake(tmp_path / "src"), tmp_path / "out", crop_size=16, num_folds=3)
    assert [p.name for p in paths] == ["datalist_fold0.json", "datalist_fold1.json", "datalist_fold2.json"]
    dl = json.loads(paths[2].read_text())
    # 6 sections in 3 groups {0,1} {2,3} {4,5}; fold 2: test {4,5}, validation {0,1}; 4 crops per section
    assert {_section(i) for i in dl["testing"]} == {4, 5}
    assert {_section(i) for i in dl["validation"]} == {0, 1}
    assert [len(dl[k]) for k in KEYS] == [8, 8, 8]
    assert dl["unlabelled"] == []  # no stack2 in this source


def test_manifest_records_checksums_and_split(tmp_path):
    import hashlib

    from scripts.data.drosophila import verify_manifest

    src, out = _fake(tmp_path / "src"), tmp_path / "out"
    prepare_drosophila(src, out, crop_size=16, num_folds=3)
    manifest = json.loads((out / "manifest.json").read_text())
    sources = sorted((src / "stack1").rglob("*.*"))
    assert {s["path"] for s in manifest["sources"]} == {str(p.resolve()) for p in sources}
    for s in manifest["sources"]:
        assert s["sha256"] == hashlib.sha256(Path(s["path"]).read_bytes()).hexdigest()
    assert manifest["folds"][2] == {"fold": 2, "training": [2, 3], "validation": [0, 1], "testing": [4, 5]}
    # every file written but the manifest: 6 sections x 4 crops x 2, 6 sections x 2, 3 datalists, classes, README
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["outputs"]) == written and len(written) == 48 + 12 + 3 + 2
    for rel, digest in manifest["outputs"].items():
        assert digest == hashlib.sha256((out / rel).read_bytes()).hexdigest()
    assert verify_manifest(out) == []

    # a damaged output is found, and preparing again repairs it
    crop = out / "crops" / "labels" / "sec_03_r1_c0.png"
    good = crop.read_bytes()
    crop.write_bytes(b"broken")
    assert verify_manifest(out) == ["crops/labels/sec_03_r1_c0.png"]
    prepare_drosophila(src, out, crop_size=16, num_folds=3)
    assert crop.read_bytes() == good and verify_manifest(out) == []

    # a changed source changes the manifest (and the preparation is redone)
    tifffile.imwrite(src / "stack1" / "raw" / "00.tif", np.zeros((32, 32), np.uint8))
    prepare_drosophila(src, out, crop_size=16, num_folds=3)
    assert json.loads((out / "manifest.json").read_text())["sources"] != manifest["sources"]
    assert not read_image(out / "sections" / "images" / "sec_00.png").any()


def test_unmapped_grey_value_names_file_and_value(tmp_path):
    src = _fake(tmp_path / "src", bad_value=100)
    with pytest.raises(ValueError, match=r"labels00000001\.png: label values \[100\] are not in the class map"):
        prepare_drosophila(src, tmp_path / "out", crop_size=16, num_folds=3)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"stack1/raw: folder not found"):
        prepare_drosophila(tmp_path, tmp_path / "out")
    src = _fake(tmp_path / "src", n=3)
    (src / "stack1" / "labels" / "labels00000002.png").unlink()
    with pytest.raises(ValueError, match=r"sections without a raw/label partner: .*02\.tif"):
        prepare_drosophila(src, tmp_path / "out", num_folds=3)
    assert main(["drosophila", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1


@pytest.mark.parametrize(
    "shape,crop,expected",
    [
        ((8, 8), 4, [(0, 0, 0, 0), (0, 1, 0, 4), (1, 0, 4, 0), (1, 1, 4, 4)]),
        ((10, 7), 4, [(0, 0, 0, 0), (0, 1, 0, 3), (1, 0, 4, 0), (1, 1, 4, 3), (2, 0, 6, 0), (2, 1, 6, 3)]),
        ((3, 8), 4, []),
    ],
)
def test_crop_grid(shape, crop, expected):
    assert crop_grid(*shape, crop) == expected


def test_section_folds():
    folds = section_folds(list(range(20)), 5)
    assert folds[4] == {"training": list(range(4, 16)), "validation": [0, 1, 2, 3], "testing": [16, 17, 18, 19]}
    with pytest.raises(ValueError, match="at least 3"):
        section_folds(list(range(20)), 2)
    with pytest.raises(ValueError, match="cannot be split"):
        section_folds([0, 1], 3)


def test_map_label_values():
    out = map_label_values(np.array([[255, 0], [191, 223]]), DROSOPHILA_VALUE_MAP)
    np.testing.assert_array_equal(out, [[0, 1], [3, 4]])
    with pytest.raises(ValueError, match=r"x\.png: label values \[7, 300\]"):
        map_label_values(np.array([[7, 300, 0]]), DROSOPHILA_VALUE_MAP, "x.png")
