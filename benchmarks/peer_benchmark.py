"""Side by side on Drosophila fold 0: nnU-Net v2, ours (U-Net, X-Net) and MONAI's standard recipe, same budget.

One after the other in one run, on the same machine, each with the same wall-clock training budget
(``--budget_min``, default 45 minutes), all trained on the fold's 12 training sections (validated on its 4
validation sections) and scored on its 4 whole test sections by the bundle's metric code:

- ``nnunet``: ``benchmarks/nnunet_peer.py all`` with the Python of ``.venv-nnunet`` (``bash tools/nnunet_env.sh``;
  recorded as not run when that environment is missing): its budget trainer sizes the epochs to the budget;
- ``ours_shipped``: the shipped model's recipe, ``train.json`` + ``recipes/shipped.json`` (U-Net SCE+IoU without
  class weights, section patches, poly decay);
- ``ours_unet``: the shipped recipe before v0.7.0 (class-weighted cross entropy; the peer table's "ours" row),
  ``train.json`` + ``experiments/paper/unet_sce_iou.json`` + ``experiments/recipe/section_patches.json`` +
  ``experiments/recipe/poly_lr.json``;
- ``monai_basic_unet``: ``train.json`` + ``experiments/peers/monai_basic_unet.json`` (BasicUNet + DiceCELoss + Adam,
  the same augmentation, train.json's step schedule; MONAI's sliding window at validation and test time) +
  ``experiments/recipe/section_patches.json`` (random patches from whole images, as Model Zoo bundles sample);
- ``ours_xnet``: ``ours_unet``'s recipe with ``experiments/paper/xnet_sce_and_iou.json`` (the config's default
  network).

The bundle entries fit their epochs to the budget as nnU-Net's budget trainer does: ``--time_budget_s`` = the
budget (the bundle's ``FitEpochsToBudget`` times the epochs and, after each one, sets the number of epochs and the
schedule, the poly decay's end or the step at 75%, to what ends within the budget), ``--epochs`` = a first guess from
the minutes per epoch of ``MINUTES_PER_EPOCH`` (``--epochs NAME=N`` overrides it), ``--time_limit_s`` = the budget
as a guard, and no early stopping. Widths ``--features`` (default 16..256, the shipped model's) for ours; BasicUNet
keeps MONAI's default widths. Each keeps its own usual checkpoint: ours the best validation epoch (validation on the
4 whole validation sections), nnU-Net ``checkpoint_final.pth`` (its default for prediction). Scores: ``evaluate.json`` on
``testing_sections`` (IoU accumulated over the 4 sections, per class and mean; per-image mean IoU); nnU-Net's
predictions are scored by ``nnunet_peer.score_predictions`` with the same confusion-matrix code.

While each entry runs, the 1-minute load average is sampled every 30 s and the CPU seconds of the entry's
processes are counted, so that a run disturbed by other work shows it (``load_mean``, ``load_max``, ``cpu_s`` and
``cpu_per_s`` = CPU seconds per wall-clock second in the report; nnU-Net's cover its whole entry: conversion,
planning, training and prediction; the bundle entries' their training).

Writes ``OUT/peers.json`` and ``OUT/peers.md`` (default ``runs/peers``) after every entry. ``--resume`` keeps the
entries of an earlier run with the same budget and datalist that are done, and reruns the others from scratch.
A file ``OUT/PAUSE`` holds the run before its next entry until it is removed (for other work on the machine).

Recipe A/B runs use the same machinery: ``--arm 'NAME=EXP[,EXP...] [--key value ...]'`` adds a bundle entry
(override files on top of ``train.json``, named by file name: ``recipes/EXP.json`` or
``experiments/<group>/EXP.json``; then command-line overrides), ``--minutes NAME=M`` its
minutes per epoch (default: the U-Net's), and ``--eval_key validation_sections`` scores the validation sections
(decisions are made on the validation split; the test sections are for the final numbers). The best validation
mIoU of each bundle run's own validation is reported too.

Equal epochs instead of equal time (the X-Net paper compares networks at equal epochs): ``--fixed_epochs N`` trains
every bundle entry for exactly N epochs (no budget fit, so the poly decay ends at epoch N for each), with
``--budget_min`` only as each entry's time limit; an entry that reaches that limit first is reported as stopped, with
the epochs it did. nnU-Net has no such mode here, so leave it out (``--only``).

Usage::

    python benchmarks/peer_benchmark.py --budget_min 45 --datalist bundle/data/drosophila/datalist_fold0.json
    python benchmarks/peer_benchmark.py --only ours_unet nnunet --budget_min 60
    python benchmarks/peer_benchmark.py --dry_run          # print the commands only
    python benchmarks/peer_benchmark.py --budget_min 45 --eval_key validation_sections --out runs/recipe_ab \\
        --arm crops_step=unet_sce_iou --arm patches_poly=unet_sce_iou,section_patches,poly_lr
    python benchmarks/peer_benchmark.py --fixed_epochs 15 --budget_min 60 --only ours_unet ours_xnet
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
#: name -> (label, experiment files on top of train.json), in the order they run
ENTRIES = {
    "nnunet": ("nnU-Net v2 2D (1 GB plan, budget trainer)", None),
    "ours_shipped": ("Ours: the shipped recipe (recipes/shipped.json: U-Net SCE+IoU, no class weights)", ("shipped",)),
    "ours_unet": ("Ours: U-Net (SCE+IoU, class-weighted), section patches + poly (shipped before v0.7.0)",
                  ("unet_sce_iou", "section_patches", "poly_lr")),
    "monai_basic_unet": ("MONAI recipe: BasicUNet + DiceCE + Adam", ("monai_basic_unet", "section_patches")),
    "ours_xnet": ("Ours: X-Net (SCE and IoU, class-weighted), section patches + poly",
                  ("xnet_sce_and_iou", "section_patches", "poly_lr")),
}
#: minutes per epoch (192 patches, batch 8, validation on the 4 whole sections) on the 2-core development CPU: the
#: U-Net 16..256 measured (the shipped model's run, epochs 30-90: 60 epochs in 50.1 min); X-Net and BasicUNet
#: estimated from their cost per training step relative to the U-Net (3.13x and 3.55x, batch 8 x 256^2,
#: channels-last, Adam, 2 threads), plus their validation. They only size the first epoch's schedule and the
#: table's "planned" column: the bundle's FitEpochsToBudget refits the epochs and the schedule to the budget after
#: every epoch, as nnU-Net's budget trainer does.
MINUTES_PER_EPOCH = {"ours_shipped": 0.84, "ours_unet": 0.84, "ours_xnet": 2.7, "monai_basic_unet": 3.3}


def config_file(name: str) -> Path:
    """The override file called ``name``: ``recipes/<name>.json`` or ``experiments/<group>/<name>.json`` (file names
    are unique across the groups)."""
    candidates = [CONFIGS / "recipes" / f"{name}.json", *sorted((CONFIGS / "experiments").glob(f"*/{name}.json"))]
    found = [p for p in candidates if p.is_file()]
    if len(found) != 1:
        raise ValueError(f"{name}: expected one bundle/configs/recipes/{name}.json or "
                         f"bundle/configs/experiments/<group>/{name}.json, found {len(found)}.")
    return found[0]


def planned_epochs(budget_min: float, minutes_per_epoch: float) -> int:
    """Whole epochs that fit the budget at the measured speed (at least 2, so that a schedule has a second step)."""
    if budget_min <= 0 or minutes_per_epoch <= 0:
        raise ValueError(f"need a positive budget and speed, got {budget_min} min, {minutes_per_epoch} min/epoch.")
    return max(2, math.floor(budget_min / minutes_per_epoch + 1e-9))


def parse_arm(spec: str) -> tuple[str, tuple[str, ...], list[str]]:
    """``NAME=EXP[,EXP...] [--key value ...]`` -> (name, experiment files, command-line overrides)."""
    head, *overrides = shlex.split(spec)
    name, sep, exps = head.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in ENTRIES:
        raise ValueError(f"--arm {spec!r}: expected NAME=EXP[,EXP...] with a new NAME of letters, digits and _.")
    experiments = tuple(e for e in exps.split(",") if e)
    for e in experiments:
        try:
            config_file(e)
        except ValueError as err:
            raise ValueError(f"--arm {spec!r}: {err}") from None
    if len(overrides) % 2:
        raise ValueError(f"--arm {spec!r}: overrides come in pairs (--key value).")
    owned = {"--epochs", "--time_budget_s", "--time_limit_s", "--bundle_root", "--datalist_file"}
    if owned & set(overrides[::2]):
        raise ValueError(f"--arm {spec!r}: {', '.join(sorted(owned & set(overrides[::2])))} belong to the driver "
                         "(--budget_min, --epochs NAME=N, --datalist).")
    return name, experiments, overrides


def bundle_commands(name: str, args: argparse.Namespace, epochs: int) -> tuple[list[str], list[str], Path]:
    """Training and evaluation command lines of one bundle entry, and its metrics file."""
    root = Path(args.out) / name
    _, experiments, overrides = args.entries[name]
    configs = [str(CONFIGS / "train.json")] + [str(config_file(e)) for e in experiments]
    common = ["--datalist_file", args.datalist, "--bundle_root", str(root),
              "--features", json.dumps(args.features), "--cache_workers", "1"]
    # equal time: the epochs are a first guess that the budget fit corrects; equal epochs: exactly these epochs
    budget = [] if args.fixed_epochs else ["--time_budget_s", str(int(args.budget_min * 60))]
    train = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs), *common,
             "--epochs", str(epochs), *budget, "--time_limit_s", str(int(args.budget_min * 60)),
             "--early_stop_patience", "1000000", "--show_progress", "False", *overrides]
    evaluate = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file",
                json.dumps(configs + [str(CONFIGS / "evaluate.json")]), *common, *overrides,
                "--test_key", args.eval_key, "--output_dir", str(root / f"eval_{args.eval_key}")]
    return train, evaluate, root / f"eval_{args.eval_key}" / "metrics.json"


def nnunet_command(args: argparse.Namespace) -> list[str]:
    return [args.nnunet_python, str(REPO / "benchmarks" / "nnunet_peer.py"), "all", "--datalist", args.datalist,
            "--budget_min", str(args.budget_min), "--work_dir", str(Path(args.out) / "nnunet"),
            "--json", str(Path(args.out) / "nnunet" / "scores.json")]


class LoadSampler:
    """The 1-minute load average every ``interval_s`` seconds while a block runs (the entry's own processes
    included: a 2-core machine running one entry alone shows about 2), and the CPU seconds of the child processes
    that ended in the block (the entry's)."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s, self.samples = interval_s, []
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu0 = usage.ru_utime + usage.ru_stime
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = usage.ru_utime + usage.ru_stime - self._cpu0

    def summary(self) -> dict:
        s = self.samples
        return {"load_mean": round(sum(s) / len(s), 2) if s else None, "load_max": round(max(s), 2) if s else None,
                "cpu_s": round(self.cpu_s, 1)}


def run(cmd: list[str], log: Path, timeout_s: float) -> dict:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "bundle"), os.environ.get("PYTHONPATH", "")) if p)
    t0 = time.monotonic()
    with open(log, "w") as f, LoadSampler() as load:
        # its own process group, so that a timeout also stops what it started (nnU-Net's trainer and data workers)
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
    seconds = round(time.monotonic() - t0, 1)
    summary = load.summary()
    return {"cmd": shlex.join(cmd), "returncode": rc, "seconds": seconds, "log": str(log), **summary,
            "cpu_per_s": round(summary["cpu_s"] / seconds, 2) if seconds > 0 else None}


def scores_from_metrics(path: Path) -> dict:
    """The evaluate.json report reduced to the table's numbers."""
    report = json.loads(path.read_text())
    return {"images": report["num_images"], "mean_iou": report["mean_iou"],
            "per_image_mean_iou": report["per_image_mean_iou"],
            "iou": {n: c["accumulated"]["iou"] for n, c in report["per_class"].items()}}


def markdown(report: dict) -> str:
    def f(v) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"

    def na(v) -> str:
        return "n/a" if v is None else str(v)

    key = report.get("eval_key", "testing_sections")
    each = (f"{report['fixed_epochs']} epochs of training each (time limit {report['budget_min']:g} min)"
            if report.get("fixed_epochs") else f"{report['budget_min']:g} min of training each")
    lines = [f"# Drosophila fold 0, {each}, scored on {key} ({report['machine']})", "",
             "| method | status | train s | epochs | mean load | best val mIoU | mIoU | per-image mIoU | intracellular "
             "| membrane | glia/extracellular | mitochondria | synapse |", "|---" * 13 + "|"]
    for name, e in report["entries"].items():
        s = e.get("scores") or {}
        iou = list((s.get("iou") or {}).values()) or [None] * 5
        lines.append(f"| {e.get('label', name)} | {e['status']} | {e.get('train_seconds', 'n/a')} | "
                     f"{e.get('epochs', 'n/a')} | {na(e.get('load_mean'))} | {f(e.get('best_val_mean_iou'))} | "
                     f"{f(s.get('mean_iou'))} | {f(s.get('per_image_mean_iou'))} | " + " | ".join(f(v) for v in iou) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """The CPU model and core count (the table's numbers belong to one machine)."""
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{model + ', ' if model else ''}{os.cpu_count()} CPUs"


def epochs_done(log: Path) -> int | None:
    """The last epoch a bundle run saved (its checkpoint is saved every epoch, also when the run is stopped at that
    epoch's end, when Ignite does not log the epoch "Complete")."""
    if not log.is_file():
        return None
    done = re.findall(r"Saved checkpoint at epoch: (\d+)", log.read_text(errors="replace"))
    return max(map(int, done)) if done else None


def wait_while_paused(flag: Path, poll_s: float = 10.0) -> None:
    """Wait before the next entry while ``flag`` exists (``touch OUT/PAUSE``: other work can then use the machine
    between two entries without disturbing one; remove the file to go on)."""
    if flag.exists():
        print(f"[peer_benchmark] paused: waiting for {flag} to be removed", flush=True)
    while flag.exists():
        time.sleep(poll_s)


def validations(log: Path) -> list[float]:
    """Every validation mean IoU a bundle run's log reports, in order."""
    if not log.is_file():
        return []
    return [float(v) for v in re.findall(r"Metrics -- val_mean_iou: ([0-9.]+)", log.read_text(errors="replace"))]


def previous_entries(path: Path, args: argparse.Namespace) -> dict:
    """The done entries of an earlier report with the same budget, epochs mode, datalist and scored key
    (``--resume``); the caller keeps one only when its commands are those it would run now."""
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    if (report.get("budget_min"), report.get("fixed_epochs"), report.get("datalist"),
            report.get("eval_key", "testing_sections")) != (
            args.budget_min, args.fixed_epochs, args.datalist, args.eval_key):
        return {}
    return {n: e for n, e in report.get("entries", {}).items() if e.get("status") == "done"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget_min", type=float, default=45.0, help="training wall-clock minutes per method (>= 45 "
                    "for the docs' table)")
    ap.add_argument("--datalist", default=str(REPO / "bundle" / "data" / "drosophila" / "datalist_fold0.json"))
    ap.add_argument("--out", default=str(REPO / "runs" / "peers"))
    ap.add_argument("--only", nargs="+", default=None, help=f"entries to run, in this order (default: "
                    f"{' '.join(ENTRIES)}, or the --arm entries when there are any)")
    ap.add_argument("--arm", action="append", default=[], metavar="'NAME=EXP[,EXP...] [--key value ...]'",
                    help="an extra bundle entry (a recipe A/B): override files (by name, from configs/recipes or "
                    "configs/experiments/<group>) on top of train.json, then command-line overrides of train.json, "
                    "e.g. 'crops_step=unet_sce_iou' or 'sgd=unet_sce_iou,section_patches,poly_lr "
                    "--optimizer#_target_ torch.optim.SGD'")
    ap.add_argument("--minutes", nargs="*", default=[], metavar="NAME=M", help="minutes per epoch of an entry (an "
                    "arm defaults to the U-Net's)")
    ap.add_argument("--eval_key", default="testing_sections", help="datalist key scored after training "
                    "(validation_sections for recipe decisions: the test sections are for the final numbers)")
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="ours (U-Net, X-Net)")
    ap.add_argument("--epochs", nargs="*", default=[], metavar="NAME=N", help="override the estimated epochs")
    ap.add_argument("--fixed_epochs", type=int, default=None, metavar="N", help="equal epochs instead of equal time: "
                    "every bundle entry trains exactly N epochs, --budget_min is only its time limit (no nnunet)")
    ap.add_argument("--nnunet_python", default=str(REPO / ".venv-nnunet" / "bin" / "python"))
    ap.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--resume", action="store_true", help="keep the done entries of OUT/peers.json (same budget "
                    "and datalist) and run the others")
    args = ap.parse_args(argv)
    args.entries = {name: (label, exps or (), []) for name, (label, exps) in ENTRIES.items()}
    minutes = dict(MINUTES_PER_EPOCH)
    for spec in args.arm:
        try:
            name, exps, overrides = parse_arm(spec)
        except ValueError as e:
            ap.error(str(e))
        if name in args.entries:
            ap.error(f"--arm {spec!r}: a second entry called {name}")
        args.entries[name] = (f"{name}: {' + '.join(exps)} {' '.join(overrides)}".strip(), exps, overrides)
        minutes[name] = MINUTES_PER_EPOCH["ours_unet"]
    for item in args.minutes:
        name, _, value = item.partition("=")
        try:
            minutes[name] = float(value) if name in minutes and float(value) > 0 else float("nan")
        except ValueError:
            minutes[name] = float("nan")
        if not minutes[name] > 0:
            ap.error(f"--minutes {item!r}: expected NAME=M with M > 0 and NAME one of {', '.join(minutes)}")
    args.minutes = minutes
    if args.only is None:
        args.only = [parse_arm(a)[0] for a in args.arm] or list(ENTRIES)
    unknown = [n for n in args.only if n not in args.entries]
    if unknown:
        ap.error(f"--only: unknown entries {unknown}; known: {', '.join(args.entries)}")
    if "nnunet" in args.only and args.eval_key != "testing_sections":
        ap.error("nnunet is scored on the test sections only; run it without --eval_key (or leave it out with --only)")
    if args.fixed_epochs is not None:
        if args.fixed_epochs < 1 or args.epochs:
            ap.error("--fixed_epochs N: N >= 1 epochs for every entry, without --epochs NAME=N")
        if "nnunet" in args.only:
            ap.error("--fixed_epochs: nnU-Net's budget trainer has no equal-epochs mode; leave nnunet out with --only")
    epochs = {name: args.fixed_epochs or planned_epochs(args.budget_min, m) for name, m in minutes.items()}
    for item in args.epochs:
        name, _, value = item.partition("=")
        if name not in minutes or not value.isdigit():
            ap.error(f"--epochs {item!r}: expected NAME=N with NAME one of {', '.join(minutes)}")
        epochs[name] = int(value)
    if not args.dry_run and not Path(args.datalist).is_file():
        ap.error(f"{args.datalist}: not found; prepare the dataset first (python -m scripts.data.prepare drosophila "
                 "--src ... --out bundle/data/drosophila)")

    out = Path(args.out)
    report = {"budget_min": args.budget_min, "fixed_epochs": args.fixed_epochs, "datalist": args.datalist,
              "eval_key": args.eval_key, "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "entries": {}}
    kept = previous_entries(out / "peers.json", args) if args.resume and not args.dry_run else {}
    # done entries of the earlier report that this run does not touch stay in it
    report["entries"].update({n: e for n, e in kept.items() if n not in args.only})
    slack_s = 20 * 60  # start-up, caching and the epoch that crosses the time limit
    for name in args.only:
        if name == "nnunet":
            cmds = [nnunet_command(args)]
        else:
            train, evaluate, metrics = bundle_commands(name, args, epochs[name])
            cmds = [train, evaluate]
        if args.dry_run:
            print("\n".join(shlex.join(c) for c in cmds))
            continue
        if name in kept and kept[name].get("commands") == [shlex.join(c) for c in cmds]:
            report["entries"][name] = kept[name]
            print(f"[peer_benchmark] {name}: kept from the earlier run (--resume)", flush=True)
            continue
        wait_while_paused(out / "PAUSE")
        entry: dict = {"label": args.entries[name][0], "commands": [shlex.join(c) for c in cmds], "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        if name == "nnunet" and not Path(args.nnunet_python).exists():
            entry["status"] = f"not run: {args.nnunet_python} missing (bash tools/nnunet_env.sh)"
        elif name == "nnunet":
            scores_file = out / "nnunet" / "scores.json"
            scores_file.unlink(missing_ok=True)  # never the scores of an earlier attempt
            r = run(cmds[0], out / "nnunet.log", args.budget_min * 60 + 2 * slack_s)
            result = json.loads(scores_file.read_text()) if r["returncode"] == 0 and scores_file.is_file() else {}
            steps = {s["step"]: s for s in result.get("steps", [])}
            entry.update(status="done" if r["returncode"] == 0 else f"failed ({r['returncode']}, see {r['log']})",
                         train_seconds=steps.get("train", {}).get("seconds"), scores=result.get("scores"),
                         epochs=steps.get("train", {}).get("epochs"), load_mean=r["load_mean"],
                         load_max=r["load_max"], cpu_s=r["cpu_s"], cpu_per_s=r["cpu_per_s"], total_seconds=r["seconds"])
        else:
            shutil.rmtree(out / name, ignore_errors=True)  # a run cut short earlier starts again from scratch
            r = run(cmds[0], out / f"{name}_train.log", args.budget_min * 60 + slack_s)
            val = validations(Path(r["log"]))  # the log read once for both
            entry.update(train_seconds=r["seconds"], epochs=epochs_done(Path(r["log"])), epochs_planned=epochs[name],
                         best_val_mean_iou=max(val, default=None), last_val_mean_iou=val[-1] if val else None,
                         load_mean=r["load_mean"], load_max=r["load_max"], cpu_s=r["cpu_s"], cpu_per_s=r["cpu_per_s"])
            if r["returncode"] != 0:
                entry["status"] = f"training failed ({r['returncode']}, see {r['log']})"
            elif args.fixed_epochs and (entry["epochs"] or 0) < args.fixed_epochs:
                entry["status"] = (f"stopped by the time limit after {entry['epochs']} of {args.fixed_epochs} epochs "
                                   f"(see {r['log']})")
            else:
                e = run(cmds[1], out / f"{name}_eval.log", slack_s)
                entry["status"] = "done" if e["returncode"] == 0 else f"evaluation failed (see {e['log']})"
                entry["eval_seconds"] = e["seconds"]
                if e["returncode"] == 0:
                    entry["scores"] = scores_from_metrics(metrics)
        report["entries"][name] = entry
        out.mkdir(parents=True, exist_ok=True)
        (out / "peers.json").write_text(json.dumps(report, indent=2))
        (out / "peers.md").write_text(markdown(report))
        print(f"[peer_benchmark] {name}: {entry['status']}", flush=True)
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / "peers.json").write_text(json.dumps(report, indent=2))
        (out / "peers.md").write_text(markdown(report))
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
