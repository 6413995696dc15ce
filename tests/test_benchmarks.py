"""The benchmark scripts still run (tiny sizes, seconds): a benchmark that breaks silently records nothing.

These are smoke runs with checks of what each script must get right whatever the machine (the numbers recorded in
the docs come from full-size runs, see bundle/docs/README.md, Benchmarks).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(autouse=True)
def _restore_log_levels():
    """Benchmarks quieten the ``scripts`` logger for their timings (``folder_throughput.py``); give later tests, and
    the processes they fork, the level they had."""
    logger = logging.getLogger("scripts")
    level = logger.level
    yield
    logger.setLevel(level)

def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_train_throughput(tmp_path, monkeypatch):
    """Samples/s counts the samples of the timed epochs only: on a clock that advances one second per reading, each
    pipeline's timed epoch (the second: 4 images in batches of 2) reads as one second, so both rates are 4."""
    module = load("train_throughput")
    ticks = iter(range(1000))
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    out = tmp_path / "throughput.json"
    module.main(["--epochs", "2", "--num-train", "4", "--size", "64", "--features", "4", "8", "16",
                 "--batch-size", "2", "--workers", "0", "--cache-workers", "0",
                 "--work-dir", str(tmp_path), "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["images"] == 4 and r["timed_epochs"] == 1 and r["network"] == "XNet"
    assert r["cached_samples_per_s"] == 4.0 and r["uncached_samples_per_s"] == 4.0
    assert r["ratio_cached_over_uncached"] == 1.0 and r["cache_build_seconds"] == 1.0



def test_train_step_speed(tmp_path):
    """Every variant is timed with the config's network and loss, and the ratios are those of the recorded times."""
    import torch

    threads_before = torch.get_num_threads()
    out = tmp_path / "steps.json"
    r = load("train_step_speed").main(["--smoke", "--no_compile", "--threads", "2", "--thread_counts", "1",
                                       "--json", str(out)])
    assert json.loads(out.read_text()) == r
    assert set(r["variants"]) == {"contiguous", "channels_last", "threads=1", "batch=1"}
    for name, v in r["variants"].items():
        assert len(v["times"]) == 2 and all(t > 0 for t in v["times"]), name  # 2 rounds x 1 step
        assert v["s_per_sample"] == pytest.approx(v["s_per_step"] / v["batch_size"], abs=1e-4)
    base = r["variants"]["channels_last"]["s_per_sample"]
    assert r["ratio_to_channels_last_per_sample"]["contiguous"] == pytest.approx(
        r["variants"]["contiguous"]["s_per_sample"] / base, rel=0.01)
    assert r["variants"]["batch=1"]["batch_size"] == 1 and r["variants"]["contiguous"]["batch_size"] == 2
    assert r["variants"]["threads=1"]["threads"] == 1
    assert torch.get_num_threads() == threads_before  # the benchmark gives the thread setting back

def test_inference_benchmark_overlap_tile_matches_its_exact_reference(tmp_path, monkeypatch):
    # the synthetic image, not a Drosophila section, whatever the machine has
    monkeypatch.setenv("DROSOPHILA_VNC_DIR", str(tmp_path / "absent"))
    out = tmp_path / "inference.json"
    # two sizes; a budget of 2 MiB: one tile for 64 px, several for 160 px (bounded memory)
    load("inference_benchmark").main(["--size", "64", "160", "--features", "4", "8", "16", "--roi", "32", "--repeats",
                                      "1", "--device", "cpu", "--memory-budget-mb", "2", "--valid", "--json", str(out)])
    sizes = json.loads(out.read_text())["sizes"]
    assert [s["size"] for s in sizes] == [64, 160]
    assert sizes[0]["overlap_tile_auto_same"]["n_tiles"] == [1, 1]
    assert sizes[1]["overlap_tile_auto_same"]["n_tiles"] != [1, 1]
    for block in sizes:
        rows = {r["method"][:3]: r for r in block["results"]}
        assert {"(a)", "(b)", "(c)", "(d)"} <= set(rows)
        for exact in ("(a)", "(d)"):
            assert rows[exact]["max_logit_diff_vs_ref"] <= 1e-4, rows[exact]


def test_folder_throughput(tmp_path):
    out = tmp_path / "folder.json"
    load("folder_throughput").main(["--num-images", "3", "--size", "64", "--features", "4", "8", "16",
                                    "--work-dir", str(tmp_path), "--json", str(out)])
    r = json.loads(out.read_text())
    assert set(r["runs"]) == {"prefetch", "plain"}
    for run in r["runs"].values():
        assert run["images"] == 3 and run["images_per_s"] > 0 and run["counts"]["ok"] == 3


def test_bit_depth(tmp_path):
    """Both runs predict every copy; the 8-bit originals are scaled as in training and identical under both rules;
    the copies are 'matched' with the statistics and follow v0.8.0's rule without (percentiles for 16 bits, /255
    for float)."""
    out = tmp_path / "bit_depth.json"
    r = load("bit_depth").main(["--synthetic", "1", "--size", "64", "--features", "4", "8", "--work-dir", str(tmp_path),
                                "--json", str(out)])
    assert json.loads(out.read_text()) == r and r["originals_identical_under_both_rules"]
    assert [row["variant"] for row in r["rows"]] == ["x257", "float01", "u16_1000_5000"]
    assert [row["v0.8.0"]["rule"] for row in r["rows"]] == ["percentile", "model", "percentile"]
    assert all(row["current"]["rule"] == "matched" and 0.0 <= row["current"]["agreement"] <= 1.0 for row in r["rows"])
    assert r["intensity_statistics"]["dtypes"] == ["uint8"] and r["intensity_statistics"]["images"] == 1


def test_evaluate_refinement(tmp_path):
    out = tmp_path / "refinement.json"
    load("evaluate_refinement").main(["--num-test", "2", "--size", "64", "--work-dir", str(tmp_path), "--set",
                                      "features=[4,8,16]", "patch_size=[64,64]", "--pictures", str(tmp_path / "pics"),
                                      "--keep-others", "both", "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["images"] == 2 and r["refinement"]["keep_other_classes"] == [False, True]
    # the classes come from the config (inference.json's refine_priorities / refine_fallback), not the transform
    assert r["refinement"]["priorities"] == [1, 3] and r["refinement"]["fallback"] == 0
    assert 0.0 < r["difficult_fraction"] < 1.0  # an untrained network: some pixels, never all, below the mean
    for scores in (r["before"], r["after"], r["after_keep_others"]):
        assert 0.0 <= scores["mean_iou"] <= 1.0 and 0.0 <= scores["rand_error"] <= 1.0
    assert (tmp_path / "pics" / "index.html").is_file()


def _two_cell_dataset(root: Path) -> list[dict]:
    """One 8x9 label: membrane (1) in column 4 between two 8x4 cells of intracellular (0)."""
    from scripts.data import write_png

    label = np.zeros((8, 9), np.uint8)
    label[:, 4] = 1
    write_png(root / "image.png", (label * 200).astype(np.uint8))
    write_png(root / "label.png", label)
    return [{"image": str(root / "image.png"), "label": str(root / "label.png")}]


@pytest.mark.parametrize("wrong", [False, True])
def test_refinement_scores_known_predictions(tmp_path, wrong):
    import torch
    from monai.transforms import LoadImage

    from scripts.transforms import DifficultPixelRefine

    items = _two_cell_dataset(tmp_path)

    def predict(item):  # one-hot: every pixel fully confident, so nothing is difficult and after == before
        label = LoadImage(image_only=True)(item["label"]).long().as_tensor()  # read as the script reads labels
        pred = torch.zeros_like(label) if wrong else label
        return label[None].float(), torch.nn.functional.one_hot(pred, 5).permute(2, 0, 1).float()

    paper = {"priorities": (1, 3), "fallback": 0}  # inference.json's refine_priorities / refine_fallback
    refiners = {"fallback": DifficultPixelRefine(**paper), "keep_others": DifficultPixelRefine(**paper, keep_other_classes=True)}
    r = load("evaluate_refinement").score_images(items, predict, refiners, num_classes=5, membrane_class=1)
    assert r["difficult_fraction"] == 0.0
    for scores in (r["before"], r["after"], r["after_keep_others"]):
        if wrong:
            # all intracellular: IoU 64/72 and 0 (membrane missed), classes 2-4 absent from both -> mean (64/72)/2;
            # one predicted cell for two true ones of 32 pixels (skimage counts pixel pairs, sum n^2 - n):
            # precision (2 * 32^2 - 64) / (64^2 - 64) = 31/63, recall 1, error 1 - 2p/(p + 1) = 32/94 = 16/47
            assert scores["iou"][:2] == pytest.approx([64 / 72, 0.0])
            assert scores["mean_iou"] == pytest.approx(32 / 72)
            assert scores["rand_error"] == pytest.approx(16 / 47)
        else:
            assert scores["iou"][:2] == [1.0, 1.0] and scores["mean_iou"] == 1.0 and scores["rand_error"] == 0.0


def test_network_cost(tmp_path):
    out = tmp_path / "cost.json"
    assert load("network_cost").main(["--size", "64", "--json", str(out)]) == 0
    rows = {(r["network"], r["features"][0]): r for r in json.loads(out.read_text())}
    unet, xnet = rows["UNet", 64], rows["XNet", 64]
    # the docs' table (bundle/docs/README.md, Benchmarks): U-Net 64..1024 31.0 M parameters, 96.2 GFLOPs at 256^2
    # (a same-padding network's FLOPs scale with the area: 16x those at 64^2), X-Net 72.5 M, 2.42x the U-Net's FLOPs
    assert unet["params"] / 1e6 == pytest.approx(31.03, abs=0.01)
    assert xnet["params"] / 1e6 == pytest.approx(72.52, abs=0.01)
    assert 16 * unet["flops"] / 1e9 == pytest.approx(96.2, abs=0.1)
    assert xnet["flops"] / unet["flops"] == pytest.approx(2.42, abs=0.01)
    assert rows["DoubleUNet", 64]["params"] == pytest.approx(2 * unet["params"], rel=0.001)  # two U-Nets + a 1x1 conv
    assert unet["output"] == [1, 5, 64, 64]


def test_gpu_suite_smoke(tmp_path):
    # every stage on the CPU at tiny sizes, in-process: the suite that runs on a GPU keeps working
    assert load("gpu_suite").main(["--smoke", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "gpu_suite.json").read_text())
    s = r["stages"]
    assert list(s) == ["cuda_tests", "throughput", "inference", "training"]
    assert s["cuda_tests"]["status"] in ("passed", "all skipped")  # the CUDA-only tests skip themselves on a CPU
    assert [row["network"] for row in s["throughput"]["rows"]] == ["UNet", "XNet"]
    for row in s["throughput"]["rows"]:
        assert row["cached_samples_per_s"] > 0 and row["uncached_samples_per_s"] > 0
    assert s["inference"]["status"] == "done"
    methods = [row["method"] for row in s["inference"]["runs"][0]["report"]["sizes"][0]["results"]]
    assert any("overlap-tile" in m for m in methods) and any("sliding" in m for m in methods), methods
    runs = s["training"]["runs"]
    assert [run["experiment"] for run in runs] == ["xnet_sce_and_iou", "unet_sce_iou"]
    for run in runs:
        # the paper's schedule was merged (1500 epochs, step at 1000), the smoke run shortened it to one epoch
        assert run["epochs"] == 1 and run["final_lr"] == pytest.approx(1e-3)
        assert run["test_images"] == 2 and 0.0 <= run["test_mean_iou"] <= 1.0
        assert set(run["test_iou"]) == {"intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"}
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "| X-Net (SCE and IoU) | 1 |" in md and "Training throughput" in md


def test_gpu_suite_without_cuda_records_it(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert load("gpu_suite").main(["--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "gpu_suite.json").read_text())["stages"]
    assert {v["status"] for v in s.values()} == {"no CUDA"}


def test_inference_workflow_benchmark_compares_two_checkouts(tmp_path):
    """The same checkout on both sides: both timed, the ratio is that of the recorded medians, no output differs."""
    out = tmp_path / "workflow.json"
    r = load("inference_workflow_benchmark").main(["--before", str(REPO), "--size", "64", "--images", "2",
                                                   "--repeats", "1", "--work-dir", str(tmp_path), "--json", str(out)])
    assert json.loads(out.read_text()) == r
    for side in ("before", "after"):
        assert len(r[side]["runs"]) == 1 and len(r[side]["runs"][0]["seconds"]) == 2
        assert r[side]["seconds_per_section"] == r[side]["runs"][0]["seconds"][1] > 0
    assert r["ratio_before_over_after"] == pytest.approx(r["before"]["seconds_per_section"] / r["after"]["seconds_per_section"])
    assert r["files_compared"] == 2 * 9 + 1 and r["files_differing"] == []  # seg, prob, 7 pictures per image; legend


def test_every_torch_load_says_weights_only():
    """Each ``torch.load`` of the benchmarks, the bundle's scripts and the tools passes ``weights_only=True`` (only
    tensors and plain values are unpickled, whatever torch's default), except nnU-Net's own training checkpoint in
    nnunet_peer.py, which holds pickled Python objects and is one the benchmark made itself."""
    import ast

    allowed_false = {"benchmarks/nnunet_peer.py"}
    calls = []
    for folder in ("benchmarks", "bundle/scripts", "tools"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                func = getattr(node, "func", None)
                if isinstance(node, ast.Call) and isinstance(func, ast.Attribute) and func.attr == "load" and \
                        isinstance(func.value, ast.Name) and func.value.id == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    value = getattr(kw.get("weights_only"), "value", None)
                    rel = path.relative_to(REPO).as_posix()
                    calls.append((rel, node.lineno, value is True or (value is False and rel in allowed_false)))
    assert any(rel == "benchmarks/inference_benchmark.py" for rel, _, _ in calls)
    assert [c for c in calls if not c[2]] == []


def test_measure_objects_scores_known_predictions(tmp_path):
    """Labels: a 10 x 10 mitochondrion, a 6 x 6 one and a 4 x 4 synapse; prediction: the first mitochondrion, a
    false one elsewhere, the synapse: mitochondria 1 of 2 matched both ways, the synapse found."""
    from scripts.data import write_png
    from scripts.workflows import FolderMeasurement

    labels = np.zeros((40, 50), np.uint8)
    labels[2:12, 2:12] = 3
    labels[20:26, 30:36] = 3
    labels[30:34, 5:9] = 4
    pred = labels.copy()
    pred[20:26, 30:36] = 0
    pred[2:8, 40:46] = 3
    write_png(tmp_path / "labels" / "a.png", labels)
    write_png(tmp_path / "in" / "a.png", np.zeros_like(labels))
    write_png(tmp_path / "out" / "a_seg.png", pred)
    (tmp_path / "datalist.json").write_text(json.dumps({"testing": [{"image": "in/a.png", "label": "labels/a.png"}]}))
    (tmp_path / "out" / "inference_report.json").write_text(json.dumps({"files": [
        {"input": str(tmp_path / "in" / "a.png"), "output_name": "a", "status": "ok", "outputs": ["a_seg.png"]}]}))
    names = ["intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"]
    FolderMeasurement(tmp_path / "out", names, ["mitochondria", "synapse"], pixel_size_nm=10.0).run().finish()
    out = tmp_path / "r.json"
    r = load("measure_objects").main(["--output_dir", str(tmp_path / "out"), "--datalist", str(tmp_path / "datalist.json"),
                                      "--json", str(out)])
    assert json.loads(out.read_text())["classes"] == r["classes"] and r["images"] == 1
    mito, syn = r["classes"]["mitochondria"], r["classes"]["synapse"]
    assert (mito["gt_count"], mito["pred_count"], mito["matched"]) == (2, 2, 1)
    assert mito["precision"] == mito["recall"] == mito["f1"] == 0.5
    assert mito["gt_area_fraction"] == 136 / 2000 and mito["pred_area_fraction"] == 136 / 2000
    assert mito["gt_per_um2"] == pytest.approx(2 / (2000 * 1e-4))  # 2000 px of 10 x 10 nm = 0.2 µm²
    assert (syn["gt_count"], syn["pred_count"], syn["matched"], syn["f1"]) == (1, 1, 1, 1.0)


def test_volume_benchmark_memory_bound_case_predicts_only_the_written_blocks(tmp_path, capsys):
    """The memory-bound case of volume_benchmark.py: a 40-section OME-Zarr of which 1 section is written; only that
    block is predicted (its labels are not all zero), the others stay unwritten, the peak memory is reported."""
    import zarr

    from scripts.data import make_sample

    bench = load("volume_benchmark")
    model = bench.model_file(SimpleNamespace(ckpt=None, features=[4, 8, 16]), tmp_path)
    path = bench.make_bound_volume(tmp_path / "bound.zarr", make_sample(64, 0)[0][None], 40)
    assert zarr.open_array(store=str(path / "0"), mode="r").shape == (40, 64, 64)
    bench.bound_case(str(path), "1", str(model))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["predicted"] == summary["sections"] == 1 and summary["blocks"] == 40
    assert summary["process_peak_mib"] > 0 and len(summary["peak_memory_mib"]) == 1
    labels = zarr.open_array(store=str(tmp_path / "bound.zarr.out.ome.zarr" / "0"), mode="r")
    assert labels[0].any() and not labels[1:].any()
