"""Five-fold cross-validation of a training recipe on the prepared Drosophila folds (issue 27 §1).

For each fold ``k`` of ``prepare drosophila`` (section-disjoint: 4 test, 4 validation, 12 training sections):

1. **train** the recipe (default ``configs/recipes/shipped.json``, the shipped model's) on ``datalist_fold<k>.json``
   in ``OUT/fold<k>`` (``python -m monai.bundle run training``), the best validation epoch kept as ``model.pt``;
   a fold whose training was stopped (kill, power loss, end of a session) continues with ``--resume True``
   (bit-exact on CPU);
2. **evaluate** that ``model.pt`` on the fold's 4 whole test sections (``evaluate.json``, the default inferer):
   mIoU, per-class IoU, per-image mean, pixel accuracy;
3. **refinement**: the adapted Rand error of the cell regions before and after the difficult-pixel refinement
   (``benchmarks/evaluate_refinement.py``, the numbers of the model card).

Each finished fold is written to ``RESULTS/fold<k>.json`` (small, meant to be committed) and skipped when the
command is run again with the same settings, so the study can be spread over several runs or machines: run the same
command again and it continues. The summary (per fold, mean and sample s.d. over the folds present, the paper's
five-fold numbers beside) goes to ``--json`` and ``--markdown``.

``--fold0_model``: fold 0 of the shipped recipe at 90 epochs *is* the shipped model's training run (same recipe, same
datalist, same selection rule); that file is scored instead of training fold 0 again. It is only accepted with the
default recipe and 90 epochs.

Usage (each fold trains with ``--threads`` PyTorch threads; ``--parallel`` folds at a time)::

    python -m scripts.data.prepare drosophila --src <dataset> --out bundle/data/drosophila   # once
    python benchmarks/cross_validation.py --data bundle/data/drosophila --out runs/cross_validation \\
        --results benchmarks/results/cross_validation --parallel 2 --threads 1 \\
        --fold0_model bundle/models/pretrained/model.pt
    # a shorter fixed budget for every fold (then fold 0 is trained too):
    python benchmarks/cross_validation.py ... --epochs 30 --results benchmarks/results/cross_validation_e30
    # several recipe files, merged in order: the shipped X-Net's run (fold 0, 40 epochs)
    python benchmarks/cross_validation.py --recipe bundle/configs/recipes/shipped.json \
        bundle/configs/experiments/paper/xnet_sce_and_iou.json --folds 0 --epochs 40 --data ... --out ... \
        --results benchmarks/results/xnet_fold0
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts.networks.pinned import file_sha256

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
SHIPPED_RECIPE = CONFIGS / "recipes" / "shipped.json"
SHIPPED_EPOCHS = 90
CLASSES = ["intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"]
#: The X-Net paper's five-fold means on this dataset (Fujii et al., Table: Drosophila, mIoU in %).
PAPER = {"X-Net (SCE and IoU)": 73.81, "U-Net": 71.63}
#: The per-fold numbers the summary averages: (key in a fold's result, label).
METRICS = [
    ("mean_iou", "mIoU"),
    *[(f"iou_{c}", c) for c in CLASSES],
    ("per_image_mean_iou", "per-image mIoU"),
    ("pixel_accuracy", "pixel accuracy"),
    ("rand_error_before", "adapted Rand error, arg-max"),
    ("rand_error_after", "adapted Rand error, refined"),
]


def _env(threads: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "bundle"), os.environ.get("PYTHONPATH", "")) if p)
    return env


#: Options the driver sets itself: refused among the overrides.
OWNED = {"--epochs", "--bundle_root", "--datalist_file", "--resume", "--overwrite", "--ckpt_path", "--test_key",
         "--output_dir"}


def settings(args: argparse.Namespace, fold: int) -> dict:
    """What makes a fold's result (and its run folder): a stored one with other settings is not reused."""
    datalist = Path(args.data) / f"datalist_fold{fold}.json"
    shipped = fold == 0 and args.fold0_model is not None
    out = {
        "recipe": " + ".join(Path(r).name for r in recipes(args)),
        "epochs": SHIPPED_EPOCHS if shipped else args.epochs,
        "overrides": [] if shipped else list(args.overrides),
        "datalist_sha256": file_sha256(datalist),
        "model": "shipped" if shipped else "trained",
    }
    if shipped:
        out["model_sha256"] = file_sha256(Path(args.fold0_model))
    return out


def recipes(args: argparse.Namespace) -> list[str]:
    """The recipe file(s) merged on top of ``train.json``, in order (``--recipe`` takes one or several)."""
    return [str(r) for r in args.recipe]


def is_shipped_recipe(args: argparse.Namespace) -> bool:
    return [Path(r).resolve() for r in recipes(args)] == [SHIPPED_RECIPE]


def counts_for(stored: dict, args: argparse.Namespace) -> bool:
    """Whether a stored fold result belongs to this study: its settings, or fold 0 as the shipped model when this
    study is the shipped recipe at 90 epochs (a later command without ``--fold0_model`` keeps it)."""
    try:
        if stored["settings"] == settings(args, stored["fold"]):
            return True
    except FileNotFoundError:  # its datalist is gone
        return False
    shipped_study = is_shipped_recipe(args) and args.epochs == SHIPPED_EPOCHS and not args.overrides
    return stored["fold"] == 0 and stored["settings"]["model"] == "shipped" and shipped_study


def has_checkpoint(ckpt_dir: Path) -> bool:
    """Whether a stopped training run left a ``checkpoint_epoch=N.pt`` to resume from."""
    return any(ckpt_dir.glob("checkpoint_epoch=*.pt"))


def train_command(args: argparse.Namespace, fold: int, root: Path) -> list[str]:
    """The fold's training command; ``--resume True`` when a stopped run of it left a checkpoint."""
    configs = [str(CONFIGS / "train.json"), *recipes(args)]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs),
           "--datalist_file", str(Path(args.data) / f"datalist_fold{fold}.json"), "--bundle_root", str(root),
           "--epochs", str(args.epochs), "--show_progress", "False", *args.overrides]
    if has_checkpoint(root / "models"):
        cmd += ["--resume", "True"]
    return cmd


def evaluate_command(args: argparse.Namespace, fold: int, root: Path, model: Path) -> list[str]:
    configs = [str(CONFIGS / "train.json"), *recipes(args), str(CONFIGS / "evaluate.json")]
    return [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", json.dumps(configs),
            "--datalist_file", str(Path(args.data) / f"datalist_fold{fold}.json"), "--bundle_root", str(root),
            "--ckpt_path", str(model), "--test_key", "testing_sections", "--output_dir", str(root / "eval_sections"),
            *args.overrides]


def refinement_command(args: argparse.Namespace, fold: int, root: Path, model: Path) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / "evaluate_refinement.py"), "--ckpt", str(model),
            "--set", f"ckpt_path={json.dumps(str(model))}", "--datalist",
            str(Path(args.data) / f"datalist_fold{fold}.json"), "--key", "testing_sections", "--work-dir", str(root),
            "--device", "cpu", "--json", str(root / "refinement_sections.json")]


def run(cmd: list[str], log: Path, threads: int) -> float:
    """Run ``cmd`` (its output appended to ``log``); its seconds. A failure stops the study naming the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=_env(threads)).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit {code}: {shlex.join(cmd[:6])} ...; see {log}:\n{tail}")
    return time.monotonic() - start


def trainer_seconds(root: Path) -> float | None:
    """The fold's training time: every epoch's training and validation time over its training logs (a resumed
    fold's attempts added up; start-up and a killed attempt's unfinished epoch not counted)."""
    total, found = 0.0, False
    for log in sorted(root.glob("train*.log")):
        for line in log.read_text().splitlines():
            if ("SupervisedTrainer" in line or "SupervisedEvaluator" in line) and "Complete. Time taken: " in line:
                h, m, sec = line.split("Complete. Time taken: ")[1].split()[0].split(":")
                total, found = total + 3600 * int(h) + 60 * int(m) + float(sec), True
    return round(total, 1) if found else None


def best_validation(root: Path) -> tuple[float, int] | None:
    """The best validation mIoU and its epoch, from the training log(s) of the fold."""
    best = None
    for log in sorted(root.glob("train*.log")):
        epoch = 0
        for line in log.read_text().splitlines():
            if "Epoch[" in line and "Metrics -- val_mean_iou" in line:
                epoch = int(line.split("Epoch[")[1].split("]")[0])
                value = float(line.split("val_mean_iou: ")[1].split()[0])
                if best is None or value > best[0]:
                    best = (value, epoch)
    return best


def claim_run_folder(root: Path, wanted: dict) -> None:
    """A fold's run folder holds one training run: its settings are written before it starts, and a folder of other
    settings (or of an unknown run) is refused, never scored or resumed under these."""
    record = root / "cv_settings.json"
    if record.is_file():
        found = json.loads(record.read_text())
        if found != wanted:
            raise SystemExit(f"{root}: trained with other settings ({found} vs {wanted}); give another --out, or delete "
                             "the folder to train the fold again.")
        return
    if root.is_dir() and any(root.iterdir()):
        raise SystemExit(f"{root}: holds files of a run without {record.name}; give another --out, or delete the folder.")
    write_json(record, wanted)


def write_json(path: Path, data: dict) -> None:
    """Atomic: a killed run leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def run_fold(args: argparse.Namespace, fold: int) -> dict:
    """Train (or resume, or take the shipped model for fold 0), evaluate and score one fold; its result."""
    results = Path(args.results) / f"fold{fold}.json"
    wanted = settings(args, fold)
    if results.is_file():
        stored = json.loads(results.read_text())
        if stored["settings"] == wanted:
            print(f"fold {fold}: done before ({results})", flush=True)
            return stored
        raise SystemExit(f"{results}: a result with other settings ({stored['settings']} vs {wanted}); give another "
                         "--results folder (and --out), or delete the file to score the fold again.")
    root = Path(args.out) / f"fold{fold}"
    done = root / "train_done.json"
    if wanted["model"] == "shipped":
        model, train = Path(args.fold0_model), {"seconds": None, "note": "the shipped model's own training run"}
    else:
        claim_run_folder(root, wanted)
        model = root / "models" / "model.pt"
        if done.is_file():
            train = json.loads(done.read_text())
        else:
            attempt = len(list(root.glob("train*.log")))
            print(f"fold {fold}: training ({'resuming' if has_checkpoint(root / 'models') else 'new'})", flush=True)
            seconds = run(train_command(args, fold, root), root / f"train{attempt}.log", args.threads)
            train = {"seconds": trainer_seconds(root), "last_attempt_wall_s": round(seconds, 1),
                     "attempts": attempt + 1}
            write_json(done, train)
    print(f"fold {fold}: evaluating {model}", flush=True)
    run(evaluate_command(args, fold, root, model), root / "evaluate.log", args.threads)
    run(refinement_command(args, fold, root, model), root / "refinement.log", args.threads)
    metrics = json.loads((root / "eval_sections" / "metrics.json").read_text())
    refinement = json.loads((root / "refinement_sections.json").read_text())
    best = None if wanted["model"] == "shipped" else best_validation(root)
    datalist = json.loads((Path(args.data) / f"datalist_fold{fold}.json").read_text())
    result = {
        "fold": fold,
        "settings": wanted,
        "test_sections": [Path(i["image"]).name for i in datalist["testing_sections"]],
        "model_sha256": file_sha256(model),
        "train_seconds": train.get("seconds"),
        "best_val_mean_iou": None if best is None else round(best[0], 6),
        "best_val_epoch": None if best is None else best[1],
        "mean_iou": metrics["mean_iou"],
        **{f"iou_{c}": metrics["per_class"][c]["accumulated"]["iou"] for c in metrics["classes"]},
        "per_image_mean_iou": metrics["per_image_mean_iou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "rand_error_before": refinement["before"]["rand_error"],
        "rand_error_after": refinement["after"]["rand_error"],
        "refined_mean_iou": refinement["after"]["mean_iou"],
        # the same arg-max maps scored by the inference pipeline (evaluate_refinement.py): a check of the numbers
        "mean_iou_inference_pipeline": refinement["before"]["mean_iou"],
        "machine": machine(),
        "threads": args.threads,
    }
    if abs(result["mean_iou"] - result["mean_iou_inference_pipeline"]) > 1e-3:
        print(f"fold {fold}: WARNING evaluate.json's mIoU {result['mean_iou']:.4f} differs from the inference "
              f"pipeline's {result['mean_iou_inference_pipeline']:.4f}", flush=True)
    write_json(results, result)
    print(f"fold {fold}: test mIoU {result['mean_iou']:.4f} -> {results}", flush=True)
    return result


def machine() -> str:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{model + ', ' if model else ''}{os.cpu_count()} CPUs"


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarize(folds: list[dict]) -> dict:
    """Per metric: the folds' values, their mean and sample s.d."""
    folds = sorted(folds, key=lambda r: r["fold"])
    summary = {}
    for key, _ in METRICS:
        values = [r[key] for r in folds if r.get(key) is not None]
        if values:
            m, sd = mean_sd(values)
            summary[key] = {"mean": round(m, 6), "sd": None if sd is None else round(sd, 6), "n": len(values)}
    return {"folds": [r["fold"] for r in folds], "summary": summary, "per_fold": folds, "paper_mean_iou_pct": PAPER}


def markdown(report: dict) -> str:
    folds = report["per_fold"]
    head = "| | " + " | ".join(f"fold {r['fold']}" for r in folds) + " | **mean ± s.d.** |"
    lines = [head, "|---" * (len(folds) + 2) + "|"]
    for key, label in METRICS:
        if key not in report["summary"]:
            continue
        s = report["summary"][key]
        sd = "" if s["sd"] is None else f" ± {s['sd']:.4f}"
        cells = " | ".join("" if r.get(key) is None else f"{r[key]:.4f}" for r in folds)
        bold = "**" if key == "mean_iou" else ""
        lines.append(f"| {bold}{label}{bold} | {cells} | {bold}{s['mean']:.4f}{sd}{bold} |")
    lines.append("| test sections | " + " | ".join(", ".join(Path(n).stem for n in r["test_sections"]) for r in folds)
                 + " | |")
    lines.append("| best validation mIoU (epoch) | " + " | ".join(
        "shipped" if r["best_val_mean_iou"] is None else f"{r['best_val_mean_iou']:.4f} ({r['best_val_epoch']})"
        for r in folds) + " | |")
    paper = ", ".join(f"{k} {v:.2f}" for k, v in report["paper_mean_iou_pct"].items())
    lines.append(f"\nThe X-Net paper's five-fold means (mIoU, %): {paper}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "bundle" / "data" / "drosophila"),
                    help="the prepared Drosophila folder (datalist_fold<k>.json)")
    ap.add_argument("--out", default=str(REPO / "runs" / "cross_validation"), help="the folds' run folders")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "cross_validation"),
                    help="one small JSON per finished fold (commit these)")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--recipe", nargs="+", default=[str(SHIPPED_RECIPE)],
                    help="the recipe merged on top of train.json (several files: merged in that order)")
    ap.add_argument("--epochs", type=int, default=SHIPPED_EPOCHS, help="fixed epochs per fold (the schedule's end)")
    ap.add_argument("--fold0_model", default=None,
                    help="score this model as fold 0 instead of training it (the shipped recipe at 90 epochs only)")
    ap.add_argument("--parallel", type=int, default=1, help="folds trained at the same time")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads per fold")
    ap.add_argument("--json", default=None, help="the summary (default: RESULTS/summary.json)")
    ap.add_argument("--markdown", default=None, help="the table (default: RESULTS/summary.md)")
    ap.add_argument("overrides", nargs=argparse.REMAINDER,
                    help="after --: bundle overrides for training and evaluation (e.g. -- --features '[8,16]')")
    args = ap.parse_args(argv)
    args.overrides = [o for o in args.overrides if o != "--"]
    owned = sorted(OWNED & {o.split("=")[0] for o in args.overrides})
    if owned:
        raise SystemExit(f"{', '.join(owned)}: set by the driver (--epochs, --data, --out); not among the overrides.")
    missing = [k for k in args.folds if not (Path(args.data) / f"datalist_fold{k}.json").is_file()]
    if missing:
        raise SystemExit(f"{args.data}: no datalist_fold{missing[0]}.json; prepare the folds first: python -m "
                         f"scripts.data.prepare drosophila --src <dataset> --out {args.data}")
    if args.fold0_model and (not is_shipped_recipe(args) or args.epochs != SHIPPED_EPOCHS
                             or args.overrides):
        raise SystemExit("--fold0_model stands for fold 0 of the shipped recipe at 90 epochs only; without it fold 0 "
                         "is trained like the others.")
    if args.fold0_model and not Path(args.fold0_model).is_file():
        raise SystemExit(f"--fold0_model {args.fold0_model}: no such file.")
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        list(pool.map(lambda k: run_fold(args, k), args.folds))  # every fold, its failure raised here
    present = [json.loads(p.read_text()) for p in sorted(Path(args.results).glob("fold*.json"))]
    kept = [r for r in present if counts_for(r, args)]
    left_out = sorted({r["fold"] for r in present} - {r["fold"] for r in kept})
    if left_out:  # every finished fold of this study counts, also those of earlier commands; others are named
        print(f"summary: fold(s) {left_out} in {args.results} have other settings; left out", flush=True)
    report = summarize(kept)
    report["command"] = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    table = markdown(report)
    write_json(Path(args.json or Path(args.results) / "summary.json"), report)
    Path(args.markdown or Path(args.results) / "summary.md").write_text(table + "\n")
    print(table)
    return report


if __name__ == "__main__":
    main()
