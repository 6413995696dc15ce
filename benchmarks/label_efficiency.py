"""Label efficiency of fine-tuning (issue 23): the shipped model fine-tuned vs trained from scratch, per label budget.

On a labelled data set the shipped model was not trained on, with its own classes, prepared by ``python -m
scripts.data.prepare folders`` (``datalist.json`` with ``training_sections``, ``validation_sections``,
``testing_sections``; ``training``/``validation``/``testing`` where a hand-made datalist has no ``*_sections``), for
each label budget of ``--budgets`` (``1 2 4 all``: that many training images, drawn with ``--seed`` and nested: the
1-image set is inside the 2-image set, and so on; each budget's datalist is written to ``OUT/budget<b>/datalist.json``
with the same validation and test images) three arms are trained and scored:

- ``finetune``: ``train.json`` + ``recipes/finetune.json`` from ``--finetune_from`` (default: the shipped model),
  ``--epochs N``;
- ``scratch_epochs``: the same recipe from scratch (``--finetune_from '$None'``) with the network the model file
  records (class, widths, padding, batch norm: ``OUT/scratch_network.json``), the same N epochs;
- ``scratch_time``: the same from scratch with the ``finetune`` arm's measured training seconds as
  ``--time_budget_s``: train.json's ``FitEpochsToBudget`` times the epochs and after each one sets the number of
  epochs and the poly decay's end to what ends within that budget (``--epochs N`` is only its first plan).

Every arm trains without early stopping (equal epochs are equal), keeps its best validation epoch as ``model.pt``
(the bundle's rule) and is scored on the test images by ``evaluate.json``: mIoU and IoU per class (accumulated over
the test images). Training seconds are the trainer's own clock (Ignite's "Engine run finished. Time taken", the sum
of the epochs a stopped run had checkpointed), the clock ``FitEpochsToBudget`` spends: start-up (imports, caching,
the pre-flight) is not counted; ``wall_seconds`` is the whole training command's.

Each finished (budget, arm) is written to ``RESULTS/budget<b>_<arm>.json`` (small, meant to be committed) and
skipped when the command is run again with the same settings; a stopped training continues with ``--resume True``.
``RESULTS/study.json`` (and ``OUT/study.json``) hold the study's settings (datalist, classes, epochs, model file,
seed, threads, overrides): a command with other settings is refused there (give another ``--results``/``--out``).
Budgets may be added by later commands. The summary (rows: budgets; columns: arms; and whether fine-tuning beats
scratch at equal epochs / equal time) goes to ``RESULTS/summary.json`` and ``RESULTS/summary.md``.

Run the arms on an otherwise idle machine: the equal-time arm is only fair when both arms had the same CPU.

Usage (from the repository root)::

    python -m scripts.data.prepare folders --images <images> --labels <labels> --out bundle/data/mine \\
        --class-map "0:0,255:1" --class-names "rest,membrane"          # once (PYTHONPATH=bundle)
    python benchmarks/label_efficiency.py --datalist bundle/data/mine/datalist.json --budgets 1 2 4 all \\
        --epochs 40 --out runs/label_efficiency --results benchmarks/results/label_efficiency
    # bundle overrides for every arm after --, e.g. -- --patch_size "[128,128]"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from scripts.networks.pinned import file_sha256

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
RECIPE = CONFIGS / "recipes" / "finetune.json"
SHIPPED_MODEL = REPO / "bundle" / "models" / "pretrained" / "model.pt"
ARMS = ("finetune", "scratch_epochs", "scratch_time")
#: The keys of the budget datalists (the recipe's train_key and val_key, evaluate.json's test_key).
KEYS = {"training": "training_sections", "validation": "validation_sections", "testing": "testing_sections"}
#: Overrides the driver sets itself.
OWNED = {"--datalist_file", "--bundle_root", "--epochs", "--time_budget_s", "--finetune_from", "--train_key",
         "--val_key", "--test_key", "--class_names", "--resume", "--overwrite", "--network_def",
         "--early_stop_patience", "--output_dir", "--ckpt_path", "--config_file"}
NO_EARLY_STOP = "1000000"
TRAINER = re.compile(r"SupervisedTrainer - INFO - (?:Epoch\[(\d+)\] Complete|(Engine run finished))\. "
                     r"Time taken: (\d+):(\d+):([\d.]+)")


def write_json(path: Path, data: dict) -> None:
    """Atomic: a killed run leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _env(threads: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "bundle"), os.environ.get("PYTHONPATH", "")) if p)
    return env


# -- the data: source lists, budgets, nested subsets ------------------------------------------------------------


def source_lists(datalist: dict, path: Path) -> dict[str, list[dict]]:
    """The training, validation and test items (``*_sections`` where present), image and label paths absolute."""
    base = path.resolve().parent
    lists = {}
    for split, key in KEYS.items():
        items = datalist.get(key) or datalist.get(split) or []
        if not items:
            raise SystemExit(f"{path}: no {key} (or {split}) items; prepare the data set with `python -m "
                             "scripts.data.prepare folders` (it writes training/validation/testing_sections).")
        lists[split] = [{k: str(base / v) if k in ("image", "label") else v for k, v in item.items()}
                        for item in items]
    return lists


def parse_budgets(budgets: list[str], available: int) -> list[str]:
    """``1 2 4 all`` -> ``['1', '2', '4', 'all']``: numbers ascending, then ``all``; refused: a number that is not
    >= 1 or more than the training images."""
    numbers, whole = set(), False
    for b in budgets:
        if b == "all":
            whole = True
        elif b.isdigit() and int(b) >= 1:
            if int(b) > available:
                raise SystemExit(f"--budgets {b}: the datalist has {available} training image(s).")
            numbers.add(int(b))
        else:
            raise SystemExit(f"--budgets {b!r}: a number of images >= 1, or 'all'.")
    return [str(n) for n in sorted(numbers)] + (["all"] if whole else [])


def nested_subset(items: list[dict], budget: str, seed: int) -> list[dict]:
    """The first ``budget`` items of one ``seed``-drawn order of ``items`` (``all``: every item, in that order), so
    that a smaller budget's images are inside every larger budget's."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(items))
    n = len(items) if budget == "all" else int(budget)
    return [items[i] for i in order[:n]]


def image_names(items: list[dict]) -> list[str]:
    return [Path(i["image"]).name for i in items]


def budget_datalist(lists: dict[str, list[dict]], budget: str, seed: int) -> dict:
    training = nested_subset(lists["training"], budget, seed)
    return {"name": f"label budget {budget} ({len(training)} training image(s), seed {seed})",
            KEYS["training"]: training, KEYS["validation"]: lists["validation"], KEYS["testing"]: lists["testing"]}


# -- settings: what makes a result -----------------------------------------------------------------------------


def study_settings(args: argparse.Namespace) -> dict:
    """What makes the study's results: a results folder holds the units of one such study only."""
    return {
        "datalist_sha256": file_sha256(Path(args.datalist)),
        "class_names": list(args.class_names),
        "epochs": args.epochs,
        "finetune_from_sha256": file_sha256(Path(args.finetune_from)),
        "seed": args.seed,
        "threads": args.threads,
        "overrides": list(args.overrides),
        "recipe": "train.json + recipes/finetune.json",
    }


def claim(folder: Path, settings: dict) -> None:
    """Record ``settings`` in ``folder/study.json``, or refuse when it holds other settings."""
    path = folder / "study.json"
    if path.is_file():
        stored = json.loads(path.read_text())["settings"]
        if stored != settings:
            diff = ", ".join(f"{k}: {stored.get(k)!r} there, {settings.get(k)!r} now"
                             for k in sorted(set(stored) | set(settings)) if stored.get(k) != settings.get(k))
            raise SystemExit(f"{path}: a study with other settings ({diff}); give another --results/--out folder, "
                             "or delete that folder to start again.")
        return
    write_json(path, {"settings": settings})


# -- one unit: train, evaluate, score -------------------------------------------------------------------------


def scratch_network(model: Path) -> dict:
    """``network_def`` of the network ``model`` records (its model_info), with this run's channels and classes."""
    if str(REPO / "bundle") not in sys.path:
        sys.path.insert(0, str(REPO / "bundle"))
    from scripts.networks import read_checkpoint
    from scripts.networks.config import is_buildable

    _, info = read_checkpoint(model)
    saved = dict((info or {}).get("network") or {})
    if not is_buildable(saved):
        raise SystemExit(f"--finetune_from {model}: it records no network of the bundle (no model_info); the scratch "
                         "arms train the fine-tuned network's architecture, so give a model.pt of this bundle.")
    own = {"in_channels": "@in_channels", "out_channels": "@num_classes"}
    return {"network_def": {**saved, **{k: v for k, v in own.items() if k in saved}}}


def has_checkpoint(ckpt_dir: Path) -> bool:
    return any(ckpt_dir.glob("checkpoint_epoch=*.pt"))


def epochs_run(ckpt_dir: Path) -> int | None:
    """The last epoch the run saved (its resumable checkpoint is saved after every epoch)."""
    done = [int(p.stem.split("=")[1]) for p in ckpt_dir.glob("checkpoint_epoch=*.pt")]
    return max(done) if done else None


def trainer_seconds(logs: list[Path]) -> float:
    """The trainer's seconds over the attempts: a finished process's "Engine run finished" time, a stopped one's
    epochs (each logged after its checkpoint was saved; the epoch it was killed in is lost, as in the budget)."""
    total, seen = 0.0, False
    for log in logs:
        epochs, finished = 0.0, None
        for m in TRAINER.finditer(log.read_text(errors="replace")):
            seen, seconds = True, int(m[3]) * 3600 + int(m[4]) * 60 + float(m[5])
            if m[2]:
                finished = seconds
            else:
                epochs += seconds
        total += finished if finished is not None else epochs
    if not seen:
        raise RuntimeError(f"no SupervisedTrainer timing line in {', '.join(map(str, logs))}: cannot time the run.")
    return total


def best_validation(logs: list[Path]) -> tuple[float, int] | None:
    """The best validation mIoU and its epoch, from the training logs."""
    best = None
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if "Epoch[" in line and "Metrics -- val_mean_iou" in line:
                epoch = int(line.split("Epoch[")[1].split("]")[0])
                value = float(line.split("val_mean_iou: ")[1].split()[0])
                if best is None or value > best[0]:
                    best = (value, epoch)
    return best


def train_command(args: argparse.Namespace, arm: str, root: Path, datalist: Path, budget_s: float | None) -> list[str]:
    configs = [str(CONFIGS / "train.json"), str(RECIPE)]
    if arm == "finetune":
        start = ["--finetune_from", str(args.finetune_from)]
    else:
        configs.append(str(Path(args.out) / "scratch_network.json"))
        start = ["--finetune_from", "$None"]
    if arm == "scratch_time":
        start += ["--time_budget_s", str(budget_s)]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs),
           "--datalist_file", str(datalist), "--class_names", json.dumps(args.class_names), "--bundle_root",
           str(root), "--train_key", KEYS["training"], "--val_key", KEYS["validation"], "--epochs", str(args.epochs),
           "--early_stop_patience", NO_EARLY_STOP, "--show_progress", "False", *args.overrides, *start]
    if has_checkpoint(root / "models"):
        cmd += ["--resume", "True"]
    return cmd


def evaluate_command(args: argparse.Namespace, root: Path, datalist: Path) -> list[str]:
    configs = [str(CONFIGS / "train.json"), str(RECIPE), str(CONFIGS / "evaluate.json")]
    return [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", json.dumps(configs),
            "--datalist_file", str(datalist), "--class_names", json.dumps(args.class_names), "--bundle_root",
            str(root), "--ckpt_path", str(root / "models" / "model.pt"), "--test_key", KEYS["testing"],
            "--output_dir", str(root / "eval_test"), *args.overrides]


def run(cmd: list[str], log: Path, threads: int) -> float:
    """Run ``cmd`` (its output to ``log``); its wall-clock seconds. A failure stops the study naming the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=_env(threads)).returncode
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit {code}: {shlex.join(cmd[:6])} ...; see {log}:\n{tail}")
    return time.monotonic() - start


def machine() -> str:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{model + ', ' if model else ''}{os.cpu_count()} CPUs"


def result_path(results: Path, budget: str, arm: str) -> Path:
    return results / f"budget{budget}_{arm}.json"


def run_unit(args: argparse.Namespace, study: dict, budget: str, arm: str, datalist: Path, training: list[str],
             trained: list[str]) -> dict:
    """Train (or resume), evaluate and score one (budget, arm); its result (a stored one when the settings match)."""
    budget_s = None
    if arm == "scratch_time":
        budget_s = json.loads(result_path(Path(args.results), budget, "finetune").read_text())["train_seconds"]
    unit = {"budget": budget, "arm": arm, "training_images": training, "time_budget_s": budget_s}
    wanted = {**study, **unit}
    results = result_path(Path(args.results), budget, arm)
    name = f"budget {budget}, {arm}"
    if results.is_file():
        stored = json.loads(results.read_text())
        if stored["settings"] == wanted:
            print(f"{name}: done before ({results})", flush=True)
            return stored
        raise SystemExit(f"{results}: a result with other settings ({stored['settings']} vs {wanted}); delete it (and "
                         "its run folder) to redo it.")
    root = Path(args.out) / f"budget{budget}" / arm
    claimed = root / "unit.json"
    if claimed.is_file() and json.loads(claimed.read_text()) != wanted:
        raise SystemExit(f"{root}: a run of other settings ({claimed}); delete that folder to redo {name}.")
    write_json(claimed, wanted)
    done = root / "train_done.json"
    if done.is_file():
        train = json.loads(done.read_text())
    else:
        attempt = len(list(root.glob("train*.log")))
        print(f"{name}: training ({'resuming' if has_checkpoint(root / 'models') else 'new'}"
              f"{f', budget {budget_s:.1f} s' if budget_s else ''})", flush=True)
        wall = run(train_command(args, arm, root, datalist, budget_s), root / f"train{attempt}.log", args.threads)
        logs = sorted(root.glob("train*.log"))
        train = {"train_seconds": round(trainer_seconds(logs), 1), "wall_seconds": round(wall, 1),
                 "attempts": attempt + 1, "epochs_run": epochs_run(root / "models")}
        write_json(done, train)
        trained.append(f"{budget}/{arm}")
    print(f"{name}: evaluating", flush=True)
    run(evaluate_command(args, root, datalist), root / "evaluate.log", args.threads)
    metrics = json.loads((root / "eval_test" / "metrics.json").read_text())
    best = best_validation(sorted(root.glob("train*.log")))
    result = {
        "budget": budget,
        "arm": arm,
        "settings": wanted,
        "n_images": len(training),
        "mean_iou": metrics["mean_iou"],
        "iou": {c: metrics["per_class"][c]["accumulated"]["iou"] for c in metrics["classes"]},
        "per_image_mean_iou": metrics.get("per_image_mean_iou"),
        "test_images": metrics.get("num_images"),
        "train_seconds": train["train_seconds"],
        "wall_seconds": train["wall_seconds"],
        "epochs_run": train["epochs_run"],
        "epochs_planned": args.epochs,
        "time_budget_s": budget_s,
        "best_val_mean_iou": None if best is None else round(best[0], 6),
        "best_val_epoch": None if best is None else best[1],
        "model_sha256": file_sha256(root / "models" / "model.pt"),
        "machine": machine(),
    }
    write_json(results, result)
    print(f"{name}: test mIoU {result['mean_iou']:.4f}, {result['epochs_run']} epochs, {result['train_seconds']} s "
          f"-> {results}", flush=True)
    return result


# -- the summary ------------------------------------------------------------------------------------------------


def _budget_order(budget: str) -> tuple[int, int]:
    return (1, 0) if budget == "all" else (0, int(budget))


def summarize(units: list[dict]) -> dict:
    """Rows per budget: each arm's numbers and whether fine-tuning beats scratch at equal epochs and equal time."""
    by_budget: dict[str, dict] = {}
    for u in units:
        by_budget.setdefault(u["budget"], {})[u["arm"]] = u
    rows = []
    for budget in sorted(by_budget, key=_budget_order):
        arms = by_budget[budget]
        row = {"budget": budget, "n_images": next(iter(arms.values()))["n_images"], "arms": {}}
        for arm in ARMS:
            if arm in arms:
                u = arms[arm]
                row["arms"][arm] = {k: u[k] for k in ("mean_iou", "iou", "epochs_run", "train_seconds",
                                                      "time_budget_s", "best_val_mean_iou")}
        ft = arms.get("finetune")
        for arm, key in (("scratch_epochs", "beats_scratch_epochs"), ("scratch_time", "beats_scratch_time")):
            scores = None if ft is None or arm not in arms else (ft["mean_iou"], arms[arm]["mean_iou"])
            row[key] = None if scores is None or None in scores else scores[0] > scores[1]
        rows.append(row)
    verdicts = [r[k] for r in rows for k in ("beats_scratch_epochs", "beats_scratch_time")]
    target = None if not rows or None in verdicts else all(verdicts)
    return {"rows": rows, "target_met": target}


def _num(value) -> str:
    """A score for the table; ``n/a`` for a class absent from both the labels and the predictions."""
    return "n/a" if value is None else f"{value:.4f}"


def markdown(report: dict) -> str:
    def cell(row: dict, arm: str) -> str:
        a = row["arms"].get(arm)
        return "" if a is None else f"{_num(a['mean_iou'])} ({a['epochs_run']} ep, {a['train_seconds']:g} s)"

    def yes(v) -> str:
        return "n/a" if v is None else "yes" if v else "no"

    lines = ["| labelled images | fine-tuned | scratch, equal epochs | scratch, equal time "
             "| fine-tune beats scratch (epochs / time) |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        label = f"all ({r['n_images']})" if r["budget"] == "all" else r["budget"]
        lines.append(f"| {label} | {cell(r, 'finetune')} | {cell(r, 'scratch_epochs')} | {cell(r, 'scratch_time')} "
                     f"| {yes(r['beats_scratch_epochs'])} / {yes(r['beats_scratch_time'])} |")
    classes = report["settings"]["class_names"]
    lines += ["", "Test IoU per class:", "", "| labelled images | arm | " + " | ".join(classes) + " |",
              "|---|---|" + "---|" * len(classes)]
    for r in report["rows"]:
        for arm, a in r["arms"].items():
            lines.append(f"| {r['budget']} | {arm} | " + " | ".join(_num(a["iou"].get(c)) for c in classes) + " |")
    target = {None: "incomplete", True: "met", False: "not met"}[report["target_met"]]
    lines.append(f"\nTest mIoU (epochs run, training seconds). Target (fine-tuned beats scratch at every budget, at "
                 f"equal epochs and equal time): {target}.")
    return "\n".join(lines)


# -- the study --------------------------------------------------------------------------------------------------


def class_names_of(datalist: Path) -> list[str] | None:
    """The names in ``classes.json`` beside the datalist (``prepare folders`` writes it)."""
    path = datalist.parent / "classes.json"
    if not path.is_file():
        return None
    return [c["name"] for c in sorted(json.loads(path.read_text())["classes"], key=lambda c: c["index"])]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", required=True, help="datalist.json of `prepare folders`")
    ap.add_argument("--class_names", nargs="+", default=None, help="the classes (default: classes.json beside the "
                    "datalist)")
    ap.add_argument("--budgets", nargs="+", default=["1", "2", "4", "all"], help="training images per budget, or all")
    ap.add_argument("--epochs", type=int, default=40, help="epochs of the equal-epoch arms (the recipe's 40)")
    ap.add_argument("--finetune_from", default=str(SHIPPED_MODEL), help="the model fine-tuned")
    ap.add_argument("--out", default=str(REPO / "runs" / "label_efficiency"), help="the run folders")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "label_efficiency"),
                    help="one small JSON per finished (budget, arm), and the summary")
    ap.add_argument("--seed", type=int, default=0, help="draws the training images of the budgets")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads of every run")
    ap.add_argument("overrides", nargs=argparse.REMAINDER,
                    help="after --: bundle overrides for every arm's training and evaluation (e.g. -- --patch_size "
                    "'[128,128]')")
    args = ap.parse_args(argv)
    args.overrides = args.overrides[1:] if args.overrides[:1] == ["--"] else args.overrides
    owned = sorted(OWNED & {o.split("=")[0] for o in args.overrides if o.startswith("--")})
    if owned:
        ap.error(f"{', '.join(owned)} belong to the driver (its own options, or set per arm).")
    if args.epochs < 1 or args.threads < 1:
        ap.error("--epochs and --threads must be >= 1.")
    if not Path(args.datalist).is_file():
        ap.error(f"--datalist {args.datalist}: no such file; prepare the data set first (`python -m "
                 "scripts.data.prepare folders ...`).")
    if not Path(args.finetune_from).is_file():
        ap.error(f"--finetune_from {args.finetune_from}: no such file.")
    args.class_names = args.class_names or class_names_of(Path(args.datalist))
    if not args.class_names:
        ap.error(f"--class_names: none given and no classes.json beside {args.datalist}.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    datalist = Path(args.datalist)
    lists = source_lists(json.loads(datalist.read_text()), datalist)
    budgets = parse_budgets(args.budgets, len(lists["training"]))
    study = study_settings(args)
    out, results = Path(args.out), Path(args.results)
    claim(results, study)
    claim(out, study)
    write_json(out / "scratch_network.json", scratch_network(Path(args.finetune_from)))
    trained: list[str] = []
    for budget in budgets:
        subset = budget_datalist(lists, budget, args.seed)
        path = out / f"budget{budget}" / "datalist.json"
        write_json(path, subset)
        for arm in ARMS:
            run_unit(args, study, budget, arm, path, image_names(subset[KEYS["training"]]), trained)
    # every finished unit of this study, also those of earlier commands (other budgets)
    units = [json.loads(p.read_text()) for p in sorted(results.glob("budget*_*.json"))]
    report = {"settings": study, "datalist": str(datalist), "finetune_from": str(args.finetune_from),
              **summarize([u for u in units if {k: u["settings"].get(k) for k in study} == study])}
    report["command"] = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    table = markdown(report)
    write_json(results / "summary.json", report)
    (results / "summary.md").write_text(table + "\n")
    print(table)
    return {**report, "trained": trained}


if __name__ == "__main__":
    main()
