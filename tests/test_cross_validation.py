"""benchmarks/cross_validation.py (issue 27 §1): per-fold train -> evaluate -> refinement scores on a fake prepared
Drosophila dataset (tiny network, one epoch, two folds side by side), the per-fold result files, their reuse when
the command runs again, the refusal of mixed settings, the resume switch, and the mean and sample s.d."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from scripts.data import DROSOPHILA_VALUE_MAP, prepare_drosophila, write_png

REPO = Path(__file__).resolve().parents[1]
TINY = ["--", "--features", "[4,8,16]", "--patch_size", "[16,16]", "--batch_size", "2", "--cache_workers", "0"]


@pytest.fixture(scope="module")
def cv():
    spec = importlib.util.spec_from_file_location("bench_cross_validation", REPO / "benchmarks" / "cross_validation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """10 fake sections of 32x32 in 5 folds of 2 sections (fold k: test 2k, 2k+1)."""
    root = tmp_path_factory.mktemp("fake_drosophila")
    rng = np.random.default_rng(0)
    values = np.array(sorted(DROSOPHILA_VALUE_MAP), np.uint8)
    for i in range(10):
        (root / "src" / "stack1" / "raw").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "src" / "stack1" / "raw" / f"{i:02d}.tif", rng.integers(0, 256, (32, 32), dtype=np.uint8))
        write_png(root / "src" / "stack1" / "labels" / f"labels{i:08d}.png", values[rng.integers(0, 8, (32, 32))])
    prepare_drosophila(root / "src", root / "prepared", crop_size=16, num_folds=5)
    return root / "prepared"


def test_mean_and_sample_sd(cv):
    assert cv.mean_sd([0.7, 0.8]) == pytest.approx((0.75, math.sqrt(0.005)))
    assert cv.mean_sd([0.7]) == (0.7, None)
    rows = [{"fold": 1, "mean_iou": 0.6}, {"fold": 0, "mean_iou": 0.8}]
    report = cv.summarize(rows)
    assert report["folds"] == [0, 1] and report["summary"]["mean_iou"] == {"mean": 0.7, "sd": 0.141421, "n": 2}


def test_a_stopped_fold_resumes(cv, prepared, tmp_path):
    args = cv.argparse.Namespace(data=str(prepared), recipe=[str(cv.SHIPPED_RECIPE)], epochs=3, overrides=[])
    assert "--resume" not in cv.train_command(args, 2, tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "checkpoint_epoch=1.pt").write_bytes(b"")
    command = cv.train_command(args, 2, tmp_path)
    assert command[-2:] == ["--resume", "True"] and str(prepared / "datalist_fold2.json") in command



def test_several_recipe_files_are_merged_in_order(cv, prepared, tmp_path):
    """``--recipe shipped.json xnet_sce_and_iou.json`` (the shipped X-Net): both files after train.json, in training
    and evaluation, and both named in the fold's settings; one file keeps the settings of the five-fold study."""
    xnet = cv.CONFIGS / "experiments" / "paper" / "xnet_sce_and_iou.json"
    args = cv.argparse.Namespace(data=str(prepared), recipe=[str(cv.SHIPPED_RECIPE), str(xnet)], epochs=40,
                                 overrides=[], fold0_model=None)
    configs = json.loads(cv.train_command(args, 0, tmp_path)[6])
    assert configs == [str(cv.CONFIGS / "train.json"), str(cv.SHIPPED_RECIPE), str(xnet)]
    assert json.loads(cv.evaluate_command(args, 0, tmp_path, tmp_path / "m.pt")[6])[1:] == [
        str(cv.SHIPPED_RECIPE), str(xnet), str(cv.CONFIGS / "evaluate.json")]
    assert cv.settings(args, 0)["recipe"] == "shipped.json + xnet_sce_and_iou.json"
    assert not cv.is_shipped_recipe(args)
    one = cv.argparse.Namespace(data=str(prepared), recipe=[str(cv.SHIPPED_RECIPE)], epochs=90, overrides=[],
                                fold0_model=None)
    assert cv.settings(one, 1)["recipe"] == "shipped.json" and cv.is_shipped_recipe(one)

def test_fold0_model_only_stands_for_the_shipped_recipe(cv, prepared, tmp_path):
    with pytest.raises(SystemExit, match="shipped recipe at 90 epochs only"):
        cv.main(["--data", str(prepared), "--epochs", "30", "--fold0_model", str(tmp_path / "m.pt"),
                 "--out", str(tmp_path / "o"), "--results", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="no datalist_fold0.json"):
        cv.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--results", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="--epochs: set by the driver"):
        cv.main(["--data", str(prepared), "--out", str(tmp_path / "o"), "--results", str(tmp_path / "r"), "--",
                 "--epochs", "3"])


def test_a_run_folder_of_other_settings_is_refused(cv, tmp_path):
    root = tmp_path / "fold1"
    cv.claim_run_folder(root, {"epochs": 1})
    cv.claim_run_folder(root, {"epochs": 1})  # the same study: its folder
    with pytest.raises(SystemExit, match="trained with other settings"):
        cv.claim_run_folder(root, {"epochs": 2})
    (tmp_path / "fold2").mkdir()
    (tmp_path / "fold2" / "train0.log").write_text("")
    with pytest.raises(SystemExit, match="holds files of a run without cv_settings.json"):
        cv.claim_run_folder(tmp_path / "fold2", {"epochs": 1})


@pytest.mark.slow
def test_two_folds_train_score_and_are_reused(cv, prepared, tmp_path, capsys):
    out, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--data", str(prepared), "--out", str(out), "--results", str(results), "--folds", "0", "1",
            "--epochs", "1", "--parallel", "2", *TINY]
    report = cv.main(argv)
    assert report["folds"] == [0, 1]
    for fold in (0, 1):
        result = json.loads((results / f"fold{fold}.json").read_text())
        metrics = json.loads((out / f"fold{fold}" / "eval_sections" / "metrics.json").read_text())
        assert result["mean_iou"] == metrics["mean_iou"] and metrics["num_images"] == 2
        assert result["test_sections"] == [f"sec_{2 * fold:02d}.png", f"sec_{2 * fold + 1:02d}.png"]
        assert 0 <= result["rand_error_before"] <= 1 and 0 <= result["rand_error_after"] <= 1
        # both pipelines score the same arg-max maps
        assert result["mean_iou_inference_pipeline"] == pytest.approx(result["mean_iou"], abs=1e-3)
        assert result["best_val_epoch"] == 1 and result["settings"]["epochs"] == 1
    values = [json.loads((results / f"fold{k}.json").read_text())["mean_iou"] for k in (0, 1)]
    assert report["summary"]["mean_iou"]["mean"] == pytest.approx(sum(values) / 2, abs=1e-6)
    table = (results / "summary.md").read_text()
    assert "| **mIoU** |" in table and "73.81" in table

    # the same command again: nothing trains, the same table
    stamps = {k: (out / f"fold{k}" / "models" / "model.pt").stat().st_mtime_ns for k in (0, 1)}
    capsys.readouterr()
    again = cv.main(argv)
    assert "fold 0: done before" in capsys.readouterr().out
    assert again["summary"] == report["summary"]
    assert {k: (out / f"fold{k}" / "models" / "model.pt").stat().st_mtime_ns for k in (0, 1)} == stamps

    # other settings into the same results folder: refused, the fold's result kept; into other results but the same
    # run folders: refused too (the 1-epoch model is never scored as a 2-epoch one)
    with pytest.raises(SystemExit, match="a result with other settings"):
        cv.main([*argv[:8], "--epochs", "2", *TINY])
    assert json.loads((results / "fold0.json").read_text())["settings"]["epochs"] == 1
    with pytest.raises(SystemExit, match="trained with other settings"):
        cv.main([*argv[:5], str(tmp_path / "results2"), *argv[6:8], "--epochs", "2", *TINY])
    assert report["per_fold"][0]["train_seconds"] > 0


def test_the_shipped_fold_0_counts_for_a_later_command_of_the_shipped_recipe(cv, prepared):
    shipped = {"fold": 0, "settings": {"model": "shipped", "recipe": "shipped.json"}}
    args = cv.argparse.Namespace(data=str(prepared), recipe=[str(cv.SHIPPED_RECIPE)], epochs=90, overrides=[],
                                 fold0_model=None)
    assert cv.counts_for(shipped, args)  # e.g. `--folds 3 4` without --fold0_model
    assert not cv.counts_for(shipped, cv.argparse.Namespace(**{**vars(args), "epochs": 30}))
    assert not cv.counts_for({"fold": 1, "settings": {"model": "trained"}}, args)
