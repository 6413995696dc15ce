"""Default inference (``inference.json``, pictures on) per section, two checkouts side by side in one run.

Runs ``python -m monai.bundle run inference`` of ``--before`` (e.g. a v0.7.1 worktree, whose pictures ran the network
a second time for the feature maps and recomputed the refinement) and of ``--after`` (default: this checkout)
alternately (before, after, then after, before, ...), each in its own process with its own ``bundle/scripts``, on
the same ``--images`` synthetic EM-like ``--size`` x ``--size`` sections (:func:`scripts.data.make_sample`, with
labels, so the pictures include the ground truth) and the same model (``--ckpt``, default the shipped
``bundle/models/pretrained/model.pt``).

Per run: the seconds of each section from the run's ``inference_report.json`` (prediction and writing, pictures
included; loading overlaps the network) and the process's wall time (start-up and model loading included). Reported
per checkout: the median seconds per section over all runs, leaving out each run's first section (it also pays the
memory probe and first allocations, reported apart), the median wall time, and the ratio before / after; the 1-minute
load average at the start and the end says how busy the machine was. The outputs
of the two checkouts are compared byte for byte (label maps, probability maps, every picture; not the HTML gallery
and the report, which hold paths and times).

Usage::

    python benchmarks/inference_workflow_benchmark.py --before /work/base [--after .] [--size 1024] [--images 3]
        [--repeats 2] [--threads 1] [--ckpt model.pt] [--set key=json ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

from PIL import Image  # noqa: E402

from scripts.data import make_sample  # noqa: E402

#: files written by a run that hold paths or times, not results
NOT_COMPARED = ("index.html", "inference_report.json")  # and hidden files (the run lock)


def write_sections(folder: Path, size: int, count: int) -> Path:
    """``count`` synthetic sections with labels as PNGs in ``folder``; returns the datalist (key ``testing``)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        image, label = make_sample(size, seed=i)
        Image.fromarray(image).save(folder / f"section_{i:02d}.png")
        Image.fromarray(label).save(folder / f"section_{i:02d}_label.png")
        items.append({"image": str(folder / f"section_{i:02d}.png"), "label": str(folder / f"section_{i:02d}_label.png")})
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"testing": items}, indent=2))
    return datalist


def run_inference(root: Path, datalist: Path, ckpt: Path, out: Path, threads: int, overrides: list[str]) -> dict:
    """One ``run inference`` of the checkout at ``root``; its per-section seconds and wall time."""
    env = {**os.environ, "PYTHONPATH": str(root / "bundle"), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference",
           "--config_file", str(root / "bundle" / "configs" / "inference.json"), "--input", str(datalist),
           "--input_key", "testing", "--ckpt_path", str(ckpt), "--output_dir", str(out), "--progress", "False"]
    for item in overrides:
        key, _, value = item.partition("=")
        cmd += [f"--{key}", value]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"inference of {root} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((out / "inference_report.json").read_text())
    seconds = [float(f["seconds"]) for f in report["files"]]
    return {"seconds": seconds, "wall_s": wall}


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every result file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in NOT_COMPARED and not p.name.startswith(".")
    }


def summarise(runs: list[dict]) -> dict:
    later = [s for r in runs for s in r["seconds"][1:]]
    return {
        "seconds_per_section": statistics.median(later) if later else None,
        "first_section_seconds": statistics.median(r["seconds"][0] for r in runs),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="root of the checkout measured first (e.g. a v0.7.1 worktree)")
    ap.add_argument("--after", default=str(REPO), help="root of the other checkout (default: this one)")
    ap.add_argument("--size", type=int, default=1024, help="section side in pixels (default 1024)")
    ap.add_argument("--images", type=int, default=3, help="sections per run (default 3; the first is left out)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per checkout, alternating (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs (default 1)")
    ap.add_argument("--ckpt", default=str(REPO / "bundle" / "models" / "pretrained" / "model.pt"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for both runs")
    ap.add_argument("--work-dir", default=None, help="where the sections and outputs go (default: a temporary folder)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.images < 2 or args.repeats < 1:
        ap.error("--images must be >= 2 (the first section of a run is reported apart) and --repeats >= 1")
    roots = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    load_at_start = os.getloadavg()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="inference_workflow_"))
    datalist = write_sections(work / "sections", args.size, args.images)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    outputs: dict[str, Path] = {}
    for r in range(args.repeats):
        for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
            out = work / f"{label}_{r}"
            runs[label].append(run_inference(roots[label], datalist, Path(args.ckpt), out, args.threads, args.set))
            outputs.setdefault(label, out)
            print(f"{label:>6} run {r}: seconds per section {runs[label][-1]['seconds']}, "
                  f"wall {runs[label][-1]['wall_s']:.1f} s", flush=True)
    before, after = digests(outputs["before"]), digests(outputs["after"])
    differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    result = {
        "what": "inference.json defaults (pictures and feature maps on), seconds per section from "
                "inference_report.json, median over runs leaving out each run's first section",
        "size": args.size, "images": args.images, "repeats": args.repeats, "threads": args.threads,
        "ckpt": args.ckpt, "overrides": args.set, "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": load_at_start[0], "end": os.getloadavg()[0]},
        "roots": {k: str(v) for k, v in roots.items()},
        "before": summarise(runs["before"]), "after": summarise(runs["after"]),
        "files_compared": len(before.keys() | after.keys()), "files_differing": differ,
    }
    b, a = result["before"]["seconds_per_section"], result["after"]["seconds_per_section"]
    result["ratio_before_over_after"] = b / a
    print(f"seconds per {args.size}^2 section: before {b:.2f}, after {a:.2f}, ratio {b / a:.2f}; "
          f"{len(differ)} of {result['files_compared']} output files differ")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
