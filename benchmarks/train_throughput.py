"""Training throughput of the bundle's cached pipeline against the same network with an uncached pipeline.

Both pipelines are built from ``bundle/configs/train.json`` (so the benchmark measures what the bundle runs):

- **cached**: the config's ``train#dataset`` (MONAI ``CacheDataset``: images decoded, scaled and, on a GPU, moved to
  the device once) and ``train#dataloader`` (``ThreadDataLoader``); random augmentation runs on the device.
- **uncached**: ``monai.data.Dataset`` with the same transforms on the CPU (every image decoded and transformed
  every iteration) and a standard ``torch.utils.data.DataLoader`` with ``--workers`` worker processes; batches are
  moved to the device by the trainer, on a GPU from pinned memory without blocking (``pin_memory=True``,
  ``non_blocking=True``), as a tuned uncached pipeline would.

Same network, loss, optimizer and batch size, run through MONAI's ``SupervisedTrainer`` one after the other in one
process, with automatic mixed precision on a GPU. The first epoch of each is a warm-up and not timed. Prints
samples/s for each and the ratio. The network and loss are train.json's (X-Net, SCE and IoU) unless
``--experiment`` names an override file of ``bundle/configs/experiments/paper/`` (e.g. ``unet_sce_iou``) or a path.

Example::

    python benchmarks/train_throughput.py --epochs 4 --features 16 32 64 128 256
    python benchmarks/train_throughput.py --experiment unet_sce_iou --features 64 128 256 512 1024 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from monai.transforms import Compose

REPO = Path(__file__).resolve().parents[1]


def build_parser(args: argparse.Namespace, device: str) -> ConfigParser:
    parser = ConfigParser()
    files = [str(REPO / "bundle" / "configs" / "train.json")]
    if args.experiment:
        exp = Path(args.experiment)
        files.append(str(exp if exp.suffix == ".json" else REPO / "bundle" / "configs" / "experiments" / "paper" / f"{exp}.json"))
    parser.read_config(files)
    parser["bundle_root"] = args.work_dir
    parser["device"] = f"$torch.device('{device}')"
    parser["features"] = list(args.features)
    parser["batch_size"] = args.batch_size
    parser["cache_workers"] = args.cache_workers
    parser["synthetic#num_train"] = args.num_train
    parser["synthetic#size"] = args.size
    if args.datalist:
        parser["datalist_file"] = args.datalist
    return parser


def time_training(loader, parser: ConfigParser, device: torch.device, epochs: int, amp: bool,
                  non_blocking: bool = False) -> dict:
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def", instantiate=True).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=parser.get_parsed_content("loss").to(device),
        inferer=SimpleInferer(),
        amp=amp,
        non_blocking=non_blocking,
    )
    marks: dict[int, float] = {}
    samples = {"n": 0}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    @trainer.on(Events.EPOCH_STARTED)
    def _start(engine):
        sync()
        marks[engine.state.epoch] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _count(engine):
        if engine.state.epoch > 1:
            out = engine.state.output  # decollated by the trainer: one dict per sample
            samples["n"] += len(out) if isinstance(out, list) else out["image"].shape[0]

    trainer.run()
    sync()
    elapsed = time.perf_counter() - marks[2]
    return {"samples": samples["n"], "seconds": elapsed, "samples_per_s": samples["n"] / elapsed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per pipeline; the first is an untimed warm-up")
    ap.add_argument("--num-train", type=int, default=32, help="synthetic training images (ignored with --datalist)")
    ap.add_argument("--size", type=int, default=256, help="synthetic image size")
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers (uncached)")
    ap.add_argument("--cache-workers", type=int, default=2)
    ap.add_argument("--experiment", default=None,
                    help="experiment override file: a name in bundle/configs/experiments/paper (unet_sce_iou) or a path")
    ap.add_argument("--datalist", default=None, help="datalist JSON (e.g. a Drosophila fold) instead of synthetic data")
    ap.add_argument("--work-dir", default=None, help="where synthetic data is written (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory()
    args.work_dir = args.work_dir or tmp.name
    device = torch.device(args.device)
    amp = device.type == "cuda"

    cached_parser = build_parser(args, args.device)
    t0 = time.perf_counter()
    cached_loader = cached_parser.get_parsed_content("train#dataloader")
    cache_seconds = time.perf_counter() - t0
    cached = time_training(cached_loader, cached_parser, device, args.epochs, amp)

    cpu_parser = build_parser(args, "cpu")
    data = cpu_parser.get_parsed_content("train_datalist")
    transforms = Compose(
        cpu_parser.get_parsed_content("train#deterministic_transforms")
        + cpu_parser.get_parsed_content("train#random_transforms")
    )
    uncached_loader = DataLoader(
        Dataset(data, transform=transforms),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda",
    )
    uncached = time_training(uncached_loader, cpu_parser, device, args.epochs, amp, non_blocking=device.type == "cuda")

    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "images": len(data),
        "image_size": args.size if not args.datalist else "from datalist",
        "network": type(cached_parser.get_parsed_content("network_def")).__name__,
        "experiment": args.experiment,
        "amp": amp,
        "features": args.features,
        "batch_size": args.batch_size,
        "timed_epochs": args.epochs - 1,
        "cache_build_seconds": round(cache_seconds, 2),
        "cached_samples_per_s": round(cached["samples_per_s"], 2),
        "uncached_samples_per_s": round(uncached["samples_per_s"], 2),
        "uncached_workers": args.workers,
        "ratio_cached_over_uncached": round(cached["samples_per_s"] / uncached["samples_per_s"], 3),
    }
    print("pipeline   samples/s")
    print(f"cached     {result['cached_samples_per_s']:9.2f}   (CacheDataset + ThreadDataLoader, cache built in {cache_seconds:.1f} s)")
    print(f"uncached   {result['uncached_samples_per_s']:9.2f}   (Dataset + DataLoader, {args.workers} workers)")
    print(f"ratio cached/uncached: {result['ratio_cached_over_uncached']:.2f}x on {result['device']}")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
