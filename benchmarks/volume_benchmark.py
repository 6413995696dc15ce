"""Volume inference at scale: the bundle's single-process inference vs the Dask runner with 1 and 2 workers, and the
memory bound of the runner on volumes larger than memory.

1. **Throughput.** A synthetic ``--sections`` x ``--size``^2 8-bit volume (:func:`scripts.data.make_sample`, one
   seed per section) is written as an OME-Zarr (one chunk of 1024^2 at most per section) and as one PNG per section.
   Then, each as users run it, one after the other, each command in a fresh process:

   - ``single``: ``python -m monai.bundle run inference`` on the folder of PNGs (pictures and probabilities off);
   - ``dask-N``: ``python -m monai.bundle run volume`` on the OME-Zarr with ``--workers N`` (the runner's default
     layout: one worker in the driver's process, several as processes; PyTorch threads = cores / workers).

   Reported: sections/s while predicting (single: the report's per-file seconds; Dask: the runner's summary) and of
   the whole command (start-up included), the peak resident memory of each worker and of the command, the scaling
   ratio (``dask-2`` / ``dask-1``), and whether the label maps are identical to the single-process ones.
2. **Memory bound.** Volumes of ``--bound-sections`` x ``--bound-size``^2 (default 20, 200 and 2000 x 4096^2: 0.3,
   3.4 and 34 GB of 8-bit pixels, the last more than this machine's memory) are created as OME-Zarr whose first
   ``--bound-blocks`` sections are written (synthetic) and the rest left unwritten (zarr reads them as zeros, so the
   files stay small); the runner (one worker, in a fresh process) predicts those blocks only. If the runner loaded
   the volume, its peak memory would grow with the number of sections; it is the same for every volume.

Usage::

    python benchmarks/volume_benchmark.py [--sections 64] [--size 2048] [--workers 1 2]
        [--ckpt bundle/models/pretrained/model.pt | --features 4 8 16] [--bound-sections 20 200 2000]
        [--bound-size 4096] [--bound-blocks 2] [--work runs/volume_benchmark] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundle" / "configs"
VOLUME_CONFIGS = json.dumps([str(CONFIGS / "inference.json"), str(CONFIGS / "volume.json")])


def _env() -> dict:
    bundle = str(REPO / "bundle")
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=bundle + (os.pathsep + path if path else ""), PYTHONUNBUFFERED="1")


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` in a fresh wrapper process; its wall seconds and the peak resident memory (MiB) of its largest
    process (``RUSAGE_CHILDREN`` of the wrapper, so that earlier commands do not count)."""
    wrapper = [sys.executable, __file__, "--_measure", json.dumps(cmd), str(log)]
    out = subprocess.run(wrapper, env=_env(), capture_output=True, text=True, check=False, cwd=REPO)
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}") from None
    if result["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result['returncode']}; see {log}:\n{log.read_text()[-3000:]}")
    return result


def _measure_main(cmd: str, log: str) -> None:
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(json.loads(cmd), stdout=f, stderr=subprocess.STDOUT, env=_env(), cwd=REPO).returncode
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"returncode": code, "seconds": round(time.perf_counter() - start, 2), "peak_mib": round(peak, 1)}))


def model_file(args, work: Path) -> Path:
    """The model: ``--ckpt``, or a random-weight X-Net of ``--features`` (speed does not depend on the weights)."""
    if args.ckpt:
        return Path(args.ckpt)
    import torch

    from scripts.data import CLASS_NAMES
    from scripts.networks import ModelInfo, XNet

    torch.manual_seed(0)
    net = XNet(2, 1, len(CLASS_NAMES), args.features, batch_norm=True, skip="both").eval()
    path = work / "model.pt"
    torch.save({"model": net.state_dict(), "model_info": ModelInfo(net, CLASS_NAMES, 255, [256, 256]).state_dict()}, path)
    return path


def make_volume(work: Path, sections: int, size: int) -> tuple[Path, Path]:
    """The OME-Zarr volume and the folder of its sections as PNGs."""
    from scripts.data import make_sample, write_png
    from scripts.volumes import write_ome_zarr

    volume = np.stack([make_sample(size, i)[0] for i in range(sections)])
    chunk = min(1024, size)
    zarr_path = write_ome_zarr(work / "volume.zarr", volume, chunks=(1, chunk, chunk))
    folder = work / "sections"
    for i, section in enumerate(volume):
        write_png(folder / f"s{i:04d}.png", section)
    return zarr_path, folder


def run_single(args, work: Path, folder: Path, model: Path) -> dict:
    out = work / "single"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(CONFIGS / "inference.json"),
           "--bundle_root", str(work), "--input", str(folder), "--output_dir", str(out), "--ckpt_path", str(model),
           "--pictures", "False", "--feature_maps", "False", "--save_probabilities", "False", "--progress", "False"]
    if not args.ckpt:
        cmd += ["--features", repr(list(args.features))]
    result = measure(cmd, work / "single.log")
    report = json.loads((out / "inference_report.json").read_text())
    files = report["files"]
    predicting = sum(f["seconds"] or 0 for f in files)
    return {"case": "single", "command": " ".join(cmd), "sections": len(files), "wall_s": result["seconds"],
            "predicting_s": round(predicting, 2), "sections_per_s": round(len(files) / predicting, 4),
            "sections_per_s_wall": round(len(files) / result["seconds"], 4), "peak_mib_per_worker": [result["peak_mib"]],
            "peak_mib_command": result["peak_mib"]}


def run_dask(args, work: Path, volume: Path, model: Path, workers: int) -> dict:
    out = work / f"dask{workers}.ome.zarr"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "volume", "--config_file", VOLUME_CONFIGS,
           "--bundle_root", str(work), "--input", str(volume), "--output", str(out), "--ckpt_path", str(model),
           "--workers", str(workers), "--overwrite", "True", "--progress_interval", "30"]
    if not args.ckpt:
        cmd += ["--features", repr(list(args.features))]
    result = measure(cmd, work / f"dask{workers}.log")
    summary = json.loads((Path(str(out) + ".blocks") / "summary.json").read_text())
    return {"case": f"dask-{workers}", "command": " ".join(cmd), "sections": summary["sections"],
            "wall_s": result["seconds"], "predicting_s": summary["seconds_predicting"],
            "sections_per_s": summary["sections_per_second"],
            "sections_per_s_wall": round(summary["sections"] / result["seconds"], 4),
            "peak_mib_per_worker": list(summary["peak_memory_mib"].values()),
            "peak_mib_driver": summary["driver_peak_memory_mib"], "peak_mib_command": result["peak_mib"],
            "output": str(out)}


def same_labels(single: Path, output: str, sections: int) -> dict:
    """How many sections of a Dask output equal the single-process label maps, bit for bit."""
    import zarr
    from PIL import Image

    labels = zarr.open_array(store=str(Path(output) / "0"), mode="r")
    equal, pixels = 0, 0.0
    for i in range(sections):
        ref = np.asarray(Image.open(single / f"s{i:04d}_seg.png"))
        got = labels[i]
        equal += int(np.array_equal(ref, got))
        pixels += float((ref == got).mean())
    return {"identical_sections": equal, "of": sections, "pixel_agreement": round(pixels / sections, 6)}


def bound_case(path: str, blocks: str, ckpt: str) -> None:
    """(Fresh process.) Predict the first ``blocks`` blocks of the volume at ``path`` with one in-process worker;
    print the summary with this process's peak memory."""
    from scripts.data import CLASS_NAMES
    from scripts.inferers import OverlapTileInferer
    from scripts.networks import network_from_checkpoint
    from scripts.volumes import DaskVolumeRunner, VolumeJob

    job = VolumeJob(path, path + ".out.ome.zarr", class_names=CLASS_NAMES, model=ckpt, overwrite=True).prepare()
    job.pending = job.pending[: int(blocks)]
    network = network_from_checkpoint(ckpt).eval()
    summary = DaskVolumeRunner(job, network, OverlapTileInferer(sw_batch_size=4, mode="reflect"), device="cpu",
                               workers=1, progress_interval=60).run()
    summary["process_peak_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(summary))


def make_bound_volume(path: Path, written: np.ndarray, sections: int) -> Path:
    """An OME-Zarr of ``sections`` sections whose first ``len(written)`` are ``written`` and the others unwritten
    chunks (read as zeros): the volume's full size on disk costs only what was written."""
    import zarr

    from scripts.volumes import write_ome_zarr

    size = written.shape[-1]
    write_ome_zarr(path, written, chunks=(1, min(1024, size), min(1024, size)))
    zarr.open_array(store=str(path / "0"), mode="r+").resize((sections, size, size))
    return path


def run_bound(args, work: Path, model: Path) -> list[dict]:
    from scripts.data import make_sample

    size, blocks = args.bound_size, args.bound_blocks
    rows = []
    written = np.stack([make_sample(size, 1000 + i)[0] for i in range(blocks)])
    for sections in args.bound_sections:
        path = make_bound_volume(work / f"bound_{sections}.zarr", written, sections)
        cmd = [sys.executable, __file__, "--_bound-case", str(path), str(blocks), str(model)]
        out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            raise RuntimeError(f"memory-bound case {sections} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"sections": sections, "size": size, "volume_gb_uint8": round(sections * size * size / 1e9, 2),
                     "volume_gb_float32": round(4 * sections * size * size / 1e9, 2), "blocks_predicted": blocks,
                     "seconds_per_section": round(summary["seconds_predicting"] / max(summary["sections"], 1), 2),
                     "peak_mib": summary["process_peak_mib"], "disk_mb": round(_du(path) / 1e6, 1)})
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(str(path) + ".out.ome.zarr", ignore_errors=True)
        shutil.rmtree(str(path) + ".out.ome.zarr.blocks", ignore_errors=True)
    return rows


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=64)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ckpt", default=str(REPO / "bundle" / "models" / "pretrained" / "model.pt"),
                        help="the model (default: the shipped one); --features gives a random-weight X-Net instead")
    parser.add_argument("--features", type=int, nargs="+", default=None)
    parser.add_argument("--bound-sections", type=int, nargs="*", default=[20, 200, 2000])
    parser.add_argument("--bound-size", type=int, default=4096)
    parser.add_argument("--bound-blocks", type=int, default=2)
    parser.add_argument("--work", default=str(REPO / "runs" / "volume_benchmark"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.features:
        args.ckpt = None
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = model_file(args, work)
    volume, folder = make_volume(work, args.sections, args.size)
    rows = [run_single(args, work, folder, model)]
    for n in args.workers:
        rows.append(run_dask(args, work, volume, model, n))
        rows[-1]["labels_vs_single"] = same_labels(work / "single", rows[-1].pop("output"), args.sections)
    rates = {r["case"]: r["sections_per_s"] for r in rows}
    scaling = {"dask-2 / dask-1": round(rates["dask-2"] / rates["dask-1"], 3)} if {"dask-1", "dask-2"} <= set(rates) else {}
    scaling.update({f"{c} / single": round(v / rates["single"], 3) for c, v in rates.items() if c != "single"})
    bound = run_bound(args, work, model) if args.bound_sections else []
    result = {"machine": {"cores": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "volume": {"sections": args.sections, "size": args.size}, "model": str(model),
              "throughput": rows, "scaling": scaling, "memory_bound": bound}
    print("| case | sections/s predicting | sections/s whole command | peak MiB per worker | labels = single |")
    print("|---|---|---|---|---|")
    for r in rows:
        same = r.get("labels_vs_single")
        peaks = ", ".join(f"{p:.0f}" for p in r["peak_mib_per_worker"])
        same = "" if same is None else f"{same['identical_sections']}/{same['of']}"
        print(f"| {r['case']} | {r['sections_per_s']:.3f} | {r['sections_per_s_wall']:.3f} | {peaks} | {same} |")
    print("scaling:", json.dumps(scaling))
    if bound:
        print("\n| volume (sections x size^2) | 8-bit GB | float32 GB | blocks predicted | peak MiB | s/section |")
        print("|---|---|---|---|---|---|")
        for b in bound:
            print(f"| {b['sections']} x {b['size']}^2 | {b['volume_gb_uint8']} | {b['volume_gb_float32']} | "
                  f"{b['blocks_predicted']} | {b['peak_mib']:.0f} | {b['seconds_per_section']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_measure":
        _measure_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--_bound-case":
        bound_case(*sys.argv[2:5])
    else:
        main()
