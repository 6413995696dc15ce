from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from scripts.data import DatasetError, check_datalist, write_png
from scripts.data.prepare import main


def _dataset(root: Path, n: int = 2) -> Path:
    """n grey 8x6 images with labels holding values 0..2; returns the datalist path."""
    items = []
    for i in range(n):
        write_png(root / "img" / f"{i}.png", np.full((8, 6), 10 * i, np.uint8))
        label = np.zeros((8, 6), np.uint8)
        label[:2] = 1
        label[2:3] = 2  # per label: 30 pixels class 0, 12 class 1, 6 class 2
        write_png(root / "lab" / f"{i}.png", label)
        items.append({"image": f"img/{i}.png", "label": f"lab/{i}.png"})
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": items[:-1], "validation": items[-1:]}))
    return path


def _edit(path: Path, key: str, index: int, **item) -> None:
    content = json.loads(path.read_text())
    content[key][index].update(item)
    path.write_text(json.dumps(content))


def test_clean_dataset_summary(tmp_path):
    path = _dataset(tmp_path, n=3)
    summary = check_datalist(path, 3, in_channels=1)
    assert summary == {
        "counts": {"training": 2, "validation": 1},
        "image_channels": [1],
        "min_size": [8, 6],
        "max_size": [8, 6],
        "class_pixels": [3 * 30, 3 * 12, 3 * 6],
    }


def test_accepts_dict_and_item_list(tmp_path):
    path = _dataset(tmp_path)
    content = json.loads(path.read_text())
    assert check_datalist(content, 3, base_dir=tmp_path)["counts"] == {"training": 1, "validation": 1}
    items = [{k: str(tmp_path / v) for k, v in item.items()} for item in content["training"]]
    assert check_datalist(items, 3)["counts"] == {"items": 1}
    with pytest.raises(DatasetError, match="no training items"):
        check_datalist([], 3)


def test_missing_file(tmp_path):
    path = _dataset(tmp_path)
    (tmp_path / "lab" / "1.png").unlink()
    with pytest.raises(DatasetError, match=r"lab/1\.png: file not found; fix the path"):
        check_datalist(path, 3)


def test_corrupt_file(tmp_path):
    path = _dataset(tmp_path)
    (tmp_path / "img" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DatasetError, match=r"img/0\.png: cannot read this \.png file.*Replace or re-export"):
        check_datalist(path, 3)


def test_size_mismatch(tmp_path):
    path = _dataset(tmp_path)
    write_png(tmp_path / "lab" / "0.png", np.zeros((8, 7), np.uint8))
    with pytest.raises(DatasetError, match=r"lab/0\.png: label size \[8, 7\] differs from its image 0\.png \[8, 6\]"):
        check_datalist(path, 3)


def test_label_value_out_of_range(tmp_path):
    path = _dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"lab/0\.png: label values \[2\] outside 0\.\.1 \(num_classes=2\); fix the class map"):
        check_datalist(path, 2)


def test_wrong_channel_count(tmp_path):
    path = _dataset(tmp_path)
    write_png(tmp_path / "img" / "1.png", np.zeros((8, 6, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"img/1\.png: image has 3 channel\(s\) but in_channels=1"):
        check_datalist(path, 3, in_channels=1)
    assert check_datalist(path, 3)["image_channels"] == [1, 3]  # not checked without in_channels


def test_rgb_label(tmp_path):
    path = _dataset(tmp_path)
    write_png(tmp_path / "lab" / "1.png", np.zeros((8, 6, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"lab/1\.png: label has 3 channels; labels must be single-channel"):
        check_datalist(path, 3)


def test_empty_or_missing_lists(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"training": [], "validation": []}))
    with pytest.raises(DatasetError, match=r"(?s)d\.json: no training items.*the 'validation' list is empty"):
        check_datalist(path, 3)
    path.write_text(json.dumps({"validation": []}))
    with pytest.raises(DatasetError, match=r"d\.json: no 'training' list \(there must be at least one training item\)"):
        check_datalist(path, 3)
    with pytest.raises(DatasetError, match=r"nothere\.json: datalist file not found"):
        check_datalist(tmp_path / "nothere.json", 3)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"d\.json: not valid JSON"):
        check_datalist(path, 3)


def test_missing_label_key(tmp_path):
    path = _dataset(tmp_path)
    content = json.loads(path.read_text())
    del content["validation"][0]["label"]
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=r"validation\[0\] \(1\.png\) has no 'label'"):
        check_datalist(path, 3)
    assert check_datalist(path, 3, require_labels=False)["counts"]["validation"] == 1


def test_all_problems_in_one_error_with_cap(tmp_path):
    path = _dataset(tmp_path, n=3)
    (tmp_path / "img" / "0.png").unlink()
    write_png(tmp_path / "lab" / "1.png", np.full((8, 6), 9, np.uint8))
    _edit(path, "validation", 0, label="lab/none.png")
    with pytest.raises(DatasetError) as info:
        check_datalist(path, 3)
    assert len(info.value.problems) == 3
    message = str(info.value)
    assert "3 problem(s) found" in message
    assert all(s in message for s in ("img/0.png: file not found", "lab/1.png: label values [9]", "lab/none.png"))
    with pytest.raises(DatasetError, match=r"and 2 more problem\(s\)"):
        check_datalist(path, 3, max_listed=1)
    # raised in a loader worker process, it comes back pickled: the same problems and message
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.problems, str(again)) == (info.value.problems, message)


def test_bad_arguments(tmp_path):
    path = _dataset(tmp_path)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        check_datalist(path, 0)
    with pytest.raises(ValueError, match="in_channels must be a positive int or None"):
        check_datalist(path, 3, in_channels=1.5)
    with pytest.raises(TypeError, match="datalist must be a path, a dict or a list"):
        check_datalist(42, 3)


def test_command_line(tmp_path, capsys):
    path = _dataset(tmp_path)
    assert main(["check", "--datalist", str(path), "--num-classes", "3", "--in-channels", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"training": 1, "validation": 1}
    assert main(["check", "--datalist", str(path), "--num-classes", "2"]) == 1
    assert "label values [2] outside 0..1" in capsys.readouterr().err


def test_synthetic_dataset_is_clean(synthetic_dataset):
    summary = check_datalist(synthetic_dataset, 5, in_channels=1, keys=("training", "validation", "testing"))
    assert summary["counts"] == {"training": 4, "validation": 2, "testing": 2}
    assert sum(summary["class_pixels"]) == 8 * 64 * 64


def test_batched_key_with_mixed_sizes_is_reported(tmp_path):
    path = _dataset(tmp_path, n=3)
    write_png(tmp_path / "img" / "big.png", np.zeros((10, 12), np.uint8))
    write_png(tmp_path / "lab" / "big.png", np.zeros((10, 12), np.uint8))
    content = json.loads(path.read_text())
    content["validation"].append({"image": "img/big.png", "label": "lab/big.png"})
    content["training"].append({"image": "img/big.png", "label": "lab/big.png"})
    path.write_text(json.dumps(content))
    # batch size 1, or a key not named in batch_sizes (training: the trainer crops to patch_size): fine
    check_datalist(path, 3, batch_sizes={"validation": 1})
    check_datalist(path, 3)
    with pytest.raises(DatasetError) as err:
        check_datalist(path, 3, batch_sizes={"validation": 4, "training": 1})
    message = str(err.value)
    assert "'validation' images differ in size" in message and "big.png 10x12" in message and "2.png 8x6" in message
    assert "--val_batch_size 1" in message and "'training'" not in message


def test_alpha_png_and_values_above_intensity_max_are_reported(tmp_path):
    from PIL import Image
    import tifffile

    path = _dataset(tmp_path, n=3)
    Image.fromarray(np.zeros((8, 6, 4), np.uint8), mode="RGBA").save(tmp_path / "img" / "0.png")
    tifffile.imwrite(tmp_path / "img" / "16bit.tif", np.full((8, 6), 3000, np.uint16))
    _edit(path, "validation", 0, image="img/16bit.tif")
    check_datalist(path, 3, keys=["validation"])  # without intensity_max: not checked
    check_datalist(path, 3, keys=["validation"], intensity_max=4095)
    with pytest.raises(DatasetError) as err:
        check_datalist(path, 3, intensity_max=255)
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "0.png: image has an alpha" in message
    assert "16bit.tif: pixel values up to 3000 exceed intensity_max=255" in message and "--intensity_max to the data's range (e.g. 4095" in message


def _training_transforms():
    from monai.bundle import ConfigParser

    from bundle_runner import CONFIGS

    parser = ConfigParser(ConfigParser.load_config_files(str(CONFIGS / "train.json")))
    return parser.get_parsed_content("train#deterministic_transforms")


@pytest.mark.parametrize("layout", ["planar", "imagej"])
def test_images_the_training_loader_reads_differently_are_reported(tmp_path, layout):
    # case 1: a planar (3, H, W) RGB TIFF or an ImageJ TIFF passed the check (the project's reader understands it),
    # then MONAI's LoadImaged read it as (4, W, H) / (1, W, H, 3), collate failed in the loader thread and training
    # ran 0 iterations. The check now also reads every item through the training transforms.
    import tifffile

    path = _dataset(tmp_path, n=3)
    rgb = np.random.default_rng(0).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    for i in range(3):
        write_png(tmp_path / "img" / f"{i}.png", rgb)
    tifffile.imwrite(tmp_path / "img" / "odd.tif", np.moveaxis(rgb, -1, 0), imagej=layout == "imagej")
    _edit(path, "training", 1, image="img/odd.tif")
    check_datalist(path, 3, in_channels=3)  # the old check: passes
    with pytest.raises(DatasetError) as err:
        check_datalist(path, 3, in_channels=3, transform=_training_transforms())
    message = str(err.value)
    assert "1 problem(s)" in message and "odd.tif: the training loader reads this image as shape" in message
    assert "RGB (H, W, 3) PNG" in message
    assert check_datalist(_dataset(tmp_path / "clean", n=3), 3, in_channels=1, transform=_training_transforms())
    # the command line reads through the training transforms too (--no-loader: the reader only)
    assert main(["check", "--datalist", str(path), "--num-classes", "3", "--in-channels", "3"]) == 1
    assert main(["check", "--datalist", str(path), "--num-classes", "3", "--in-channels", "3", "--no-loader"]) == 0


def test_training_settings_are_checked_one_line_per_key():
    # case 7: --epochs abc -> "TypeError: can't multiply sequence by non-int", --batch_size 0 -> a raw torch error
    from scripts import ConfigError, check_training_settings

    with pytest.raises(ConfigError) as err:
        check_training_settings(epochs="abc", batch_size=0, learning_rate="abc", patch_size=[64], features=[4, 8, 16],
                                time_limit_s=None, val_batch_size=2, resume="yes")
    lines = str(err.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == ["--epochs", "--batch_size", "--learning_rate", "--patch_size", "--resume"]
    assert "got 'abc'; expected an integer >= 1" in lines[0] and "a list of 2 integers" in lines[3]
    assert check_training_settings(epochs=1, learning_rate=1e-3, time_limit_s=60) == {"epochs": 1, "learning_rate": 1e-3, "time_limit_s": 60}
    with pytest.raises(ValueError):
        check_training_settings(epoch=3)  # a misspelt key is not silently skipped
