"""benchmarks/label_efficiency.py (issue 23): nested label budgets, the refusal of mixed settings, the trainer's
clock read from the logs, the arms' commands, the summary; and (slow) the whole study on tiny synthetic data
relabelled as two classes (budgets 1 and all, one epoch, a tiny U-Net as the model fine-tuned), run twice: the
second command trains nothing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TWO = ["rest", "membrane"]


@pytest.fixture(scope="module")
def le():
    spec = importlib.util.spec_from_file_location("bench_label_efficiency", REPO / "benchmarks" / "label_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _items(n: int) -> list[dict]:
    return [{"image": f"/d/img{i}.png", "label": f"/d/lab{i}.png"} for i in range(n)]


def test_budgets_are_nested_subsets_drawn_by_the_seed(le):
    items = _items(10)
    subsets = {b: le.image_names(le.nested_subset(items, b, seed=3)) for b in ("1", "2", "4", "all")}
    assert [len(subsets[b]) for b in ("1", "2", "4", "all")] == [1, 2, 4, 10]
    assert subsets["1"] == subsets["2"][:1] and subsets["2"] == subsets["4"][:2] and subsets["4"] == subsets["all"][:4]
    assert sorted(subsets["all"]) == sorted(le.image_names(items))
    assert le.nested_subset(items, "4", seed=3) == le.nested_subset(items, "4", seed=3)
    assert any(le.image_names(le.nested_subset(items, "4", seed=s)) != subsets["4"] for s in range(4, 8))


def test_budgets_are_ordered_and_checked(le):
    assert le.parse_budgets(["all", "4", "1", "2", "1"], 6) == ["1", "2", "4", "all"]
    for bad in (["0"], ["-1"], ["some"], ["7"]):
        with pytest.raises(SystemExit):
            le.parse_budgets(bad, 6)


def test_source_lists_use_the_sections_and_absolute_paths(le, tmp_path):
    datalist = {"training": _items(1), "training_sections": [{"image": "s/a.png", "label": "s/a_l.png"}],
                "validation_sections": [{"image": "s/v.png", "label": "s/v_l.png"}],
                "testing": [{"image": "t.png", "label": "t_l.png"}]}  # no testing_sections: testing
    lists = le.source_lists(datalist, tmp_path / "datalist.json")
    assert lists["training"] == [{"image": str(tmp_path / "s/a.png"), "label": str(tmp_path / "s/a_l.png")}]
    assert lists["testing"][0]["image"] == str(tmp_path / "t.png")
    with pytest.raises(SystemExit, match="no testing_sections"):
        le.source_lists({k: v for k, v in datalist.items() if k != "testing"}, tmp_path / "datalist.json")


def test_a_folder_of_another_study_is_refused(le, tmp_path):
    settings = {"epochs": 2, "seed": 0}
    le.claim(tmp_path, settings)
    le.claim(tmp_path, dict(settings))  # the same settings: accepted
    with pytest.raises(SystemExit, match=r"other settings \(epochs: 2 there, 3 now\)"):
        le.claim(tmp_path, {"epochs": 3, "seed": 0})


def test_the_command_line_refuses_mixed_settings_and_owned_overrides(le, tmp_path):
    item = {"image": "a.png", "label": "a_l.png"}
    lists = {k: [item] for k in ("training_sections", "validation_sections", "testing_sections")}
    (tmp_path / "datalist.json").write_text(json.dumps(lists))
    (tmp_path / "model.pt").write_bytes(b"not read before the settings are checked")
    argv = ["--datalist", str(tmp_path / "datalist.json"), "--budgets", "1", "--class_names", *TWO, "--finetune_from",
            str(tmp_path / "model.pt"), "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")]
    le.claim(tmp_path / "results", le.study_settings(le.parse_args(argv + ["--epochs", "1"])))
    with pytest.raises(SystemExit, match="epochs: 1 there, 2 now"):
        le.main(argv + ["--epochs", "2"])
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # argparse: --epochs belongs to the driver
        le.parse_args(argv + ["--", "--epochs", "3"])


def test_the_trainer_clock_is_read_from_the_logs(le, tmp_path):
    finished, killed = tmp_path / "train0.log", tmp_path / "train1.log"
    trainer, evaluator = "ignite.engine.engine.SupervisedTrainer", "ignite.engine.engine.SupervisedEvaluator"
    finished.write_text(
        f"t - {evaluator} - INFO - Engine run finished. Time taken: 00:00:09.000\n"
        f"t - {trainer} - INFO - Epoch[1] Complete. Time taken: 00:00:30.000\n"
        f"t - {trainer} - INFO - Engine run finished. Time taken: 00:01:02.500\n")
    killed.write_text(f"t - {trainer} - INFO - Epoch[1] Complete. Time taken: 00:00:30.000\n"
                      f"t - {trainer} - INFO - Epoch[2] Complete. Time taken: 00:00:31.000\n")
    assert le.trainer_seconds([finished]) == pytest.approx(62.5)
    assert le.trainer_seconds([finished, killed]) == pytest.approx(123.5)
    (tmp_path / "empty.log").write_text("no timing\n")
    with pytest.raises(RuntimeError, match="cannot time the run"):
        le.trainer_seconds([tmp_path / "empty.log"])


def test_the_arms_commands(le, tmp_path):
    args = le.argparse.Namespace(finetune_from="m.pt", out=str(tmp_path), class_names=TWO, epochs=5,
                                 overrides=["--patch_size", "[32,32]"])
    root, datalist = tmp_path / "budget1" / "finetune", tmp_path / "budget1" / "datalist.json"
    ft = le.train_command(args, "finetune", root, datalist, None)
    assert ft[ft.index("--finetune_from") + 1] == "m.pt" and "--time_budget_s" not in ft and "--resume" not in ft
    assert ft[ft.index("--epochs") + 1] == "5" and ft[ft.index("--early_stop_patience") + 1] == le.NO_EARLY_STOP
    se = le.train_command(args, "scratch_epochs", root, datalist, None)
    assert se[se.index("--finetune_from") + 1] == "$None" and "scratch_network.json" in se[se.index("--config_file") + 1]
    st = le.train_command(args, "scratch_time", root, datalist, 12.5)
    assert st[st.index("--time_budget_s") + 1] == "12.5"
    (root / "models").mkdir(parents=True)
    (root / "models" / "checkpoint_epoch=2.pt").write_bytes(b"")
    assert le.train_command(args, "finetune", root, datalist, None)[-2:] == ["--resume", "True"]
    assert le.epochs_run(root / "models") == 2


def _unit(budget, arm, miou, n=1):
    return {"budget": budget, "arm": arm, "n_images": n, "mean_iou": miou, "iou": {"rest": miou, "membrane": miou},
            "epochs_run": 3, "train_seconds": 10.0, "time_budget_s": None, "best_val_mean_iou": miou}


def test_summary_rows_and_the_target(le):
    units = [_unit("all", "finetune", 0.8, 4), _unit("all", "scratch_epochs", 0.7, 4),
             _unit("all", "scratch_time", 0.75, 4), _unit("1", "finetune", 0.5), _unit("1", "scratch_epochs", 0.6),
             _unit("1", "scratch_time", 0.4)]
    report = le.summarize(units)
    assert [r["budget"] for r in report["rows"]] == ["1", "all"]
    one, whole = report["rows"]
    assert (one["beats_scratch_epochs"], one["beats_scratch_time"]) == (False, True)
    assert (whole["beats_scratch_epochs"], whole["beats_scratch_time"]) == (True, True)
    assert report["target_met"] is False
    table = le.markdown({**report, "settings": {"class_names": TWO}})
    assert "| 1 | 0.5000 (3 ep, 10 s) | 0.6000 (3 ep, 10 s) | 0.4000 (3 ep, 10 s) | no / yes |" in table
    assert "| all (4) |" in table and "not met" in table
    assert le.summarize(units[:2])["target_met"] is None  # scratch_time missing: incomplete
    assert le.summarize(units[:3])["target_met"] is True


@pytest.mark.slow
def test_the_study_end_to_end_on_tiny_synthetic_data(le, tmp_path):
    import torch
    from scripts.data import generate_dataset, prepare_folders
    from scripts.networks import ModelInfo, UNet

    raw = generate_dataset(tmp_path / "raw", num_train=6, num_val=1, num_test=1, size=64, seed=1).parent
    datalist = prepare_folders(raw / "images", raw / "labels", tmp_path / "data", "0:0,1:1,2:0,3:0,4:0",
                               val_fraction=0.25, test_fraction=0.25, class_names=TWO)
    torch.manual_seed(0)
    net = UNet(2, 1, 5, features=[4, 8, 16], batch_norm=True)
    names = ["intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"]
    torch.save({"model": net.state_dict(), "model_info": ModelInfo(net, names, 255, [64, 64]).state_dict()},
               tmp_path / "model.pt")
    out, results = tmp_path / "runs", tmp_path / "results"
    # 12 bundle commands (~4 s each, mostly importing MONAI); no training-curve picture (matplotlib, ~1 s a run)
    argv = ["--datalist", str(datalist), "--budgets", "all", "1", "--epochs", "1", "--finetune_from",
            str(tmp_path / "model.pt"), "--out", str(out), "--results", str(results), "--seed", "2", "--",
            "--patch_size", "[32,32]", "--batch_size", "2", "--patches_per_section", "2", "--section_repeats", "1",
            "--cache_workers", "0", "--finalize", "[]"]
    report = le.main(argv)  # the class names from the data's classes.json
    assert sorted(report["trained"]) == sorted(f"{b}/{a}" for b in ("1", "all") for a in le.ARMS)

    whole = json.loads((out / "budgetall" / "datalist.json").read_text())
    one = json.loads((out / "budget1" / "datalist.json").read_text())
    train_all = [i["image"] for i in whole["training_sections"]]
    assert len(train_all) == 4 and len(one["training_sections"]) == 1
    assert one["training_sections"][0]["image"] in train_all
    assert one["testing_sections"] == whole["testing_sections"] and len(one["testing_sections"]) == 2

    for budget in ("1", "all"):
        for arm in le.ARMS:
            r = json.loads((results / f"budget{budget}_{arm}.json").read_text())
            assert 0.0 <= r["mean_iou"] <= 1.0 and set(r["iou"]) == set(TWO), r
            assert r["epochs_run"] >= 1 and r["train_seconds"] > 0 and r["n_images"] == (1 if budget == "1" else 4)
        ft = json.loads((results / f"budget{budget}_finetune.json").read_text())
        st = json.loads((results / f"budget{budget}_scratch_time.json").read_text())
        assert st["time_budget_s"] == ft["train_seconds"] and ft["epochs_run"] == 1
        log = (out / f"budget{budget}" / "finetune" / "train0.log").read_text()
        assert "Fine-tuning from" in log and "re-initialised head.weight, head.bias for 2 classes" in log
        assert "time budget:" in (out / f"budget{budget}" / "scratch_time" / "train0.log").read_text()
        scratch = torch.load(out / f"budget{budget}" / "scratch_epochs" / "models" / "model.pt", weights_only=True)
        assert scratch["model_info"]["network"]["features"] == [4, 8, 16]  # the fine-tuned file's architecture
    summary = json.loads((results / "summary.json").read_text())
    assert [r["budget"] for r in summary["rows"]] == ["1", "all"] and summary["target_met"] in (True, False)
    assert "fine-tune beats scratch" in (results / "summary.md").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in results.glob("budget*.json")}
    again = le.main(argv)
    assert again["trained"] == [] and {p: p.stat().st_mtime_ns for p in results.glob("budget*.json")} == stamps
    with pytest.raises(SystemExit, match="other settings"):
        le.main([a if a != "--seed" else "--threads" for a in argv])  # --threads 2 instead of --seed 2
