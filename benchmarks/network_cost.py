"""Parameter count and FLOPs of the bundle's networks (UNet, XNet, DoubleUNet, EnsembleUNet).

One forward pass of a ``1 x in_channels x SIZE x SIZE`` input in eval mode (what inference runs), counted with
``torch.utils.flop_counter.FlopCounterMode``: convolutions, transposed convolutions and matrix products, with one
multiply-add counted as 2 FLOPs (pooling, ReLU, batch norm, softmax and concatenation are not counted). The models
and the input live on PyTorch's ``meta`` device, so nothing is computed and the script takes seconds whatever the
size: the counts follow from the shapes alone.

Usage::

    python benchmarks/network_cost.py                      # paper features and (16, 32, 64, 128, 256), 256 x 256
    python benchmarks/network_cost.py --size 512 --json benchmarks/network_cost.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from scripts.data.classes import NUM_CLASSES
from scripts.networks import DoubleUNet, EnsembleUNet, UNet, XNet

PAPER_FEATURES = (64, 128, 256, 512, 1024)
SMALL_FEATURES = (16, 32, 64, 128, 256)
NETWORKS = {"UNet": UNet, "XNet": XNet, "DoubleUNet": DoubleUNet, "EnsembleUNet": EnsembleUNet}


def measure(name: str, features: tuple[int, ...], size: int, in_channels: int, out_channels: int) -> dict:
    """Parameter count and forward FLOPs of one network in eval mode."""
    with torch.device("meta"):
        net = NETWORKS[name](spatial_dims=2, in_channels=in_channels, out_channels=out_channels, features=features)
        x = torch.empty(1, in_channels, size, size)
    net.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = net(x)
    return {
        "network": name,
        "features": list(features),
        "input": [1, in_channels, size, size],
        "output": list(out.shape),
        "params": sum(p.numel() for p in net.parameters()),
        "flops": counter.get_total_flops(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--out-channels", type=int, default=NUM_CLASSES)
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    rows = [
        measure(name, features, args.size, args.in_channels, args.out_channels)
        for features in (PAPER_FEATURES, SMALL_FEATURES)
        for name in NETWORKS
    ]
    unet = {tuple(r["features"]): r for r in rows if r["network"] == "UNet"}
    print(
        f"Forward cost, eval mode, input 1x{args.in_channels}x{args.size}x{args.size}, {args.out_channels} classes "
        "(FLOPs: conv/matmul, 1 multiply-add = 2 FLOPs)"
    )
    header = f"{'network':<13} {'features':<26} {'params':>12} {'GFLOPs':>9} {'x UNet':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["flops"] / unet[tuple(r["features"])]["flops"]
        features = "(" + ", ".join(map(str, r["features"])) + ")"
        print(f"{r['network']:<13} {features:<26} {r['params']:>12,} {r['flops'] / 1e9:>9.2f} {ratio:>7.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
