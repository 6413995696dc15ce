"""The GPU suite: everything the bundle should show on one GPU, in at most 9 minutes, as one JSON and one table.

Stages, one after the other, each with a time budget (seconds, ``--budget STAGE=S``) inside a hard limit for the
whole run (``--hard-limit-s``, default 540 s = 9 min; a stage gets what is left when it starts, and a stage that
cannot start in time is recorded as skipped):

1. ``cuda_tests``: the CUDA-only tests, ``python -m pytest -q -m cuda tests/``; pass/fail/skip counts.
2. ``throughput``: training throughput, cached on the GPU (the config's ``CacheDataset`` + ``ToDeviced`` +
   ``ThreadDataLoader``) vs uncached (``Dataset`` + ``DataLoader`` workers, pinned memory), with AMP, for U-Net
   (SCE+IoU) and X-Net (SCE and IoU) at the paper's widths 64..1024 (``benchmarks/train_throughput.py``).
3. ``inference``: 1024² and 4096² images, overlap-tile vs sliding window vs one whole pass
   (``benchmarks/inference_benchmark.py``, called through its command line).
4. ``training``: a short run of the paper's protocol (``experiments/paper/paper_protocol.json``, paper widths) for X-Net
   (SCE and IoU) and U-Net (SCE+IoU) on Drosophila fold 0, each for half of the stage's budget (the config's
   ``time_limit_s``, checked at epoch end; as many epochs as fit), then scored on the 4 whole test sections with
   ``evaluate.json``. The data: ``--datalist``, else ``bundle/data/drosophila/datalist_fold0.json``, else the
   dataset is prepared from ``$DROSOPHILA_VNC_DIR`` (or ``../shared/datasets/drosophila-vnc``) into the output
   folder, else synthetic data (recorded as such).

Without CUDA every stage records "no CUDA" and the run ends (exit status 0). ``--smoke`` runs every stage on the
CPU on purpose with tiny sizes (64² synthetic images, features 4..16, one epoch), so that a test keeps the suite
working; its numbers mean nothing.

Writes ``OUT/gpu_suite.json`` (every stage: status, seconds, commands, results) and ``OUT/gpu_suite.md`` (the
tables), and each stage's logs and raw JSON under ``OUT/`` (default ``runs/gpu_suite``).

Usage::

    python benchmarks/gpu_suite.py                       # on a GPU machine, <= 9 min
    bash benchmarks/gpu_suite.sh --out runs/gpu_suite    # the same
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_suite_smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
PAPER_FEATURES = [64, 128, 256, 512, 1024]
STAGES = ("cuda_tests", "throughput", "inference", "training")
#: seconds per stage on a GPU; they sum to 510 s, leaving 30 s of the 540 s hard limit for start-up and writing.
#: From the first H200 run (2026-11-29): the CUDA tests took 36 s; 90 s of throughput covered only the U-Net (paper
#: widths, 64 images x 3 epochs, both pipelines) and 90 s of inference only the 1024^2 image; training used 304 s.
BUDGETS = {"cuda_tests": 50, "throughput": 150, "inference": 110, "training": 200}
#: the training runs of stage 4: (experiment file, label)
TRAINING_RUNS = (("xnet_sce_and_iou", "X-Net (SCE and IoU)"), ("unet_sce_iou", "U-Net (SCE+IoU)"))
#: seconds of a training run's budget kept for start-up (imports, caching) and the evaluation afterwards
EVAL_RESERVE_S = {"gpu": 45, "smoke": 0}

FULL = {
    "pytest_paths": ["tests/"],
    "throughput": {"features": PAPER_FEATURES, "size": 256, "num_train": 32, "epochs": 2, "batch_size": 8,
                   "workers": 8, "cache_workers": 8},
    "inference": {"sizes": [1024, 4096], "features": PAPER_FEATURES, "roi": 256, "repeats": 1},
    "training": {"features": PAPER_FEATURES, "patch_size": [256, 256], "batch_size": 8, "cache_workers": 8,
                 "synthetic": {"num_train": 64, "num_val": 16, "num_test": 8, "size": 256}},
}
SMOKE = {
    "pytest_paths": ["tests/test_cuda_path.py"],
    "throughput": {"features": [4, 8, 16], "size": 64, "num_train": 4, "epochs": 2, "batch_size": 2,
                   "workers": 0, "cache_workers": 0},
    "inference": {"sizes": [96], "features": [4, 8, 16], "roi": 32, "repeats": 1},
    "training": {"features": [4, 8, 16], "patch_size": [64, 64], "batch_size": 2, "cache_workers": 0, "epochs": 1,
                 "synthetic": {"num_train": 4, "num_val": 2, "num_test": 2, "size": 64}},
}


class Clock:
    """Seconds left of the hard limit, and a stage's budget within it."""

    def __init__(self, hard_limit_s: float) -> None:
        self.start = time.monotonic()
        self.hard_limit_s = hard_limit_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.hard_limit_s - self.elapsed()

    def budget(self, stage_s: float) -> float:
        """What a stage may use: its own budget, never past the hard limit."""
        return max(0.0, min(stage_s, self.left()))


#: ``--smoke`` runs the stages' Python commands in this process (same arguments, same ``main``), because on a small
#: CPU the interpreter and library start-up of a dozen processes would cost more than the tiny work itself.
IN_PROCESS = {"enabled": False}


def _main_of(cmd: list[str]):
    """The ``main(argv)`` a ``[python, script.py | -m module, *args]`` command would run, and its argv."""
    import importlib
    import importlib.util

    if cmd[1] == "-m":
        return importlib.import_module(cmd[2]).main, cmd[3:]
    path = REPO / cmd[1]
    if path.resolve() == Path(__file__).resolve():
        return main, cmd[2:]
    spec = importlib.util.spec_from_file_location(f"gpu_suite_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main, cmd[2:]


def _run_in_process(cmd: list[str], log: Path, env: dict | None) -> int:
    import contextlib
    import traceback

    saved = dict(os.environ)
    os.environ.update({k: v for k, v in (env or {}).items() if k != "PYTHONPATH"})
    try:
        with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            try:
                fn, argv = _main_of(cmd)
                rc = fn(argv)
                return rc if isinstance(rc, int) else 0
            except SystemExit as e:
                return e.code if isinstance(e.code, int) else 1
            except Exception:  # recorded like a failed process
                traceback.print_exc()
                return 1
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_command(cmd: list[str], timeout_s: float, log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` in its own process group, killed (with its children) after ``timeout_s``; stdout+stderr to ``log``.

    With ``IN_PROCESS`` (``--smoke``), a Python command (``python script.py ...``, ``python -m module ...``) calls the
    script's ``main(argv)`` in this process instead, without the timeout.

    Returns:
        ``{"cmd", "returncode", "seconds", "timed_out", "tail"}`` (``tail``: the last 2000 characters of the log).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if IN_PROCESS["enabled"] and cmd[0] == sys.executable and cmd[1:3] != ["-m", "pytest"]:
        rc = _run_in_process(cmd, log, env)
        return {"cmd": " ".join(cmd), "returncode": rc, "seconds": round(time.monotonic() - t0, 2),
                "timed_out": False, "tail": log.read_text(errors="replace")[-2000:]}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env or child_env(),
                                start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=max(1.0, timeout_s)), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
    text = log.read_text(errors="replace")
    return {"cmd": " ".join(cmd), "returncode": rc, "seconds": round(time.monotonic() - t0, 2),
            "timed_out": timed_out, "tail": text[-2000:]}


def child_env(**extra: str) -> dict:
    """The environment of the stages' processes: this checkout's ``bundle/`` first on ``PYTHONPATH``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BUNDLE), os.environ.get("PYTHONPATH", "")) if p)
    return env


def pytest_counts(text: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, ...}`` from pytest's summary line ("3 passed, 2 skipped in 1.2s")."""
    lines = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected|error)", ln)]
    if not lines:
        return {}
    counts = {}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", lines[-1]):
        counts["errors" if word.startswith("error") else word] = int(n)
    return counts


# ---- stages -------------------------------------------------------------------------------------------------------


def stage_cuda_tests(cfg: dict, out: Path, budget_s: float, device: str) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *cfg["pytest_paths"]]
    r = run_command(cmd, budget_s, out / "cuda_tests.log")
    counts = pytest_counts(r["tail"])
    if r["timed_out"]:
        status = "timed out"
    elif r["returncode"] == 5:  # pytest: no test collected / all deselected
        status = "no test selected"
    elif r["returncode"] != 0:
        status = "failed"
    else:  # on a machine without CUDA the cuda tests skip themselves
        status = "passed" if counts.get("passed") else "all skipped"
    return {"status": status, "counts": counts, "commands": [r["cmd"]], "returncode": r["returncode"],
            "seconds": r["seconds"], "log": str(out / "cuda_tests.log")}


def stage_throughput(cfg: dict, out: Path, budget_s: float, device: str) -> dict:
    clock = Clock(budget_s)
    rows, commands, status = [], [], "done"
    for experiment, label in (("unet_sce_iou", "U-Net (SCE+IoU)"), ("xnet_sce_and_iou", "X-Net (SCE and IoU)")):
        if clock.left() < 5:
            status = "budget spent"
            break
        json_path = out / f"throughput_{experiment}.json"
        cmd = [sys.executable, "benchmarks/train_throughput.py", "--device", device, "--experiment", experiment,
               "--epochs", str(cfg["epochs"]), "--num-train", str(cfg["num_train"]), "--size", str(cfg["size"]),
               "--features", *map(str, cfg["features"]), "--batch-size", str(cfg["batch_size"]),
               "--workers", str(cfg["workers"]), "--cache-workers", str(cfg["cache_workers"]),
               "--work-dir", str(out / "throughput_data"), "--json", str(json_path)]
        r = run_command(cmd, clock.left(), out / f"throughput_{experiment}.log")
        commands.append(r["cmd"])
        row = {"network": label, "returncode": r["returncode"], "timed_out": r["timed_out"], "seconds": r["seconds"]}
        if r["returncode"] == 0 and json_path.is_file():
            row.update(json.loads(json_path.read_text()))
        else:
            status = "failed" if not r["timed_out"] else "timed out"
            row["tail"] = r["tail"][-600:]
        rows.append(row)
    return {"status": status, "rows": rows, "commands": commands}


def stage_inference(cfg: dict, out: Path, budget_s: float, device: str, smoke: bool) -> dict:
    clock = Clock(budget_s)
    runs, commands, status = [], [], "done"
    # the smoke run times a synthetic image whatever the machine holds (the real section needs no cropping then)
    env = child_env(DROSOPHILA_VNC_DIR=str(out / "no_dataset")) if smoke else None
    for size in cfg["sizes"]:
        if clock.left() < 5:
            status = "budget spent"
            break
        json_path = out / f"inference_{size}.json"
        full = ["--size", str(size), "--device", device, "--features", *map(str, cfg["features"]),
                "--roi", str(cfg["roi"]), "--repeats", str(cfg["repeats"]), "--json", str(json_path)]
        cmd = [sys.executable, "benchmarks/inference_benchmark.py", *full]
        r = run_command(cmd, clock.left(), out / f"inference_{size}.log", env)
        commands.append(r["cmd"])
        run = {"size": size, "returncode": r["returncode"], "timed_out": r["timed_out"], "seconds": r["seconds"]}
        if r["returncode"] == 0 and json_path.is_file():
            run["report"] = json.loads(json_path.read_text())
        else:
            status = "failed" if not r["timed_out"] else "timed out"
            run["tail"] = r["tail"][-600:]
        runs.append(run)
    return {"status": status, "runs": runs, "commands": commands}


def find_drosophila_source() -> Path | None:
    candidates = [os.environ.get("DROSOPHILA_VNC_DIR"), REPO.parent / "shared" / "datasets" / "drosophila-vnc",
                  REPO / "shared" / "datasets" / "drosophila-vnc"]
    for c in candidates:
        if c and (Path(c) / "stack1" / "raw").is_dir() and (Path(c) / "stack1" / "labels").is_dir():
            return Path(c)
    return None


def training_data(cfg: dict, out: Path, datalist: str | None, smoke: bool, timeout_s: float) -> tuple[Path, str, list]:
    """The datalist of stage 4 and what it is: Drosophila fold 0 (given, prepared, or prepared now) or synthetic."""
    commands = []
    if datalist:
        return Path(datalist), "given datalist", commands
    if not smoke:
        prepared = BUNDLE / "data" / "drosophila" / "datalist_fold0.json"
        if prepared.is_file():
            return prepared, "Drosophila fold 0", commands
        src = find_drosophila_source()
        if src is not None:
            dst = out / "data" / "drosophila"
            cmd = [sys.executable, "-m", "scripts.data.prepare", "drosophila", "--src", str(src), "--out", str(dst)]
            r = run_command(cmd, timeout_s, out / "prepare_drosophila.log")
            commands.append(r["cmd"])
            if r["returncode"] == 0:
                return dst / "datalist_fold0.json", "Drosophila fold 0 (prepared by the suite)", commands
    syn = cfg["synthetic"]
    cmd = [sys.executable, "-m", "scripts.data.prepare", "synthetic", "--out", str(out / "data" / "synthetic"),
           "--num-train", str(syn["num_train"]), "--num-val", str(syn["num_val"]), "--num-test", str(syn["num_test"]),
           "--size", str(syn["size"])]
    r = run_command(cmd, timeout_s, out / "prepare_synthetic.log")
    commands.append(r["cmd"])
    if r["returncode"] != 0:
        raise RuntimeError(f"synthetic data could not be written: {r['tail'][-600:]}")
    return out / "data" / "synthetic" / "datalist.json", "synthetic (no Drosophila data found)", commands


def stage_training(cfg: dict, out: Path, budget_s: float, device: str, smoke: bool, datalist: str | None) -> dict:
    clock = Clock(budget_s)
    datalist_path, data_note, commands = training_data(cfg, out, datalist, smoke, clock.budget(120))
    # whole sections where the data has them (Drosophila); synthetic images are whole images already
    test_key = "testing_sections" if data_note.startswith("Drosophila") else "testing"
    runs, status = [], "done"
    for i, (experiment, label) in enumerate(TRAINING_RUNS):
        run_budget = clock.left() / (len(TRAINING_RUNS) - i)
        reserve = EVAL_RESERVE_S["smoke" if smoke else "gpu"]
        if run_budget - reserve < 5:
            status = "budget spent"
            runs.append({"network": label, "status": "skipped: budget spent"})
            continue
        run_dir = out / "training" / experiment
        spec = {
            "configs": [str(CONFIGS / "train.json"), str(CONFIGS / "experiments" / "paper" / f"{experiment}.json"),
                        str(CONFIGS / "experiments" / "paper" / "paper_protocol.json")],
            "evaluate_config": str(CONFIGS / "evaluate.json"),
            "overrides": {
                "datalist_file": str(datalist_path), "bundle_root": str(run_dir), "features": cfg["features"],
                "patch_size": cfg["patch_size"], "batch_size": cfg["batch_size"], "val_batch_size": cfg["batch_size"],
                "cache_workers": cfg["cache_workers"], "show_progress": False,
                "time_limit_s": max(1, int(run_budget - reserve)),
                **({"epochs": cfg["epochs"]} if "epochs" in cfg else {}),
            },
            "test_key": test_key,
            "result": str(run_dir / "job.json"),
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "job_spec.json").write_text(json.dumps(spec, indent=2))
        cmd = [sys.executable, "benchmarks/gpu_suite.py", "--train-job", str(run_dir / "job_spec.json")]
        r = run_command(cmd, clock.left() / (len(TRAINING_RUNS) - i), run_dir / "job.log")
        commands.append(r["cmd"])
        job = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).is_file() else {}
        run = {"network": label, "experiment": experiment, "returncode": r["returncode"], "timed_out": r["timed_out"],
               "seconds": r["seconds"], **job}
        if r["returncode"] != 0:
            status = "failed" if not r["timed_out"] else "timed out"
            run["tail"] = r["tail"][-600:]
        runs.append(run)
    return {"status": status, "data": data_note, "datalist": str(datalist_path), "test_key": test_key,
            "runs": runs, "commands": commands}


def train_job(spec_path: str) -> int:
    """One training run then its evaluation, in this process, through ``monai.bundle.run`` (the CLI's function).

    Writes ``spec["result"]`` after each phase: epochs run, best validation mIoU, learning rate at the end, test
    scores (mIoU, per-class IoU, per-image mean IoU).
    """
    from monai.bundle import create_workflow, run

    spec = json.loads(Path(spec_path).read_text())
    result: dict = {"configs": spec["configs"], "overrides": spec["overrides"]}
    save = lambda: Path(spec["result"]).write_text(json.dumps(result, indent=2))  # noqa: E731
    t0 = time.monotonic()
    workflow = create_workflow(config_file=spec["configs"], run_id="training", **spec["overrides"])
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    optimizer = workflow.parser.get_parsed_content("optimizer")
    workflow.finalize()
    result.update(
        train_seconds=round(time.monotonic() - t0, 1), epochs=trainer.state.epoch,
        planned_epochs=trainer.state.max_epochs, final_lr=optimizer.param_groups[0]["lr"],
        best_val_mean_iou=round(float(evaluator.state.best_metric), 4), best_val_epoch=evaluator.state.best_metric_epoch,
    )
    save()
    t1 = time.monotonic()
    eval_dir = Path(spec["overrides"]["bundle_root"]) / "eval_test"
    run("evaluating", config_file=spec["configs"] + [spec["evaluate_config"]], test_key=spec["test_key"],
        output_dir=str(eval_dir), **spec["overrides"])
    report = json.loads((eval_dir / "metrics.json").read_text())
    result.update(eval_seconds=round(time.monotonic() - t1, 1), test_key=spec["test_key"],
                  test_images=report.get("num_images"), test_mean_iou=report.get("mean_iou"),
                  test_per_image_mean_iou=report.get("per_image_mean_iou"),
                  test_iou={name: c["accumulated"]["iou"] for name, c in report.get("per_class", {}).items()},
                  metrics_file=str(eval_dir / "metrics.json"))
    save()
    return 0


# ---- report -------------------------------------------------------------------------------------------------------


def _f(v, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ("" if v is None else str(v))


def markdown(report: dict) -> str:
    s = report["stages"]
    lines = [f"# GPU suite ({'smoke, CPU' if report['smoke'] else report['device']})", "",
             f"{report['started']}, commit {report['commit']}, {report['seconds']:.0f} s of a {report['hard_limit_s']:.0f} s "
             f"hard limit; torch {report['torch']}, MONAI {report['monai']}.", ""]
    lines += ["| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {st.get('status')} | {_f(st.get('seconds'), 0)} |" for name, st in s.items()]
    st = s.get("cuda_tests", {})
    if st.get("counts"):
        lines += ["", "## CUDA-only tests", "", ", ".join(f"{n} {k}" for k, n in st["counts"].items())]
    st = s.get("throughput", {})
    if st.get("rows"):
        lines += ["", "## Training throughput (samples/s, AMP on a GPU)", "",
                  "| network | features | cached (CacheDataset + ToDeviced + ThreadDataLoader) | uncached (Dataset + "
                  "DataLoader workers) | cached/uncached |", "|---|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(f"| {r['network']} | {r.get('features', '')} | {_f(r.get('cached_samples_per_s'))} | "
                         f"{_f(r.get('uncached_samples_per_s'))} | {_f(r.get('ratio_cached_over_uncached'))} |")
    st = s.get("inference", {})
    if st.get("runs"):
        lines += ["", "## Inference (median seconds per image)", "", "| size | method | seconds | x whole pass | "
                  "peak MiB |", "|---|---|---|---|---|"]
        for run in st["runs"]:
            report = run.get("report") or {}
            # one block per size ("sizes", inference_benchmark.py since v0.4) or one flat "results" list (before)
            rows = [r for block in report.get("sizes", [report]) for r in block.get("results", [])]
            for row in rows:
                lines.append(f"| {run['size']}² | {row.get('method')} | {_f(row.get('seconds'), 3)} | "
                             f"{_f(row.get('time_vs_floor'))} | {_f(row.get('peak_mib'), 0)} |")
    st = s.get("training", {})
    if st.get("runs"):
        lines += ["", f"## Paper-protocol training, time-boxed ({st.get('data')}; test: {st.get('test_key')})", "",
                  "| network | epochs | lr at end | best val mIoU (epoch) | test mIoU | per-image mIoU | per-class IoU |",
                  "|---|---|---|---|---|---|---|"]
        for r in st["runs"]:
            iou = list((r.get("test_iou") or {}).values())
            lines.append(f"| {r['network']} | {r.get('epochs', '')} | {_f(r.get('final_lr'), 5)} | "
                         f"{_f(r.get('best_val_mean_iou'), 4)} ({r.get('best_val_epoch', '')}) | "
                         f"{_f(r.get('test_mean_iou'), 4)} | {_f(r.get('test_per_image_mean_iou'), 4)} | "
                         f"{', '.join(_f(v, 3) for v in iou)} |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "runs" / "gpu_suite"), help="output folder (default runs/gpu_suite)")
    ap.add_argument("--smoke", action="store_true", help="every stage on the CPU at tiny sizes (for the tests)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run, in order")
    ap.add_argument("--hard-limit-s", type=float, default=540.0, help="limit for the whole run (default 540 s)")
    ap.add_argument("--budget", nargs="*", default=[], metavar="STAGE=S", help="stage budgets in seconds, e.g. training=300")
    ap.add_argument("--datalist", default=None, help="datalist of the training stage (default: Drosophila fold 0)")
    ap.add_argument("--train-job", default=None, help=argparse.SUPPRESS)  # internal: one run of stage 4
    args = ap.parse_args(argv)
    if args.train_job:
        return train_job(args.train_job)

    import monai
    import torch

    budgets = dict(BUDGETS)
    for item in args.budget:
        name, _, value = item.partition("=")
        if name not in BUDGETS or not value.replace(".", "", 1).isdigit():
            ap.error(f"--budget {item!r}: expected STAGE=SECONDS with STAGE one of {', '.join(STAGES)}")
        budgets[name] = float(value)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = "cpu" if args.smoke else "cuda"
    cfg = SMOKE if args.smoke else FULL
    IN_PROCESS["enabled"] = args.smoke
    clock = Clock(args.hard_limit_s)
    report = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": _commit(), "smoke": args.smoke,
        "device": torch.cuda.get_device_name(0) if cuda and not args.smoke else "cpu",
        "torch": torch.__version__, "monai": monai.__version__, "hard_limit_s": args.hard_limit_s,
        "budgets_s": budgets, "stages": {},
    }
    for name in args.stages:
        t0 = time.monotonic()
        budget = clock.budget(budgets[name])
        if not cuda and not args.smoke:
            result = {"status": "no CUDA", "note": "torch.cuda.is_available() is False; nothing was measured"}
        elif budget < 5:
            result = {"status": "skipped: hard limit reached"}
        else:
            try:
                if name == "cuda_tests":
                    result = stage_cuda_tests(cfg, out, budget, device)
                elif name == "throughput":
                    result = stage_throughput(cfg["throughput"], out, budget, device)
                elif name == "inference":
                    result = stage_inference(cfg["inference"], out, budget, device, args.smoke)
                else:
                    result = stage_training(cfg["training"], out, budget, device, args.smoke, args.datalist)
            except Exception as e:  # a broken stage is recorded and the others still run
                result = {"status": f"error: {type(e).__name__}: {e}"}
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["budget_s"] = round(budget, 1)
        report["stages"][name] = result
        report["seconds"] = round(clock.elapsed(), 1)
        (out / "gpu_suite.json").write_text(json.dumps(report, indent=2))  # after every stage: a killed run keeps it
        print(f"[gpu_suite] {name}: {result['status']} ({result['seconds']} s)", flush=True)
    (out / "gpu_suite.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
