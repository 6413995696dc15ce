"""Folder inference throughput: images/s of ``inference.json`` on a folder of synthetic images, with and without
prefetching.

Writes ``--num-images`` synthetic EM-like ``--size`` x ``--size`` 8-bit PNGs (:func:`scripts.data.make_sample`) and a
randomly initialised model (the config's network with ``--features``; timing does not depend on the weights), then
runs the bundle's inference workflow in this process (``monai.bundle.ConfigWorkflow``, as
``python -m monai.bundle run inference`` does) twice into fresh output folders:

- ``prefetch``: the default loader, ``ThreadDataLoader`` (``dataloaders#prefetch``): the next files are read and
  preprocessed in a background thread while the network runs;
- ``plain``: ``--dataloader "@dataloaders#plain"``, a ``DataLoader`` without workers: read, then predict, in turn.

Everything else as configured (label maps, uint8 probability maps; pictures only with ``--pictures``). A warm-up run
on three images comes first. Reported: wall seconds from the pre-flight to the end of the run, images/s, and the
report's counts.

Usage::

    python benchmarks/folder_throughput.py [--num-images 200] [--size 512] [--features 16 32 64 128 256]
        [--pictures] [--work-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from scripts.data import make_sample, write_png

REPO = Path(__file__).resolve().parents[1]
INFERENCE = REPO / "bundle" / "configs" / "inference.json"


def run_inference(bundle_root: Path, input_dir: Path, output_dir: Path, loader: str, args) -> dict:
    """One inference run; returns seconds, images/s and the report's counts."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(INFERENCE),
        meta_file=str(REPO / "bundle" / "configs" / "metadata.json"),
        logging_file=None,
        workflow_type="infer",
        bundle_root=str(bundle_root),
        input=str(input_dir),
        output_dir=str(output_dir),
        features=args.features,
        pictures=args.pictures,
        progress=False,
        dataloader=f"@dataloaders#{loader}",
    )
    start = time.perf_counter()
    workflow.initialize()
    workflow.run()
    seconds = time.perf_counter() - start
    report = json.loads((output_dir / "inference_report.json").read_text())
    n = len(report["files"])
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "counts": report["counts"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--pictures", action="store_true", help="also write the pictures (off: label/probability maps)")
    parser.add_argument("--work-dir", help="folder for the images, model and outputs (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.getLogger("scripts").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        images = work / "images"
        for i in range(args.num_images):
            write_png(images / f"section_{i:04d}.png", make_sample(args.size, seed=i)[0])
        warm = work / "warmup"
        for i in range(3):
            write_png(warm / f"w{i}.png", make_sample(args.size, seed=10_000 + i)[0])
        from monai.bundle import ConfigParser

        cfg = ConfigParser()
        cfg.read_config(str(INFERENCE))
        cfg["features"] = args.features
        cfg["bundle_root"] = str(work)  # no model there yet: the config's network (not the bundle's shipped model)
        torch.manual_seed(0)
        net = cfg.get_parsed_content("network_def")
        (work / "models").mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), work / "models" / "model.pt")

        run_inference(work, warm, work / "out_warmup", "prefetch", args)
        runs = {loader: run_inference(work, images, work / f"out_{loader}", loader, args) for loader in ("prefetch", "plain")}
    result = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} torch threads)",
        "num_images": args.num_images,
        "size": args.size,
        "features": args.features,
        "pictures": args.pictures,
        "weights": "random (seed 0)",
        "runs": runs,
        "speedup_prefetch": runs["prefetch"]["images_per_s"] / runs["plain"]["images_per_s"],
    }
    for loader, r in runs.items():
        print(f"{loader:>9}: {r['images']} images in {r['seconds']:.1f} s = {r['images_per_s']:.2f} images/s")
    print(f"prefetch speed-up: {result['speedup_prefetch']:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
