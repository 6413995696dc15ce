"""The peer benchmark's own code, without nnU-Net installed: the conversion of a prepared fold to nnU-Net's raw
format, the scoring of a prediction folder with our metric code, the budget trainer's arithmetic, and the driver's
commands. (The MONAI recipe, ``experiments/peers/monai_basic_unet.json``, trains and evaluates one tiny epoch in
tests/test_experiments.py with every other experiment file.)
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from scripts.data import DROSOPHILA_VALUE_MAP, prepare_drosophila, read_image, write_png

REPO = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peer():
    return load(REPO / "benchmarks" / "nnunet_peer.py", "bench_nnunet_peer")


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    """A prepared fake Drosophila dataset: 10 sections of 32x32, 5 folds of 2 sections (fold 0: test 0-1, val 2-3)."""
    root = tmp_path_factory.mktemp("fake_drosophila")
    rng = np.random.default_rng(0)
    values = np.array(sorted(DROSOPHILA_VALUE_MAP), np.uint8)
    for i in range(10):
        (root / "src" / "stack1" / "raw").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "src" / "stack1" / "raw" / f"{i:02d}.tif", rng.integers(0, 256, (32, 32), dtype=np.uint8))
        write_png(root / "src" / "stack1" / "labels" / f"labels{i:08d}.png", values[rng.integers(0, 8, (32, 32))])
    paths = prepare_drosophila(root / "src", root / "prepared", crop_size=16, num_folds=5)
    return paths[0]


def test_convert_fold_layout_dataset_json_and_split(peer, fold, tmp_path):
    raw = peer.convert_fold(fold, tmp_path, dataset_id=7)
    assert raw == tmp_path / "raw" / "Dataset007_DrosophilaFold0"
    train_val = [f"sec_{i:02d}" for i in range(2, 10)]
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [f"{c}_0000.png" for c in train_val]
    assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == [f"{c}.png" for c in train_val]
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == ["sec_00_0000.png", "sec_01_0000.png"]
    assert sorted(p.name for p in (raw / "labelsTs").iterdir()) == ["sec_00.png", "sec_01.png"]

    ds = json.loads((raw / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "membrane": 1, "glia_extracellular": 2, "mitochondria": 3, "synapse": 4}
    assert ds["numTraining"] == 8 and ds["file_ending"] == ".png" and ds["channel_names"] == {"0": "EM"}

    split = json.loads((tmp_path / "preprocessed" / "Dataset007_DrosophilaFold0" / "splits_final.json").read_text())
    assert split == [{"train": [f"sec_{i:02d}" for i in range(4, 10)], "val": ["sec_02", "sec_03"]}]

    # pixels and class indices unchanged (the bundle's indices are nnU-Net's label values)
    sections = fold.parent / "sections"
    for case, folder in (("sec_05", "Tr"), ("sec_01", "Ts")):
        np.testing.assert_array_equal(read_image(raw / f"images{folder}" / f"{case}_0000.png"),
                                      read_image(sections / "images" / f"{case}.png"))
        label = read_image(raw / f"labels{folder}" / f"{case}.png")
        np.testing.assert_array_equal(label, read_image(sections / "labels" / f"{case}.png"))
        assert label.dtype == np.uint8 and set(np.unique(label)) <= set(range(5))


def test_convert_refuses_a_datalist_without_sections(peer, tmp_path):
    bad = tmp_path / "datalist.json"
    bad.write_text(json.dumps({"training": [{"image": "a.png", "label": "b.png"}], "validation": []}))
    with pytest.raises(ValueError, match="no validation, testing_sections"):
        peer.convert_fold(bad, tmp_path)
    with pytest.raises(ValueError, match="1..999"):
        peer.dataset_name(1000)


def test_score_predictions_right_beats_wrong(peer, tmp_path):
    labels, right, wrong = tmp_path / "labels", tmp_path / "right", tmp_path / "wrong"
    label = np.zeros((8, 9), np.uint8)
    label[:, 4] = 1  # a membrane between two cells
    label[0:2, 0:2] = 3
    for case in ("sec_00", "sec_01"):
        write_png(labels / f"{case}.png", label)
        write_png(right / f"{case}.png", label)
        write_png(wrong / f"{case}.png", np.zeros_like(label))  # everything intracellular
    good = peer.score_predictions(right, labels)
    bad = peer.score_predictions(wrong, labels)
    assert good["images"] == 2 and good["cases"] == ["sec_00", "sec_01"]
    assert good["mean_iou"] == 1.0 and good["per_image_mean_iou"] == 1.0 and good["rand_error"] == 0.0
    # wrong: intracellular IoU 60/72 (the 12 other pixels predicted 0), membrane and mitochondria 0; 2 and 4 absent
    assert bad["iou"]["intracellular"] == pytest.approx(60 / 72)
    assert bad["mean_iou"] == pytest.approx((60 / 72) / 3)
    assert bad["mean_iou"] < good["mean_iou"] and bad["rand_error"] > 0.0
    (right / "sec_01.png").unlink()
    with pytest.raises(ValueError, match="sec_01.png: prediction missing"):
        peer.score_predictions(right, labels)


def test_nnunet_commands_use_the_budget_trainer_and_the_1gb_plan(peer, tmp_path):
    cmds = peer.commands(501, tmp_path)
    assert cmds["plan"][1] == ["nnUNetv2_plan_experiment", "-d", "501", "-gpu_memory_target", "1",
                               "-overwrite_plans_name", "nnUNetPlans_1G"]
    train = cmds["train"][0]
    assert train[:4] == ["nnUNetv2_train", "501", "2d", "0"] and "nnUNetTrainerBudget" in train and "cpu" in train
    assert cmds["predict"][0][-1] == "--disable_tta"  # as ours predicts; --tta restores nnU-Net's mirroring
    assert "--disable_tta" not in peer.commands(501, tmp_path, tta=True)["predict"][0]
    env = peer.nnunet_env(tmp_path, budget_s=2700)
    assert env["NNUNET_BUDGET_S"] == "2700" and env["nnUNet_raw"] == str(tmp_path / "raw")
    assert (Path(env["nnUNet_extTrainer"]) / "nnUNetTrainerBudget.py").is_file()


def test_budget_trainer_arithmetic():
    budget = load(REPO / "benchmarks" / "nnunet_trainers" / "nnUNetTrainerBudget.py", "bench_nnunet_budget")
    assert budget.initial_epochs(2700, 25, 5) == 21  # 2700 s / (25 iterations x 5 s)
    assert budget.fit_epochs(100, 30, 3, 10) == 10  # 70 s left: 7 more epochs of 10 s
    assert budget.fit_epochs(100, 95, 3, 10) == 3  # nothing more fits: stop now
    assert budget.poly_lr(0.01, 0, 10) == 0.01 and budget.poly_lr(0.01, 5, 10) == pytest.approx(0.01 * 0.5 ** 0.9)
    with pytest.raises(ValueError):
        budget.fit_epochs(100, 0, 0, 10)

    # the trainer's policy over a run: 100 s budget, the first epoch 12 s (start-up), then 7 s per epoch
    elapsed, done, times, planned = 0.0, 0, [], budget.initial_epochs(100, 25, 0.2)
    while done < planned:
        times.append(12.0 if done == 0 else 7.0)
        elapsed, done = elapsed + times[-1], done + 1
        epoch_s = sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0]
        planned = budget.fit_epochs(100, elapsed, done, epoch_s)
    assert (done, elapsed) == (13, 96.0)  # 12 + 12 x 7: the budget is used, never exceeded
    assert budget.poly_lr(0.01, done - 1, planned) < 0.001  # the last epoch ran at < 10% of the initial rate

    s = budget.budget_settings({"NNUNET_BUDGET_S": "600", "NNUNET_SKIP_FINAL_VALIDATION": "0"})
    assert s["budget_s"] == 600 and s["iters_per_epoch"] == 25 and s["skip_final_validation"] is False


def test_peer_driver_commands(capsys, tmp_path):
    driver = load(REPO / "benchmarks" / "peer_benchmark.py", "bench_peer_benchmark")
    assert driver.planned_epochs(45, 0.84) == 53 and driver.planned_epochs(1, 8.0) == 2
    assert driver.planned_epochs(0.3, 0.1) == 3  # not 2 (0.3 / 0.1 = 2.9999999999999996)
    with pytest.raises(ValueError, match="positive budget"):
        driver.planned_epochs(0, 1.0)
    assert driver.main(["--dry_run", "--budget_min", "45", "--out", str(tmp_path), "--epochs", "ours_xnet=9"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 9  # one nnU-Net line, then train + evaluate for the four bundle entries
    assert "nnunet_peer.py all" in lines[0] and "--budget_min 45.0" in lines[0]
    # ours: the shipped model's recipe file, epochs fitted to the budget at run time from a first guess of
    # 45 / 0.84 -> 53 (the command line's --epochs wins over the recipe's 90), the budget as a guard, no early stopping
    for part in ("configs/train.json", "configs/recipes/shipped.json", "--epochs 53 ", "--time_budget_s 2700 ",
                 "--time_limit_s 2700 ", "--early_stop_patience 1000000 "):
        assert part in lines[1], part
    assert "experiments/" not in lines[1]
    assert "--test_key testing_sections" in lines[2] and "recipes/shipped.json" in lines[2] and "evaluate.json" in lines[2]
    # the shipped recipe before v0.7.0 (class weights), whose numbers the peer table reports
    for part in ("experiments/paper/unet_sce_iou.json", "experiments/recipe/section_patches.json",
                 "experiments/recipe/poly_lr.json", "--epochs 53 "):
        assert part in lines[3], part
    assert "no_class_weights" not in lines[3]
    assert "experiments/peers/monai_basic_unet.json" in lines[5] and "poly_lr" not in lines[5]
    assert "--time_budget_s 2700 " in lines[5]
    assert "experiments/paper/xnet_sce_and_iou.json" in lines[7] and "--epochs 9 " in lines[7]


def test_peer_driver_resume(tmp_path):
    """--resume keeps a done entry only when its commands are those of this run, and keeps the done entries of the
    earlier report that this run does not touch."""
    driver = load(REPO / "benchmarks" / "peer_benchmark.py", "bench_peer_benchmark")
    datalist = tmp_path / "d.json"
    datalist.write_text("{}")
    base = ["--budget_min", "45", "--datalist", str(datalist), "--out", str(tmp_path),
            "--nnunet_python", str(tmp_path / "no_python")]
    args = driver.argparse.Namespace(budget_min=45.0, fixed_epochs=None, datalist=str(datalist), out=str(tmp_path),
                                     nnunet_python=str(tmp_path / "no_python"))
    nnunet_cmd = driver.shlex.join(driver.nnunet_command(args))
    earlier = {"budget_min": 45.0, "datalist": str(datalist), "eval_key": "testing_sections", "entries": {
        "nnunet": {"status": "done", "commands": [nnunet_cmd], "scores": {"mean_iou": 0.5}},
        "ours_unet": {"status": "done", "commands": ["old"], "scores": {"mean_iou": 0.6}},
        "ours_xnet": {"status": "training failed (1)", "commands": ["x"]}}}
    (tmp_path / "peers.json").write_text(json.dumps(earlier))
    assert driver.main([*base, "--resume", "--only", "nnunet"]) == 0
    report = json.loads((tmp_path / "peers.json").read_text())
    assert report["entries"]["nnunet"]["scores"] == {"mean_iou": 0.5}  # same commands: kept, not rerun
    assert report["entries"]["ours_unet"]["scores"] == {"mean_iou": 0.6}  # untouched done entry stays
    assert "ours_xnet" not in report["entries"]  # a failed entry is not kept

    earlier["entries"]["nnunet"]["commands"] = ["an older recipe"]
    (tmp_path / "peers.json").write_text(json.dumps(earlier))
    assert driver.main([*base, "--resume", "--only", "nnunet"]) == 0
    report = json.loads((tmp_path / "peers.json").read_text())
    assert report["entries"]["nnunet"]["status"].startswith("not run")  # other commands: run again
    # another budget or scored key keeps nothing
    args.eval_key = "testing_sections"
    assert list(driver.previous_entries(tmp_path / "peers.json", args)) == ["ours_unet"]
    args.budget_min = 60.0
    assert driver.previous_entries(tmp_path / "peers.json", args) == {}
    args.budget_min, args.eval_key = 45.0, "validation_sections"
    assert driver.previous_entries(tmp_path / "peers.json", args) == {}
    assert driver.previous_entries(tmp_path / "missing.json", args) == {}


def test_peer_driver_log_parsing_and_load_sampler(tmp_path):
    driver = load(REPO / "benchmarks" / "peer_benchmark.py", "bench_peer_benchmark")
    # a run stopped at the end of epoch 3 by its time limit: Ignite logs no "Epoch[3] Complete", the checkpoint is saved
    log = tmp_path / "train.log"
    log.write_text("x - SupervisedTrainer - INFO - Saved checkpoint at epoch: 1\n"
                   "x - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[1] Complete. Time taken: 00:01:31\n"
                   "x - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[3] Complete. Time taken: 00:00:07\n"
                   "x - SupervisedTrainer - INFO - Saved checkpoint at epoch: 2\n"
                   "x - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 00:01:06\n"
                   "x - SupervisedTrainer - INFO - Saved checkpoint at epoch: 3\n"
                   "x - scripts.handlers - INFO - Reached the time limit: 2700 sec. Stop training\n")
    assert driver.epochs_done(log) == 3 and driver.epochs_done(tmp_path / "none.log") is None

    with driver.LoadSampler(interval_s=0.05) as load_:
        driver.subprocess.run([sys.executable, "-c", "sum(range(3 * 10**7))"], check=True)
    summary = load_.summary()
    assert summary["cpu_s"] > 0.1 and summary["load_mean"] is not None and len(load_.samples) >= 2


def test_peer_driver_waits_while_paused(tmp_path):
    driver = load(REPO / "benchmarks" / "peer_benchmark.py", "bench_peer_benchmark")
    flag = tmp_path / "PAUSE"
    flag.touch()
    timer = driver.threading.Timer(0.3, flag.unlink)
    timer.start()
    t0 = driver.time.monotonic()
    driver.wait_while_paused(flag, poll_s=0.05)
    assert driver.time.monotonic() - t0 >= 0.25 and not flag.exists()


def test_peer_driver_arms_for_recipe_ab(capsys, tmp_path):
    """--arm adds a bundle entry (experiment files + overrides) scored on --eval_key; bad specs are refused."""
    driver = load(REPO / "benchmarks" / "peer_benchmark.py", "bench_peer_benchmark")
    assert driver.parse_arm("sgd=unet_sce_iou,poly_lr --optimizer#_target_ torch.optim.SGD --learning_rate 0.01") == (
        "sgd", ("unet_sce_iou", "poly_lr"), ["--optimizer#_target_", "torch.optim.SGD", "--learning_rate", "0.01"])
    for bad, match in (("crops", "NAME=EXP"), ("ours_unet=unet_sce_iou", "new NAME"), ("a b=unet_iou", "NAME=EXP"),
                       ("x=no_such_file", "no_such_file.json"), ("x=unet_iou --epochs", "pairs"),
                       ("x=unet_iou --time_limit_s 5", "belong to the driver")):
        with pytest.raises(ValueError, match=match):
            driver.parse_arm(bad)
    assert driver.main(["--dry_run", "--out", str(tmp_path), "--arm", "crops_step=unet_sce_iou",
                        "--arm", "bs16=unet_sce_iou,section_patches,poly_lr --batch_size 16",
                        "--minutes", "bs16=2.0", "--eval_key", "validation_sections"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4  # only the arms run when there are arms: train + evaluate each
    assert "experiments/paper/unet_sce_iou.json" in lines[0] and "section_patches" not in lines[0]
    assert "experiments/recipe/section_patches.json" in lines[2]
    assert "--epochs 53" in lines[0] and "--test_key validation_sections" in lines[1]
    assert "eval_validation_sections" in lines[1]
    # the overrides reach training and evaluation; the arm's own minutes per epoch size its epochs
    assert lines[2].endswith("--batch_size 16") and "--epochs 22" in lines[2] and "--batch_size 16" in lines[3]
    for argv in (["--only", "nope"], ["--minutes", "ours_unet=0"], ["--arm", "bad"], ["--arm", "a=unet_iou",
                 "--arm", "a=unet_dice"], ["--eval_key", "validation_sections", "--only", "nnunet"]):
        with pytest.raises(SystemExit):
            driver.main(["--dry_run", "--out", str(tmp_path), *argv])

    log = tmp_path / "train.log"
    log.write_text("Epoch[1] Metrics -- val_mean_iou: 0.2234 \nEpoch[2] Metrics -- val_mean_iou: 0.6105 \n"
                   "Epoch[3] Metrics -- val_mean_iou: 0.5999 \n")
    assert driver.validations(log) == pytest.approx([0.2234, 0.6105, 0.5999]) and driver.validations(tmp_path / "x") == []
    table = driver.markdown({"budget_min": 45, "machine": "m", "eval_key": "validation_sections", "entries": {
        "crops_step": {"label": "crops_step: unet_sce_iou", "status": "done", "best_val_mean_iou": 0.61,
                       "scores": {"mean_iou": 0.65, "per_image_mean_iou": 0.6, "iou": {str(i): 0.5 for i in range(5)}}}}})
    assert "scored on validation_sections" in table and "| crops_step: unet_sce_iou | done |" in table
    assert "| 0.610 | 0.650 | 0.600 | 0.500 |" in table


def test_peer_driver_fixed_epochs(capsys, tmp_path, monkeypatch):
    """--fixed_epochs N: every bundle entry trains exactly N epochs (no budget fit, the budget only as its time limit);
    an entry stopped by that limit before N epochs is reported as stopped and not scored."""
    driver = load(REPO / "benchmarks" / "peer_benchmark.py", "bench_peer_benchmark")
    assert driver.main(["--dry_run", "--out", str(tmp_path), "--fixed_epochs", "15", "--budget_min", "60",
                        "--only", "ours_unet", "ours_xnet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    for train in (lines[0], lines[2]):
        assert "--epochs 15 " in train and "--time_limit_s 3600 " in train and "--time_budget_s" not in train
    assert "xnet_sce_and_iou" in lines[2]
    for argv in (["--only", "nnunet", "ours_unet"], ["--only", "ours_unet", "--epochs", "ours_unet=3"],
                 ["--fixed_epochs", "0", "--only", "ours_unet"]):
        if "--fixed_epochs" not in argv:
            argv = ["--fixed_epochs", "15", *argv]
        with pytest.raises(SystemExit):
            driver.main(["--dry_run", "--out", str(tmp_path), *argv])

    datalist = tmp_path / "d.json"
    datalist.write_text("{}")
    done_epochs = {"ours_unet": 15, "ours_xnet": 9}

    def fake_run(cmd, log, timeout_s):  # training: a log with the checkpoints saved; evaluation: a metrics file
        log.parent.mkdir(parents=True, exist_ok=True)
        name = log.name.rsplit("_", 1)[0]
        if log.name.endswith("_train.log"):
            log.write_text("".join(f"Saved checkpoint at epoch: {i}\nEpoch[{i}] Metrics -- val_mean_iou: 0.{i:02d} \n"
                                   for i in range(1, done_epochs[name] + 1)))
        else:
            metrics = tmp_path / "out" / name / "eval_testing_sections" / "metrics.json"
            metrics.parent.mkdir(parents=True, exist_ok=True)
            metrics.write_text(json.dumps({"num_images": 4, "mean_iou": 0.7, "per_image_mean_iou": 0.69,
                                           "per_class": {"a": {"accumulated": {"iou": 0.7}}}}))
        return {"returncode": 0, "seconds": 1.0, "log": str(log), "load_mean": 1.0, "load_max": 1.0, "cpu_s": 1.0,
                "cpu_per_s": 1.0}

    monkeypatch.setattr(driver, "run", fake_run)
    assert driver.main(["--out", str(tmp_path / "out"), "--datalist", str(datalist), "--fixed_epochs", "15",
                        "--budget_min", "60", "--only", "ours_unet", "ours_xnet"]) == 0
    report = json.loads((tmp_path / "out" / "peers.json").read_text())
    assert report["fixed_epochs"] == 15
    unet, xnet = report["entries"]["ours_unet"], report["entries"]["ours_xnet"]
    assert unet["status"] == "done" and unet["epochs"] == 15 and unet["scores"]["mean_iou"] == 0.7
    assert unet["best_val_mean_iou"] == pytest.approx(0.15)
    assert xnet["status"].startswith("stopped by the time limit after 9 of 15 epochs") and "scores" not in xnet
    assert "15 epochs of training each (time limit 60 min)" in (tmp_path / "out" / "peers.md").read_text()
    # an equal-time report is not resumed as an equal-epochs one
    args = driver.argparse.Namespace(budget_min=60.0, fixed_epochs=None, datalist=str(datalist),
                                     eval_key="testing_sections")
    assert driver.previous_entries(tmp_path / "out" / "peers.json", args) == {}
    args.fixed_epochs = 15
    assert list(driver.previous_entries(tmp_path / "out" / "peers.json", args)) == ["ours_unet"]
