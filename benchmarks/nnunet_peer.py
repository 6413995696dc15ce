"""nnU-Net v2 (2D) on the bundle's Drosophila fold, scored with the bundle's own metric code.

Steps (``all`` runs them in order; each is also a subcommand):

1. ``convert``: the prepared fold (``python -m scripts.data.prepare drosophila``) to nnU-Net's raw format: the 16
   training + validation sections as ``imagesTr/sec_XX_0000.png`` / ``labelsTr/sec_XX.png`` (1024x1024 grey PNGs,
   read by nnU-Net's natural-image reader), the 4 test sections as ``imagesTs/`` (and their labels in
   ``labelsTs/``, for our scoring only), ``dataset.json`` (labels = the bundle's class indices, unchanged; nnU-Net
   requires index 0 to be called "background": here it is intracellular), and ``splits_final.json`` in the
   preprocessed folder with fold 0 = the fold's 12 training sections / 4 validation sections, so nnU-Net trains and
   validates on exactly the sections ours does.
2. ``plan``: ``nnUNetv2_extract_fingerprint``, then ``nnUNetv2_plan_experiment -gpu_memory_target 1
   -overwrite_plans_name nnUNetPlans_1G`` (the default 2D plan, a 1024x1024 patch and 59 M parameters, costs ~48 s
   per iteration on a 2-core CPU; the 1 GB plan ~5 s), then ``nnUNetv2_preprocess -c 2d``.
3. ``train``: ``nnUNetv2_train ID 2d 0 -tr nnUNetTrainerBudget -p nnUNetPlans_1G -device cpu`` with the budget
   trainer of ``benchmarks/nnunet_trainers``: epochs x iterations sized to the wall-clock budget so that the poly
   schedule decays to its end, final validation skipped. The trainer file is copied into nnU-Net's own trainer
   folder (``install_trainer``): nnU-Net looks there first, and only after importing every trainer module of its
   subpackages (one of which imports timm and torchvision) would it try ``nnUNet_extTrainer``; a torchvision build
   that does not match the CPU torch then stops the search before it gets there.
4. ``predict``: ``nnUNetv2_predict`` on the 4 test sections (``checkpoint_final.pth``), without test-time mirroring
   by default, as ours predicts (``--tta`` for nnU-Net's default mirroring: 4x the time, ~15 min on a 2-core CPU).
5. ``score``: our metric code (``scripts.metrics.confusion``: IoU accumulated over the split, per class and mean,
   and the per-image mean IoU; ``scripts.metrics.refinement.membrane_rand_error``), written to ``scores.json``.

Steps 2-4 need nnU-Net: run this script with the Python of ``.venv-nnunet`` (``bash tools/nnunet_env.sh``).
Steps 1 and 5 need only the bundle. nnU-Net's folders live under ``--work_dir`` (default ``runs/nnunet``).

Usage::

    .venv-nnunet/bin/python benchmarks/nnunet_peer.py all --datalist bundle/data/drosophila/datalist_fold0.json \\
        --budget_min 45 [--dataset_id 501] [--work_dir runs/nnunet]
    python benchmarks/nnunet_peer.py score --pred_dir runs/nnunet/predictions --labels_dir runs/nnunet/raw/.../labelsTs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scripts.data import CLASS_NAMES, read_image, write_png
from scripts.data.classes import MEMBRANE
from scripts.metrics.confusion import confusion_matrix, per_image_scores, scores_from_confusion
from scripts.metrics.refinement import membrane_rand_error

REPO = Path(__file__).resolve().parents[1]
TRAINER_DIR = REPO / "benchmarks" / "nnunet_trainers"
TRAINER = "nnUNetTrainerBudget"
PLANS = "nnUNetPlans_1G"
CONFIGURATION = "2d"


def dataset_name(dataset_id: int, name: str = "DrosophilaFold0") -> str:
    """nnU-Net's folder name ``DatasetXXX_Name`` (three digits)."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be 1..999 (nnU-Net's three digits), got {dataset_id}.")
    return f"Dataset{dataset_id:03d}_{name}"


def nnunet_dirs(work_dir: str | os.PathLike) -> dict[str, Path]:
    """nnU-Net's three folders under ``work_dir`` (the values of its ``nnUNet_*`` environment variables)."""
    work = Path(work_dir)
    return {"nnUNet_raw": work / "raw", "nnUNet_preprocessed": work / "preprocessed", "nnUNet_results": work / "results"}


def _section_of(path: str) -> int:
    m = re.search(r"sec_(\d+)", Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a prepared Drosophila file (expected sec_XX in the name).")
    return int(m.group(1))


def fold_sections(datalist: str | os.PathLike) -> dict[str, list[Path]]:
    """The fold's whole sections by role: ``{"training": [...], "validation": [...], "testing": [...]}`` (image paths).

    Training and validation sections are the sources of the fold's crops; testing are its ``testing_sections``.

    Raises:
        ValueError: a datalist without ``testing_sections`` or crops, or a section image missing from ``sections/``.
    """
    datalist = Path(datalist)
    content = json.loads(datalist.read_text())
    root = datalist.parent
    missing = [k for k in ("training", "validation", "testing_sections") if not content.get(k)]
    if missing:
        raise ValueError(f"{datalist}: no {', '.join(missing)}; give a fold datalist written by "
                         "`python -m scripts.data.prepare drosophila` (datalist_fold0.json).")
    out = {}
    for key in ("training", "validation"):
        ids = sorted({_section_of(item["image"]) for item in content[key]})
        out[key] = [root / "sections" / "images" / f"sec_{i:02d}.png" for i in ids]
    out["testing"] = [root / item["image"] for item in content["testing_sections"]]
    for path in (p for paths in out.values() for p in paths):
        if not path.is_file() or not (path.parent.parent / "labels" / path.name).is_file():
            raise ValueError(f"{path}: section image or its label (sections/labels/{path.name}) missing; prepare the "
                             "dataset again.")
    return out


def convert_fold(datalist: str | os.PathLike, work_dir: str | os.PathLike, dataset_id: int = 501) -> Path:
    """Write nnU-Net's raw dataset and fold-0 split for a prepared Drosophila fold (module docstring, step 1).

    Returns:
        the raw dataset folder ``<work_dir>/raw/DatasetXXX_DrosophilaFold0``.
    """
    sections = fold_sections(datalist)
    dirs = nnunet_dirs(work_dir)
    name = dataset_name(dataset_id)
    raw = dirs["nnUNet_raw"] / name
    if raw.exists():
        shutil.rmtree(raw)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True)
    cases: dict[str, list[str]] = {}
    for role, paths in sections.items():
        img_dir, lab_dir = ("imagesTs", "labelsTs") if role == "testing" else ("imagesTr", "labelsTr")
        cases[role] = []
        for path in paths:
            case = path.stem  # sec_XX
            image = read_image(path)
            label = read_image(path.parent.parent / "labels" / path.name)
            if image.ndim != 2 or label.shape != image.shape:
                raise ValueError(f"{path}: expected a grey section and a label of its size, got {image.shape} and "
                                 f"{label.shape}.")
            if label.max() >= len(CLASS_NAMES):
                raise ValueError(f"{path}: label values up to {int(label.max())}, expected 0..{len(CLASS_NAMES) - 1}.")
            write_png(raw / img_dir / f"{case}_0000.png", image)
            write_png(raw / lab_dir / f"{case}.png", label)
            cases[role].append(case)
    labels = {("background" if i == 0 else n): i for i, n in enumerate(CLASS_NAMES)}
    dataset_json = {
        "channel_names": {"0": "EM"},  # any name but CT/noNorm/rescale_to_0_1/rgb_to_0_1: z-score normalisation
        "labels": labels,
        "numTraining": len(cases["training"]) + len(cases["validation"]),
        "file_ending": ".png",
        "name": name,
        "description": f"Drosophila ssTEM, fold from {Path(datalist).name}: class 0 ('background' for nnU-Net) is "
                       f"{CLASS_NAMES[0]}. Training {cases['training']}, validation {cases['validation']}, "
                       f"test {cases['testing']}.",
        "licence": "CC BY-NC-SA 3.0 (Gerhard et al. 2013, doi:10.6084/m9.figshare.856713)",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    split = [{"train": cases["training"], "val": cases["validation"]}]
    pre = dirs["nnUNet_preprocessed"] / name
    pre.mkdir(parents=True, exist_ok=True)
    (pre / "splits_final.json").write_text(json.dumps(split, indent=2))
    return raw


def score_predictions(pred_dir: str | os.PathLike, labels_dir: str | os.PathLike,
                      num_classes: int = len(CLASS_NAMES)) -> dict:
    """Score a folder of predicted label PNGs against the label PNGs of the same names with our metric code.

    Returns:
        ``{"images", "mean_iou", "iou" (per class name), "per_image_mean_iou", "rand_error", "cases"}``: IoU from the
        confusion matrix accumulated over all images (as ``evaluate.json``), the per-image mean IoU, and the
        membrane adapted Rand error (mean over images).

    Raises:
        ValueError: no label files, a label without its prediction, or sizes that differ.
    """
    pred_dir, labels_dir = Path(pred_dir), Path(labels_dir)
    labels = sorted(labels_dir.glob("*.png"))
    if not labels:
        raise ValueError(f"{labels_dir}: no label PNGs to score against.")
    cms, rand, cases = [], [], []
    for lab_path in labels:
        pred_path = pred_dir / lab_path.name
        if not pred_path.is_file():
            raise ValueError(f"{pred_path}: prediction missing for {lab_path.name}; predict every test case first.")
        true, pred = read_image(lab_path).astype(np.int64), read_image(pred_path).astype(np.int64)
        if pred.shape != true.shape:
            raise ValueError(f"{pred_path}: prediction {pred.shape} and label {true.shape} differ in size.")
        cms.append(confusion_matrix(torch.as_tensor(pred)[None, None], torch.as_tensor(true)[None, None], num_classes)[0])
        rand.append(membrane_rand_error(pred, true, MEMBRANE))
        cases.append(lab_path.stem)
    cms_t = torch.stack(cms)
    acc = scores_from_confusion(cms_t.sum(dim=0))
    names = list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else [str(i) for i in range(num_classes)]
    return {
        "images": len(cases),
        "mean_iou": float(torch.nanmean(acc["iou"])),
        "iou": {n: float(v) for n, v in zip(names, acc["iou"])},
        "per_image_mean_iou": float(per_image_scores(cms_t)["mean_iou"]),
        "rand_error": float(np.nanmean(rand)),
        "cases": cases,
    }


# ---- nnU-Net commands (need .venv-nnunet) --------------------------------------------------------------------------


def nnunet_env(work_dir: str | os.PathLike, budget_s: float | None = None, extra: dict | None = None) -> dict:
    env = dict(os.environ, **{k: str(v) for k, v in nnunet_dirs(work_dir).items()})
    env["nnUNet_extTrainer"] = str(TRAINER_DIR)
    if budget_s is not None:
        env["NNUNET_BUDGET_S"] = str(int(budget_s))
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def _tool(name: str) -> str:
    """An nnU-Net command from this interpreter's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise FileNotFoundError(f"{name}: not found next to {sys.executable} or on PATH; create the nnU-Net "
                                    "environment (bash tools/nnunet_env.sh) and run this script with "
                                    ".venv-nnunet/bin/python.")
        return found
    return str(path)


def commands(dataset_id: int, work_dir: str | os.PathLike, processes: int = 2, tta: bool = False) -> dict[str, list[list[str]]]:
    """The nnU-Net command lines of steps 2-4 (names resolved at run time)."""
    d, raw = str(dataset_id), nnunet_dirs(work_dir)["nnUNet_raw"] / dataset_name(dataset_id)
    return {
        "plan": [
            ["nnUNetv2_extract_fingerprint", "-d", d, "-np", str(processes), "--verify_dataset_integrity"],
            ["nnUNetv2_plan_experiment", "-d", d, "-gpu_memory_target", "1", "-overwrite_plans_name", PLANS],
            ["nnUNetv2_preprocess", "-d", d, "-plans_name", PLANS, "-c", CONFIGURATION, "-np", str(processes)],
        ],
        "train": [["nnUNetv2_train", d, CONFIGURATION, "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu"]],
        "predict": [["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(Path(work_dir) / "predictions"),
                     "-d", d, "-c", CONFIGURATION, "-f", "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu",
                     "-npp", str(processes), "-nps", str(processes)] + ([] if tta else ["--disable_tta"])],
    }


def install_trainer() -> Path:
    """Copy the budget trainer into the installed nnU-Net's trainer folder (when missing or different).

    nnU-Net resolves ``-tr NAME`` by importing the modules of ``nnunetv2/training/nnUNetTrainer`` itself first; a file
    there is found before the subpackages (and their timm/torchvision imports) are searched.

    Returns:
        the installed file.
    """
    import nnunetv2

    src = TRAINER_DIR / f"{TRAINER}.py"
    dst = Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    if not dst.is_file() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)
    return dst


def run_step(step: str, args: argparse.Namespace) -> dict:
    if step in ("train", "predict"):
        install_trainer()
    budget_s = args.budget_min * 60 if step == "train" else None
    env = nnunet_env(args.work_dir, budget_s)
    record = {"step": step, "commands": [], "seconds": 0.0}
    for cmd in commands(args.dataset_id, args.work_dir, args.processes, args.tta)[step]:
        cmd = [_tool(cmd[0])] + cmd[1:]
        t0 = time.monotonic()
        subprocess.run(cmd, env=env, check=True)
        record["commands"].append(" ".join(cmd))
        record["seconds"] += round(time.monotonic() - t0, 1)
    if step == "train":  # what the budget trainer made of the budget
        ckpt = Path(args.work_dir) / "results" / dataset_name(args.dataset_id) / f"{TRAINER}__{PLANS}__{CONFIGURATION}" \
            / "fold_0" / "checkpoint_final.pth"
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        record["epochs"] = int(state["current_epoch"])
        record["iterations_per_epoch"] = int(os.environ.get("NNUNET_ITERS_PER_EPOCH", 25))
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["convert", "plan", "train", "predict", "score", "all"])
    ap.add_argument("--datalist", default=str(REPO / "bundle" / "data" / "drosophila" / "datalist_fold0.json"))
    ap.add_argument("--work_dir", default=str(REPO / "runs" / "nnunet"))
    ap.add_argument("--dataset_id", type=int, default=501)
    ap.add_argument("--budget_min", type=float, default=45.0, help="training wall-clock budget in minutes")
    ap.add_argument("--processes", type=int, default=2, help="nnU-Net worker processes (-np, -npp, -nps)")
    ap.add_argument("--tta", action="store_true", help="predict with nnU-Net's test-time mirroring")
    ap.add_argument("--pred_dir", default=None, help="score: predictions (default <work_dir>/predictions)")
    ap.add_argument("--labels_dir", default=None, help="score: labels (default the converted labelsTs)")
    ap.add_argument("--json", default=None, help="results file (default <work_dir>/scores.json)")
    args = ap.parse_args(argv)

    work = Path(args.work_dir)
    raw = nnunet_dirs(work)["nnUNet_raw"] / dataset_name(args.dataset_id)
    steps = ["convert", "plan", "train", "predict", "score"] if args.step == "all" else [args.step]
    report: dict = {"datalist": args.datalist, "dataset": dataset_name(args.dataset_id), "budget_min": args.budget_min,
                    "trainer": TRAINER, "plans": PLANS, "steps": []}
    for step in steps:
        t0 = time.monotonic()
        if step == "convert":
            convert_fold(args.datalist, work, args.dataset_id)
            report["steps"].append({"step": step, "seconds": round(time.monotonic() - t0, 1)})
        elif step == "score":
            report["scores"] = score_predictions(args.pred_dir or work / "predictions", args.labels_dir or raw / "labelsTs")
            report["steps"].append({"step": step, "seconds": round(time.monotonic() - t0, 1)})
        else:
            report["steps"].append(run_step(step, args))
        print(f"[nnunet_peer] {step}: {report['steps'][-1]['seconds']} s", flush=True)
    out = Path(args.json or work / "scores.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if "scores" in report:
        s = report["scores"]
        print(f"mIoU {s['mean_iou']:.4f}, per-image {s['per_image_mean_iou']:.4f}, adapted Rand error "
              f"{s['rand_error']:.4f}, per class " + ", ".join(f"{k} {v:.3f}" for k, v in s["iou"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
