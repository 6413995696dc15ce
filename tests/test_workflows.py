"""The three workflows end to end through ``python -m monai.bundle run``, on tiny synthetic data, CPU.

One module-scoped training run feeds evaluation and inference; running from inside ``bundle/``, the default run id,
resuming, and the integrity check before training are covered too.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bundle_runner import BUNDLE, TINY, TINY_INFERENCE, config_arg, run_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle_root")
    proc = run_bundle(config_arg("train.json"), "training", {**TINY, "bundle_root": str(root)})
    return root, proc


def test_training_writes_checkpoints_and_logs(trained):
    root, proc = trained
    assert (root / "models" / "model.pt").is_file(), proc.stdout[-3000:]
    state = torch.load(root / "models" / "model.pt", map_location="cpu")
    assert set(state) == {"model", "model_info"}, "model.pt: the network's state_dict and what built it"
    assert any(k.endswith("weight") for k in state["model"])
    assert state["model_info"]["network"]["features"] == TINY["features"]
    # the training images' intensity statistics (issue 23): their median 0.5/99.5 percentiles on the 0..1 input
    items = json.loads((root / "data" / "synthetic" / "datalist.json").read_text())["training"]
    per_image = [np.percentile(np.asarray(Image.open(root / "data" / "synthetic" / i["image"])) / 255.0, (0.5, 99.5))
                 for i in items]
    assert state["model_info"]["intensity_statistics"] == {
        "percentiles": [0.5, 99.5], "range": pytest.approx(list(np.median(per_image, axis=0))), "dtypes": ["uint8"],
        "images": TINY["synthetic#num_train"]}
    resumable = list((root / "models").glob("checkpoint_epoch=*.pt"))
    assert [p.name for p in resumable] == ["checkpoint_epoch=2.pt"]
    ckpt = torch.load(resumable[0], map_location="cpu", weights_only=False)
    assert {"model_info", "model", "optimizer", "trainer", "lr_scheduler", "best_model_saver", "early_stop",
            "random_states", "time_budget"} <= set(ckpt)
    assert ckpt["time_budget"] == {"used_s": 0.0, "epoch_s": None}  # no --time_budget_s
    assert ckpt["model_info"]["intensity_statistics"] == state["model_info"]["intensity_statistics"]
    assert ckpt["trainer"]["iteration"] == 4  # 2 epochs x 2 iterations
    assert list((root / "logs").glob("events.out.tfevents.*")), "TensorBoard events expected"
    assert "val_mean_iou" in proc.stdout + proc.stderr
    curves = np.asarray(Image.open(root / "logs" / "curves.png"))
    assert curves.ndim == 3 and curves.shape[0] > 100, "training curves picture expected after training"


def test_resume_continues_from_last_epoch(trained, tmp_path):
    # (exactness of resume, case 4, and kills during checkpoint writes, case 2: tests/test_fault_injection.py)
    root, _ = trained
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    proc = run_bundle(config_arg("train.json"), "training", {**TINY, "bundle_root": str(copy), "resume": True, "epochs": 3})
    out = proc.stdout + proc.stderr
    assert {p.name for p in (copy / "models").glob("checkpoint_epoch=*.pt")} == {"checkpoint_epoch=3.pt"}
    assert "Epoch[1]" not in out, "a resumed run must not start again from epoch 1"
    assert "Epoch[3]" in out


def test_evaluate_writes_metrics(trained):
    root, _ = trained
    proc = run_bundle(config_arg("train.json", "evaluate.json"), None, {**TINY, "bundle_root": str(root), "save_predictions": True})
    report = json.loads((root / "eval" / "metrics.json").read_text())
    assert report["num_images"] == 2
    assert set(report["per_class"]) == {"intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"}
    assert 0.0 <= report["mean_iou"] <= 1.0 and 0.0 <= report["per_image_mean_iou"] <= 1.0
    assert sum(map(sum, report["confusion_matrix"])) == 2 * 64 * 64
    assert (root / "eval" / "metrics.csv").is_file() and (root / "eval" / "metrics_per_image.csv").is_file()
    assert "IoU (per-image mean)" in proc.stdout + proc.stderr
    preds = sorted((root / "eval" / "predictions").glob("*.png"))
    assert len(preds) == 2 and np.asarray(Image.open(preds[0])).shape == (64, 64)


def test_inference_writes_label_and_probability_maps(trained, tmp_path):
    root, _ = trained
    # any-size input: a non-square image larger than the tile
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8)).save(src / "odd.png")
    out = tmp_path / "out"
    run_bundle(config_arg("inference.json"), None, {"bundle_root": str(root), "features": TINY["features"],
               "patch_size": TINY["patch_size"], "input": str(src), "output_dir": str(out),
               "probability_dtype": "float32"})  # exact maps (the uint8 default: tests/test_inference_folders.py)
    seg = np.asarray(Image.open(out / "odd_seg.png"))
    assert seg.shape == (70, 90) and seg.dtype == np.uint8 and seg.max() < 5
    import tifffile

    prob = tifffile.imread(out / "odd_prob.tif")
    assert prob.shape == (5, 70, 90)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-4)
    assert np.array_equal(prob.argmax(0), seg), "label map must be the argmax of the saved probabilities"
    # pictures are on by default: one folder per image, each picture at the image's size, a gallery linking them
    pictures = out / "pictures"
    for kind in ("input", "overlay", "confidence", "difficult", "refined", "features"):
        assert np.asarray(Image.open(pictures / "odd" / f"{kind}.png")).shape[:2] == (70, 90), kind
    html = (pictures / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert (pictures / ref).is_file(), f"gallery references a missing file: {ref}"


def test_inference_options_refined_map_sliding_window_no_pictures(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "out"
    run_bundle(config_arg("inference.json"), None, {**TINY_INFERENCE, "bundle_root": str(root), "output_dir": str(out),
               "pictures": False, "save_refined": True, "save_probabilities": False, "label_ext": ".nii.gz",
               "inferer": "@inferers#sliding_window"})
    segs = sorted(out.glob("*_seg.nii.gz"))
    refined = sorted(out.glob("*_refined.nii.gz"))
    assert len(segs) == len(refined) == 2, sorted(p.name for p in out.iterdir())
    assert not (out / "pictures").exists() and not list(out.glob("*_prob.tif"))
    import nibabel

    seg, ref = (np.asarray(nibabel.load(p).dataobj) for p in (segs[0], refined[0]))
    assert seg.shape == ref.shape == (64, 64) and ref.max() < 5


def test_runs_from_inside_bundle_with_default_run_id(tmp_path):
    overrides = {**TINY, "epochs": 1, "bundle_root": str(tmp_path)}
    run_bundle("configs/train.json", None, overrides, cwd=BUNDLE)
    assert (tmp_path / "models" / "model.pt").is_file()


def test_integrity_check_runs_before_training(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "images" / "a.png")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(data / "labels" / "a.png")
    datalist = {"training": [{"image": "images/a.png", "label": "labels/a.png"}], "validation": [{"image": "images/a.png", "label": "labels/a.png"}]}
    (data / "datalist.json").write_text(json.dumps(datalist))
    proc = run_bundle(config_arg("train.json"), None, {**TINY, "bundle_root": str(tmp_path), "datalist_file": str(data / "datalist.json")}, check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "labels/a.png" in err and "7" in err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir()), "nothing trained"
    # case 8: the message was buried in a ~58-line traceback ending in "Failed to evaluate ConfigExpression"
    assert "Traceback" not in err and "Failed to evaluate" not in err
    assert proc.stderr.rstrip().splitlines()[-1].endswith("set num_classes."), "the message is the last thing printed"


def test_bad_overrides_get_one_line_each_and_nothing_runs(tmp_path):
    # case 7: --epochs abc -> "TypeError: can't multiply sequence by non-int", --batch_size 0, --learning_rate abc ->
    # raw MONAI/torch messages; case 1: --patch_size "[64]" trained 0 iterations and exited 0
    overrides = {**TINY, "bundle_root": str(tmp_path), "epochs": "abc", "batch_size": 0, "learning_rate": "abc",
                 "patch_size": "[64]"}
    proc = run_bundle(config_arg("train.json"), "training", overrides, check=False)
    assert proc.returncode == 1
    tail = proc.stderr.rstrip().splitlines()[-5:]
    assert tail[0] == "ERROR: bad training setting(s):"
    assert [line.split(":")[0].strip() for line in tail[1:]] == ["--epochs", "--batch_size", "--learning_rate", "--patch_size"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "data").exists(), "checked before any work"
    debug = run_bundle(config_arg("train.json"), "training", overrides, check=False, env={"CELLSEG_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_second_run_into_a_folder_refuses_and_overwrite_archives(trained, tmp_path):
    # case 5: a second run silently overwrote model.pt, kept the first run's checkpoint_epoch=N.pt (a later resume
    # continued the first run) and curves.png plotted both runs' event files
    root, _ = trained
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    first = sorted(p.name for p in (copy / "models").iterdir())
    proc = run_bundle(config_arg("train.json"), "training", {**TINY, "bundle_root": str(copy)}, check=False)
    assert proc.returncode == 1
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("ERROR: ") and "--resume True" in last and "--overwrite True" in last
    assert sorted(p.name for p in (copy / "models").iterdir()) == first, "nothing touched"
    run_bundle(config_arg("train.json"), "training", {**TINY, "bundle_root": str(copy), "epochs": 1, "overwrite": True})
    assert sorted(p.name for p in (copy / "models").iterdir()) == ["checkpoint_epoch=1.pt", "model.pt"]
    (archive,) = (copy / "archive").iterdir()
    assert sorted(p.name for p in (archive / "models").iterdir()) == first
    old = {p.name for p in (archive / "logs").glob("events.out.tfevents.*")}
    new = {p.name for p in (copy / "logs").glob("events.out.tfevents.*")}
    assert old and new and not old & new
    assert len({name.split(".")[-2] for name in new}) == 1, "TensorBoard shows one run (one process's event files)"


def test_an_overwrite_run_that_fails_before_its_first_step_leaves_the_old_run_in_place(trained, tmp_path):
    """``--overwrite True`` whose run fails at once (here: X-Net's three losses for a U-Net, the MONAI Label /train
    failure of v0.7.1): the previous models/ and logs/ stay where they are, nothing is archived."""
    root, _ = trained
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    before = {p.name: p.read_bytes() for p in (copy / "models").iterdir()}
    proc = run_bundle(config_arg("train.json"), "training", {**TINY, "bundle_root": str(copy), "epochs": 1,
                      "overwrite": True, "network_def": "@networks#unet"}, check=False)
    assert proc.returncode == 1 and "3 loss(es)" in proc.stderr, proc.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in (copy / "models").iterdir()} == before, "the old run is intact"
    assert not (copy / "archive").exists() or not any((copy / "archive").iterdir())


def test_inference_for_another_class_count_fails_before_loading(tmp_path):
    # the default refinement names class 3 (mitochondria): a 3-class config must say which keys to set
    proc = run_bundle(config_arg("inference.json"), None, {**TINY_INFERENCE, "bundle_root": str(tmp_path), "num_classes": 3,
                      "class_names": ["a", "b", "c"], "output_dir": str(tmp_path / "out")}, check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "class indices < num_classes (3)" in err and "--refine_priorities" in err
    assert "Traceback" not in err and "Failed to evaluate" not in err  # a user error: one message
    assert not (tmp_path / "out").exists()


def test_valid_padding_unet_trains_on_patches(tmp_path):
    # the trainer mirror pads each patch (MirrorPaddedInferer) so the valid U-Net's output covers its label
    overrides = {**TINY, "epochs": 1, "bundle_root": str(tmp_path), "padding": "valid"}
    proc = run_bundle(config_arg("train.json", "experiments/paper/unet_sce_iou.json"), "training", overrides)
    assert (tmp_path / "models" / "model.pt").is_file()
    assert "val_mean_iou" in proc.stdout + proc.stderr


def _mixed_size_dataset(root, val_sizes):
    rng = np.random.default_rng(0)
    items = {"training": [], "validation": []}
    for key, sizes in (("training", [(50, 70), (64, 64), (90, 40)]), ("validation", val_sizes)):
        for i, (h, w) in enumerate(sizes):
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "labels").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(root / "images" / f"{key}{i}.png")
            Image.fromarray(rng.integers(0, 5, (h, w), dtype=np.uint8)).save(root / "labels" / f"{key}{i}.png")
            items[key].append({"image": f"images/{key}{i}.png", "label": f"labels/{key}{i}.png"})
    (root / "datalist.json").write_text(json.dumps(items))
    return root / "datalist.json"


def test_training_images_of_different_sizes(tmp_path):
    # training: mirror padded to and randomly cropped at patch_size, so batches stack; validation batched by 2 of
    # one size works, of two sizes is refused before training with the fix
    datalist = _mixed_size_dataset(tmp_path / "data", [(64, 64), (64, 64)])
    overrides = {**TINY, "epochs": 1, "bundle_root": str(tmp_path / "run"), "datalist_file": str(datalist)}
    run_bundle(config_arg("train.json", "experiments/paper/unet_sce_iou.json"), "training", overrides)
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    datalist = _mixed_size_dataset(tmp_path / "data2", [(64, 64), (48, 80)])
    proc = run_bundle(config_arg("train.json"), "training", {**overrides, "datalist_file": str(datalist),
                      "bundle_root": str(tmp_path / "run2")}, check=False)
    assert proc.returncode != 0 and "--val_batch_size 1" in proc.stdout + proc.stderr
    assert not (tmp_path / "run2" / "models").exists() or not any((tmp_path / "run2" / "models").iterdir())


def test_train_config_takes_a_device_string(tmp_path):
    # MONAI Label's BundleTrainTask sets "device" to a string ("cpu"); the network and its layout must still build
    from monai.bundle import ConfigParser

    from bundle_runner import CONFIGS

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"device": "cpu", "features": [4, 8, 16], "bundle_root": str(tmp_path)})
    assert parser.get_parsed_content("channels_last") is True
    net = parser.get_parsed_content("network")
    assert any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters())


def test_compile_trains_the_same_network(trained, tmp_path):
    """``--compile True``: the trainer steps a ``torch.compile`` view of ``@network`` (MONAI 1.6.1's own
    ``SupervisedTrainer(compile=True)`` fails on batched MetaTensors); the first loss is the uncompiled run's, and
    model.pt holds the plain network's keys (no ``_orig_mod.``), so every consumer loads it as before."""
    root, plain = trained
    proc = run_bundle(config_arg("train.json"), "training", {**TINY, "bundle_root": str(tmp_path), "compile": True},
                      timeout=600)
    first_loss = [re.search(r"train_loss: ([0-9.]+)", p.stdout + p.stderr).group(1) for p in (plain, proc)]
    assert float(first_loss[1]) == pytest.approx(float(first_loss[0]), rel=1e-4), first_loss
    compiled = torch.load(tmp_path / "models" / "model.pt", map_location="cpu")["model"]
    assert set(compiled) == set(torch.load(root / "models" / "model.pt", map_location="cpu")["model"])


def test_a_budgeted_run_resumes_with_what_is_left_of_its_budget(tmp_path):
    """``--time_budget_s``: the seconds used are saved with the resumable checkpoint, so a run stopped early (here by
    ``--time_limit_s``, as a kill would) and resumed spends only the rest of the budget; and a plan that outgrew
    ``--epochs`` (the budget's first guess) resumes instead of being refused by MONAI's loader (before v0.6.10:
    "Epoch count (N) in checkpoint is larger than max_epochs")."""
    budget = {**TINY, "bundle_root": str(tmp_path), "epochs": 1, "time_budget_s": 9, "early_stop_patience": 1000}
    run_bundle(config_arg("train.json"), "training", {**budget, "time_limit_s": 3})
    (first,) = (tmp_path / "models").glob("checkpoint_epoch=*.pt")
    saved = torch.load(first, map_location="cpu", weights_only=False)
    used, done = saved["time_budget"]["used_s"], saved["trainer"]["iteration"] // saved["trainer"]["epoch_length"]
    assert 2.5 <= used < 9 and done > 1, (used, done)  # stopped by the time limit, beyond the guess of 1 epoch
    proc = run_bundle(config_arg("train.json"), "training", {**budget, "resume": True})
    out = proc.stdout + proc.stderr
    reports = [(float(u), int(e)) for u, e in re.findall(r"time budget: (\d+) of 9 s used after epoch (\d+)", out)]
    assert reports and reports[0][1] == done + 1, out[-3000:]
    assert reports[0][0] >= int(used), "the resumed run's clock starts where the checkpoint's stopped"
    (last,) = (tmp_path / "models").glob("checkpoint_epoch=*.pt")
    final = torch.load(last, map_location="cpu", weights_only=False)
    epochs = final["trainer"]["iteration"] // final["trainer"]["epoch_length"]
    assert epochs > done and 7 <= final["time_budget"]["used_s"] <= 12, (reports[-3:], final["time_budget"])
    # resuming the finished run trains nothing more and exits 0
    again = run_bundle(config_arg("train.json"), "training", {**budget, "resume": True})
    assert "time budget:" not in again.stdout + again.stderr
    assert [p.name for p in (tmp_path / "models").glob("checkpoint_epoch=*.pt")] == [last.name]
