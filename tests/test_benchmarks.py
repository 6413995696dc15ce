"""The benchmark scripts still run (tiny sizes, seconds): a benchmark that breaks silently records nothing.

These are smoke runs with checks of what each script must get right whatever the machine (the numbers recorded in
the docs come from full-size runs, see bundle/docs/README.md, Benchmarks).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_train_throughput(tmp_path):
    out = tmp_path / "throughput.json"
    load("train_throughput").main(["--epochs", "2", "--num-train", "4", "--size", "64", "--features", "4", "8", "16",
                                   "--batch-size", "2", "--workers", "0", "--cache-workers", "0",
                                   "--work-dir", str(tmp_path), "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["cached_samples_per_s"] > 0 and r["uncached_samples_per_s"] > 0
    assert r["ratio_cached_over_uncached"] == pytest.approx(r["cached_samples_per_s"] / r["uncached_samples_per_s"], rel=0.01)


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


def test_evaluate_refinement(tmp_path):
    out = tmp_path / "refinement.json"
    load("evaluate_refinement").main(["--num-test", "2", "--size", "64", "--work-dir", str(tmp_path), "--set",
                                      "features=[4,8,16]", "patch_size=[64,64]", "--pictures", str(tmp_path / "pics"),
                                      "--json", str(out)])
    r = json.loads(out.read_text())
    assert set(r) >= {"before", "after"}
    assert (tmp_path / "pics" / "index.html").is_file()


def test_network_cost(capsys):
    assert load("network_cost").main(["--size", "64"]) in (0, None)
    assert "XNet" in capsys.readouterr().out
