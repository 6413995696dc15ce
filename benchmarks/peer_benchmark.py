"""Side by side on Drosophila fold 0: ours (U-Net, X-Net), MONAI's standard recipe and nnU-Net v2, same budget.

One after the other in one run, on the same machine, each with the same wall-clock training budget
(``--budget_min``, default 45 minutes), all trained on the fold's 12 training sections (validated on its 4
validation sections) and scored on its 4 whole test sections by the bundle's metric code:

- ``ours_unet``: ``train.json`` + ``experiments/unet_sce_iou.json``;
- ``ours_xnet``: ``train.json`` + ``experiments/xnet_sce_and_iou.json`` (the default);
- ``monai_basic_unet``: ``train.json`` + ``experiments/monai_basic_unet.json`` (BasicUNet + DiceCELoss + Adam, the
  same augmentation; MONAI's sliding window at test time);
- ``nnunet``: ``benchmarks/nnunet_peer.py all`` with the Python of ``.venv-nnunet`` (``bash tools/nnunet_env.sh``;
  recorded as not run when that environment is missing).

Ours and MONAI's recipe: ``--time_limit_s`` = the budget (checked at epoch end) and ``--epochs`` estimated so that
the learning-rate step (at 75% of the epochs) falls inside the budget, from the minutes per epoch measured on a
2-core CPU (``MINUTES_PER_EPOCH``; ``--epochs NAME=N`` overrides), features ``--features`` (default 16..256, the
CPU width of the docs' runs), validation by one plain forward pass per crop. Scores: ``evaluate.json`` on
``testing_sections`` (IoU accumulated over the 4 sections, per class and mean; per-image mean IoU); nnU-Net's
predictions are scored by ``nnunet_peer.score_predictions`` with the same confusion-matrix code.

Writes ``OUT/peers.json`` and ``OUT/peers.md`` (default ``runs/peers``) after every entry.

Usage::

    python benchmarks/peer_benchmark.py --budget_min 45 --datalist bundle/data/drosophila/datalist_fold0.json
    python benchmarks/peer_benchmark.py --only ours_unet nnunet --budget_min 60
    python benchmarks/peer_benchmark.py --dry_run          # print the commands only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
ENTRIES = {
    "ours_unet": ("Ours: U-Net (SCE+IoU)", "unet_sce_iou"),
    "ours_xnet": ("Ours: X-Net (SCE and IoU)", "xnet_sce_and_iou"),
    "monai_basic_unet": ("MONAI recipe: BasicUNet + DiceCE + Adam", "monai_basic_unet"),
    "nnunet": ("nnU-Net v2 2D (1 GB plan, budget trainer)", None),
}
#: minutes per epoch (192 crops, batch 8, plain validation of 64 crops) on the 2-core development CPU, one thread
#: each: U-Net and X-Net 16..256 measured (docs, Results: 7 epochs in 27 min, 3 in 24 min); BasicUNet estimated
#: from its FLOPs (9.9 GFLOPs at 256^2, 1.64x the U-Net's 6.0).
MINUTES_PER_EPOCH = {"ours_unet": 3.9, "ours_xnet": 8.0, "monai_basic_unet": 6.4}


def planned_epochs(budget_min: float, minutes_per_epoch: float) -> int:
    """Epochs that fill the budget at the measured speed (at least 2, so that the 75% learning-rate step exists)."""
    if budget_min <= 0 or minutes_per_epoch <= 0:
        raise ValueError(f"need a positive budget and speed, got {budget_min} min, {minutes_per_epoch} min/epoch.")
    return max(2, math.ceil(budget_min / minutes_per_epoch))


def bundle_commands(name: str, args: argparse.Namespace, epochs: int) -> tuple[list[str], list[str], Path]:
    """Training and evaluation command lines of one bundle entry, and its metrics file."""
    experiment = ENTRIES[name][1]
    root = Path(args.out) / name
    configs = [str(CONFIGS / "train.json"), str(CONFIGS / "experiments" / f"{experiment}.json")]
    common = ["--datalist_file", args.datalist, "--bundle_root", str(root),
              "--features", json.dumps(args.features), "--cache_workers", "1"]
    train = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs), *common,
             "--epochs", str(epochs), "--time_limit_s", str(int(args.budget_min * 60)), "--show_progress", "False",
             "--validate#inferer", "$monai.inferers.SimpleInferer()"]
    evaluate = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file",
                json.dumps(configs + [str(CONFIGS / "evaluate.json")]), *common,
                "--test_key", "testing_sections", "--output_dir", str(root / "eval_sections")]
    return train, evaluate, root / "eval_sections" / "metrics.json"


def nnunet_command(args: argparse.Namespace) -> list[str]:
    return [args.nnunet_python, str(REPO / "benchmarks" / "nnunet_peer.py"), "all", "--datalist", args.datalist,
            "--budget_min", str(args.budget_min), "--work_dir", str(Path(args.out) / "nnunet"),
            "--json", str(Path(args.out) / "nnunet" / "scores.json")]


def run(cmd: list[str], log: Path, timeout_s: float) -> dict:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "bundle"), os.environ.get("PYTHONPATH", "")) if p)
    t0 = time.monotonic()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"cmd": shlex.join(cmd), "returncode": rc, "seconds": round(time.monotonic() - t0, 1), "log": str(log)}


def scores_from_metrics(path: Path) -> dict:
    """The evaluate.json report reduced to the table's numbers."""
    report = json.loads(path.read_text())
    return {"images": report["num_images"], "mean_iou": report["mean_iou"],
            "per_image_mean_iou": report["per_image_mean_iou"],
            "iou": {n: c["accumulated"]["iou"] for n, c in report["per_class"].items()}}


def markdown(report: dict) -> str:
    def f(v) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"

    lines = [f"# Peers on Drosophila fold 0 ({report['budget_min']:g} min of training each, {report['machine']})", "",
             "| method | status | train s | epochs | test mIoU | per-image mIoU | intracellular | membrane | "
             "glia/extracellular | mitochondria | synapse |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in report["entries"].items():
        s = e.get("scores") or {}
        iou = list((s.get("iou") or {}).values()) or [None] * 5
        lines.append(f"| {ENTRIES[name][0]} | {e['status']} | {e.get('train_seconds', 'n/a')} | "
                     f"{e.get('epochs', 'n/a')} | {f(s.get('mean_iou'))} | {f(s.get('per_image_mean_iou'))} | "
                     + " | ".join(f(v) for v in iou) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget_min", type=float, default=45.0, help="training wall-clock minutes per method (>= 45 "
                    "for the docs' table)")
    ap.add_argument("--datalist", default=str(REPO / "bundle" / "data" / "drosophila" / "datalist_fold0.json"))
    ap.add_argument("--out", default=str(REPO / "runs" / "peers"))
    ap.add_argument("--only", nargs="+", choices=list(ENTRIES), default=list(ENTRIES))
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="ours (U-Net, X-Net)")
    ap.add_argument("--epochs", nargs="*", default=[], metavar="NAME=N", help="override the estimated epochs")
    ap.add_argument("--nnunet_python", default=str(REPO / ".venv-nnunet" / "bin" / "python"))
    ap.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    epochs = {name: planned_epochs(args.budget_min, m) for name, m in MINUTES_PER_EPOCH.items()}
    for item in args.epochs:
        name, _, value = item.partition("=")
        if name not in MINUTES_PER_EPOCH or not value.isdigit():
            ap.error(f"--epochs {item!r}: expected NAME=N with NAME one of {', '.join(MINUTES_PER_EPOCH)}")
        epochs[name] = int(value)
    if not args.dry_run and not Path(args.datalist).is_file():
        ap.error(f"{args.datalist}: not found; prepare the dataset first (python -m scripts.data.prepare drosophila "
                 "--src ... --out bundle/data/drosophila)")

    out = Path(args.out)
    report = {"budget_min": args.budget_min, "datalist": args.datalist, "machine": f"{os.cpu_count()} CPUs",
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "entries": {}}
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
        entry: dict = {"commands": [shlex.join(c) for c in cmds]}
        if name == "nnunet" and not Path(args.nnunet_python).exists():
            entry["status"] = f"not run: {args.nnunet_python} missing (bash tools/nnunet_env.sh)"
        elif name == "nnunet":
            r = run(cmds[0], out / "nnunet.log", args.budget_min * 60 + 2 * slack_s)
            scores_file = out / "nnunet" / "scores.json"
            result = json.loads(scores_file.read_text()) if scores_file.is_file() else {}
            steps = {s["step"]: s for s in result.get("steps", [])}
            entry.update(status="done" if r["returncode"] == 0 else f"failed ({r['returncode']}, see {r['log']})",
                         train_seconds=steps.get("train", {}).get("seconds"), scores=result.get("scores"),
                         epochs=steps.get("train", {}).get("epochs"))
        else:
            r = run(cmds[0], out / f"{name}_train.log", args.budget_min * 60 + slack_s)
            entry.update(train_seconds=r["seconds"], epochs=f"<= {epochs[name]}")
            if r["returncode"] != 0:
                entry["status"] = f"training failed ({r['returncode']}, see {r['log']})"
            else:
                e = run(cmds[1], out / f"{name}_eval.log", slack_s)
                entry["status"] = "done" if e["returncode"] == 0 else f"evaluation failed (see {e['log']})"
                if e["returncode"] == 0:
                    entry["scores"] = scores_from_metrics(metrics)
        report["entries"][name] = entry
        out.mkdir(parents=True, exist_ok=True)
        (out / "peers.json").write_text(json.dumps(report, indent=2))
        (out / "peers.md").write_text(markdown(report))
        print(f"[peer_benchmark] {name}: {entry['status']}", flush=True)
    if not args.dry_run:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
