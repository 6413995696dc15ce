"""Seconds per training step of the bundle's network and loss on the CPU: layouts, ``torch.compile``, threads, batch.

Issue #14's "speed per step" candidates, measured side by side in one process on the same random batch (so that the
ratios mean something): one step = forward, the config's loss, backward and an Adam step, as ``SupervisedTrainer``
does it. The variants are timed round-robin (``--rounds`` rounds of ``--warmup`` untimed and ``--steps`` timed steps
each), so that a change in the machine's load falls on all of them; each reports the median of its timed steps:

- ``contiguous``: the network in the default NCHW layout, ``--threads`` threads;
- ``channels_last``: weights and input in channels-last (what ``train.json`` does on a CPU, ``channels_last``);
- ``compile``: ``torch.compile`` of the channels-last network (PyTorch's default inductor backend; the compile
  time, with its first step, is reported apart and not counted);
- ``threads=N``: channels-last with ``N`` intra-op threads, for every N of ``--thread_counts``;
- ``batch=B``: channels-last at batch size ``B`` (reported per sample as well), for every B of ``--batch_sizes``.

The network and loss come from ``bundle/configs/train.json`` plus ``--experiment`` (default ``unet_sce_iou``, the
shipped recipe), at ``--features`` widths; the data pipeline is not timed (see ``train_throughput.py``).

Example (the manual's recipe table, "speed per step" rows)::

    python benchmarks/train_step_speed.py --features 16 32 64 128 256 --json step_speed.json
    python benchmarks/train_step_speed.py --smoke       # tiny sizes, a check that it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]


def build(experiment: str | None, features: list[int], work_dir: str):
    """The config's network (untrained) and loss."""
    files = [str(REPO / "bundle" / "configs" / "train.json")]
    if experiment:
        files.append(str(REPO / "bundle" / "configs" / "experiments" / "paper" / f"{experiment}.json"))
    parser = ConfigParser()
    parser.read_config(files)
    parser["bundle_root"] = work_dir  # never the repository's bundle (it holds a shipped model)
    parser["features"] = list(features)
    parser["device"] = "$torch.device('cpu')"
    return parser.get_parsed_content("network_def"), parser.get_parsed_content("loss")


def time_steps(network, loss_fn, image: torch.Tensor, label: torch.Tensor, steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` training steps after ``warmup`` untimed ones."""
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(image), label)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def batch(size: int, batch_size: int, num_classes: int, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch_size, 1, size, size, generator=g)
    label = torch.randint(0, num_classes, (batch_size, 1, size, size), generator=g)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, label


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="unet_sce_iou", help="override file of configs/experiments/paper ('' = none)")
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--size", type=int, default=256, help="patch size (train.json's patch_size)")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the main variants")
    ap.add_argument("--thread_counts", type=int, nargs="*", default=[1], help="other thread counts to time")
    ap.add_argument("--batch_sizes", type=int, nargs="*", default=[4, 16], help="other batch sizes to time")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the variants")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no_compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (tests): features 4..64, 64x64, batch 2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.smoke:
        args.features, args.size, args.batch_size, args.steps, args.warmup, args.rounds = [4, 8, 16, 32, 64], 64, 2, 1, 1, 2
        args.batch_sizes = [1]
    num_classes = 5
    results: dict = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                     "torch": torch.__version__, "variants": {}}

    def record(name: str, times: list[float], batch_size: int, **extra) -> None:
        med = statistics.median(times)
        results["variants"][name] = {"s_per_step": round(med, 4), "s_per_sample": round(med / batch_size, 4),
                                     "batch_size": batch_size, "times": [round(t, 4) for t in times], **extra}
        print(f"[train_step_speed] {name}: {med:.3f} s/step ({med / batch_size:.3f} s/sample)", flush=True)

    threads_before = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory() as work:
            network, loss_fn = build(args.experiment or None, args.features, work)
            state = {k: v.clone() for k, v in network.state_dict().items()}

            def fresh(channels_last: bool):
                network.load_state_dict(state)
                network.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                return network

            image, label = batch(args.size, args.batch_size, num_classes, channels_last=False)
            image_cl, _ = batch(args.size, args.batch_size, num_classes, channels_last=True)
            # name -> (network factory, image, label, threads, batch size)
            variants = {"contiguous": (lambda: fresh(False), image, label, args.threads, args.batch_size),
                        "channels_last": (lambda: fresh(True), image_cl, label, args.threads, args.batch_size)}
            compile_s = None
            if not args.no_compile:
                torch.set_num_threads(args.threads)
                compiled = torch.compile(fresh(True))
                t0 = time.perf_counter()
                time_steps(compiled, loss_fn, image_cl, label, steps=1, warmup=0)  # compiles forward and backward
                compile_s = round(time.perf_counter() - t0, 1)
                variants["compile"] = (lambda: (fresh(True), compiled)[1], image_cl, label, args.threads,
                                       args.batch_size)
            for n in args.thread_counts:
                variants[f"threads={n}"] = (lambda: fresh(True), image_cl, label, n, args.batch_size)
            for b in args.batch_sizes:
                img, lab = batch(args.size, b, num_classes, channels_last=True)
                variants[f"batch={b}"] = (lambda: fresh(True), img, lab, args.threads, b)

            # round-robin: every variant times a few steps in each round, so that a change in the machine's load
            # during the run falls on all of them
            times: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(args.rounds):
                for name, (factory, img, lab, threads, _) in variants.items():
                    torch.set_num_threads(threads)
                    times[name] += time_steps(factory(), loss_fn, img, lab, args.steps, args.warmup)
            for name, (_, _, _, threads, b) in variants.items():
                extra = {"compile_s": compile_s} if name == "compile" else {}
                record(name, times[name], b, threads=threads, **extra)
    finally:
        torch.set_num_threads(threads_before)

    base = results["variants"]["channels_last"]["s_per_sample"]
    results["ratio_to_channels_last_per_sample"] = {k: round(v["s_per_sample"] / base, 3)
                                                    for k, v in results["variants"].items()}
    print(json.dumps(results["ratio_to_channels_last_per_sample"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
