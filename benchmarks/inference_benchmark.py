"""Whole-image inference, side by side: automatic overlap-tile vs its exact reference vs MONAI's sliding window vs
one plain whole-image forward pass, at one or more image sizes (``--size 1024 4096``).

On each ``--size`` x ``--size`` image (a Drosophila ssTEM section, ``stack1/raw/00.tif``, mirror-extended to the size,
when the dataset is present, else a synthetic EM-like image from :func:`scripts.data.make_sample`; the output says
which), the same network (a same-padding ``UNet``):

- (a) ``OverlapTileInferer`` with automatic tiles (``roi_size=None``): the fewest computed pixels whose memory fits
  ``--memory-budget-mb`` (default: the inferer's device default);
- (a-ref) one forward pass over the image mirror padded by (a)'s margin: what (a) must equal exactly;
- (b) MONAI's ``sliding_window_inference`` with its defaults (roi 256, overlap 0.25, constant padding, blend mode
  "constant"), ``--sw-batch-size`` windows per pass;
- (c) one forward pass over the whole image: the compute floor, and the reference for label agreement;
- on the CPU, where (a) runs the network channels-last (``memory_format="auto"``) and so do (a-ref), (c) and
  (d-ref): (b-cl) the sliding window with channels-last weights too, and (c-nchw) the whole pass in the default
  contiguous layout, so that the table shows what the layout gives and what the tiling gives;
- optional: (a256) ``OverlapTileInferer`` with fixed 256 tiles (``--fixed-roi``, the old default), and (d)/(d-ref)
  automatic overlap-tile / one pass with a valid-mode ``UNet`` with the same weights (``--valid``).

For each: wall time (median of ``--repeats`` runs, after a warm-up run of every method on a quarter-size crop,
on CUDA on the whole image), peak
memory (CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before; CPU: peak resident set size above
the size before the call, sampled every 2 ms from ``/proc/self/statm`` in a thread, with glibc's ``mallopt`` set so
freed tensors go back to the OS), agreement with (c) over the whole image and over its interior (pixels farther than
(a)'s margin from the border, where mirror vs zero padding of the image cannot matter) and with the method's exact
reference (label agreement %, max abs softmax-probability and logit difference), and time ratios to (c) and to the
exact reference.

Weights are random (He initialisation, seed 0) unless ``--ckpt`` gives a state dict of a ``UNet`` with these
``--features`` (the valid-mode UNet has the same parameter shapes and gets the same weights): timing does not
depend on the weights, and random weights already show where tiling changes the result.

Usage::

    python benchmarks/inference_benchmark.py [--size 1024 4096] [--repeats 3 1] [--memory-budget-mb 6144]
        [--features 16 32 64 128 256] [--device cpu|cuda] [--roi 256] [--sw-batch-size 4] [--fixed-roi] [--valid]
        [--ckpt model.pt] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from scripts.data import NUM_CLASSES, make_sample
from scripts.data.io import read_image
from scripts.inferers import OverlapTileInferer, channels_last_weights, default_memory_budget_mb, resolve_memory_format
from scripts.networks import UNet
from scripts.transforms import mirror_pad



def drosophila_raw_dir() -> str:
    """stack1/raw of the Drosophila dataset: ``$DROSOPHILA_VNC_DIR`` or ``<repo>/../shared/datasets/drosophila-vnc``."""
    root = os.environ.get("DROSOPHILA_VNC_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets", "drosophila-vnc"
    )
    return os.path.normpath(os.path.join(root, "stack1", "raw"))


def return_freed_memory_to_os() -> bool:
    """Make glibc serve every allocation >= 128 KiB with mmap and unmap it on free (a fixed threshold, instead of
    the default one that grows after large frees and then keeps freed tensors in the heap), so that resident-set
    deltas measure each call on its own. Returns False where this is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 128 * 1024)) and bool(libc.mallopt(m_trim_threshold, 128 * 1024))


def load_image(size: int) -> tuple[torch.Tensor, str]:
    """A (1, 1, size, size) float32 image in [0, 1] and a description of where it came from."""
    raw_dir = drosophila_raw_dir()
    files = sorted(glob.glob(os.path.join(raw_dir, "*.tif")))
    if files:
        raw = read_image(files[0]).astype(np.float32)
        source = f"Drosophila ssTEM section {files[0]} ({raw.shape[0]}x{raw.shape[1]})"
        if raw.shape[0] < size or raw.shape[1] < size:  # mirror it out to the requested size
            raw = np.pad(raw, ((0, max(size - raw.shape[0], 0)), (0, max(size - raw.shape[1], 0))), mode="symmetric")
            source += ", mirror-extended"
        raw = raw[:size, :size]
    else:
        raw = make_sample(size, seed=0)[0].astype(np.float32)
        source = f"synthetic EM-like image (scripts.data.make_sample, seed 0; {raw_dir} not found)"
    return torch.from_numpy(raw / 255.0)[None, None], source


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator on GPU, sampled resident set size on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._max = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, self._rss()) - self._base


def run(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple[torch.Tensor, float, int]:
    """Run ``fn`` ``repeats`` times; return its output, the median wall time (s) and the largest peak memory (B)."""
    times, peaks = [], []
    out = None
    for _ in range(repeats):
        out = None  # free the previous output before measuring memory again
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks.append(mem.peak)
    return out.float().cpu(), statistics.median(times), max(peaks)  # type: ignore[union-attr]


def agreement(pred: torch.Tensor, ref: torch.Tensor, border: int = 0) -> tuple[float, float]:
    """(label agreement in %, max abs softmax-probability difference) of two (1, C, H, W) logit maps, leaving out
    ``border`` pixels on each side."""
    if border:
        pred, ref = pred[:, :, border:-border, border:-border], ref[:, :, border:-border, border:-border]
    labels = (pred.argmax(1) == ref.argmax(1)).double().mean().item() * 100
    return labels, (pred.softmax(1) - ref.softmax(1)).abs().max().item()


def bench_size(args, size: int, repeats: int, same, valid, device: torch.device, malloc_note: str) -> dict:
    """All methods on one ``size`` x ``size`` image; returns the header and the result rows."""
    image, source = load_image(size)
    image = image.to(device)
    tiler = OverlapTileInferer(memory_budget_mb=args.memory_budget_mb)  # automatic tiles, memory_format "auto"
    layout = resolve_memory_format(tiler.memory_format, same, device, 2)  # what (a) runs in: the references too

    def in_layout(fn: Callable[[torch.Tensor], torch.Tensor], net: torch.nn.Module, cl: bool = layout == "channels_last"):
        def call(x: torch.Tensor) -> torch.Tensor:
            if not cl:
                return fn(x)
            with channels_last_weights(net):
                return fn(x)

        return call

    geo_same = tiler.geometry(same, image.shape[2:], in_channels=1, device=device)
    m = geo_same.pad[0]  # the same-mode margin, rounded to the pooling grid
    fixed = OverlapTileInferer(roi_size=args.roi, sw_batch_size=args.sw_batch_size)

    def mirror_whole(x: torch.Tensor) -> torch.Tensor:  # (a-ref): the whole image mirror padded by m, cropped back
        h, w = x.shape[2:]
        d = same.size_divisor
        padded = mirror_pad(x, [(m, -(-(s + 2 * m) // d) * d - s - m) for s in (h, w)])
        return same(padded)[:, :, m : m + h, m : m + w]

    def valid_whole(x: torch.Tensor) -> torch.Tensor:  # (d-ref): one valid-mode pass over the mirror-padded image
        h, w = x.shape[2:]
        padded = mirror_pad(x, [(valid.margin, valid.valid_input_size(s) - s - valid.margin) for s in (h, w)])
        return valid(padded)[:, :, :h, :w]

    def sliding(x: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            x, args.roi, args.sw_batch_size, same, overlap=0.25, mode="constant", padding_mode="constant"
        )

    methods = {
        "(a) overlap-tile auto, same UNet": lambda x: tiler(x, same),
        "(a-ref) whole mirror-padded": in_layout(mirror_whole, same),
        "(b) MONAI sliding window": sliding,
        "(c) whole image, same UNet": in_layout(lambda x: same(x), same),
    }
    if layout == "channels_last":  # the same methods with the other layout, so that no gain hides in the layout
        methods["(b-cl) sliding window, channels-last"] = in_layout(sliding, same, True)
        methods["(c-nchw) whole image, contiguous"] = lambda x: same(x)
    exact_ref = {"(a) overlap-tile auto, same UNet": "(a-ref) whole mirror-padded"}
    if args.fixed_roi:
        methods[f"(a{args.roi}) overlap-tile roi {args.roi}"] = lambda x: fixed(x, same)
        exact_ref[f"(a{args.roi}) overlap-tile roi {args.roi}"] = "(a-ref) whole mirror-padded"
    if args.valid:
        methods["(d) overlap-tile auto, valid UNet"] = lambda x: tiler(x, valid)
        methods["(d-ref) whole valid, mirrored"] = in_layout(valid_whole, valid)
        exact_ref["(d) overlap-tile auto, valid UNet"] = "(d-ref) whole valid, mirrored"

    # warm-up: on the CPU a quarter-size crop (kernels, thread pools, the tiler's probe pass); on CUDA the whole image,
    # so that no method pays the caching allocator's first full-size allocations or cuDNN's first plans (the first
    # H200 run warmed up on the crop, and method (a), timed first, carried those costs: 0.034 s vs 0.017 s)
    side = size if device.type == "cuda" else max(size // 4 // 16 * 16, 16)
    crop = image[:, :, :side, :side]
    results = {}
    with torch.no_grad():
        for fn in methods.values():  # warm-up: allocator, kernels, thread pools (and the tiler's probe pass)
            fn(crop)
        tiler.geometry(same, image.shape[2:], in_channels=1, device=device)
        for name, fn in methods.items():
            out, seconds, peak = run(lambda: fn(image), device, repeats)
            results[name] = {"output": out, "seconds": seconds, "peak_bytes": peak}

    floor = results["(c) whole image, same UNet"]
    rows = []
    for name, r in results.items():
        labels, prob = agreement(r["output"], floor["output"])
        labels_in, prob_in = agreement(r["output"], floor["output"], border=m)
        row = {
            "method": name,
            "seconds": r["seconds"],
            "time_vs_floor": r["seconds"] / floor["seconds"],
            "peak_mib": r["peak_bytes"] / 2**20,
            "memory_vs_floor": r["peak_bytes"] / max(floor["peak_bytes"], 1),
            "label_agreement_vs_c_pct": labels,
            "max_prob_diff_vs_c": prob,
            "label_agreement_vs_c_interior_pct": labels_in,
            "max_prob_diff_vs_c_interior": prob_in,
        }
        if name in exact_ref:
            ref = results[exact_ref[name]]
            labels, prob = agreement(r["output"], ref["output"])
            row.update(
                exact_ref=exact_ref[name],
                time_vs_ref=r["seconds"] / ref["seconds"],
                label_agreement_vs_ref_pct=labels,
                max_prob_diff_vs_ref=prob,
                max_logit_diff_vs_ref=(r["output"] - ref["output"]).abs().max().item(),
            )
        rows.append(row)
    budget = tiler.memory_budget_mb if tiler.memory_budget_mb is not None else default_memory_budget_mb(device)
    header = {
        "image": source,
        "size": size,
        "repeats": repeats,
        "interior": f"pixels farther than {m} px from the image border",
        "memory_budget_mib": budget,
        "layout": f"{layout} (OverlapTileInferer memory_format='auto'; (a-ref), (c), (d-ref) in the same layout; (b) "
        "as MONAI runs the network it is given, contiguous)",
        "overlap_tile_auto_same": {
            k: geo_same.as_dict()[k] for k in ("pad", "tile_in", "stride", "n_tiles", "activation_bytes")
        },
    }
    if args.valid:
        geo_valid = tiler.geometry(valid, image.shape[2:], in_channels=1, device=device)
        header["overlap_tile_auto_valid"] = {k: geo_valid.as_dict()[k] for k in ("pad", "tile_in", "stride", "n_tiles")}
    return {**header, "results": rows}


def print_size(block: dict) -> None:
    for key, value in block.items():
        if key != "results":
            print(f"{key:>24}: {value}")
    print(
        f"{'method':<38} {'time s':>7} {'x floor':>7} {'x ref':>6} {'peak MiB':>8} {'labels=c %':>10} "
        f"{'interior %':>10} {'labels=ref %':>12} {'maxdlogit':>9}"
    )
    for row in block["results"]:
        ref = (
            f"{row['time_vs_ref']:>6.2f}" if "exact_ref" in row else f"{'':>6}"
        )
        tail = (
            f"{row['label_agreement_vs_ref_pct']:>12.4f} {row['max_logit_diff_vs_ref']:>9.1e}" if "exact_ref" in row else ""
        )
        print(
            f"{row['method']:<38} {row['seconds']:>7.2f} {row['time_vs_floor']:>7.2f} {ref} {row['peak_mib']:>8.1f} "
            f"{row['label_agreement_vs_c_pct']:>10.4f} {row['label_agreement_vs_c_interior_pct']:>10.4f} " + tail
        )
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs="+", default=[1024], help="image side(s) in pixels (default 1024)")
    parser.add_argument("--repeats", type=int, nargs="+", default=[3],
                        help="timed runs per method, one value for all sizes or one per size; the median is reported")
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-budget-mb", type=float, default=None,
                        help="OverlapTileInferer's memory budget for the automatic tiles (default: its device default)")
    parser.add_argument("--roi", type=int, default=256, help="sliding-window size (and the fixed tile, --fixed-roi)")
    parser.add_argument("--sw-batch-size", type=int, default=4, help="windows per forward pass, (b) and fixed tiles")
    parser.add_argument("--fixed-roi", action="store_true", help="also overlap-tile with fixed --roi tiles (old default)")
    parser.add_argument("--valid", action="store_true", help="also a valid-padding UNet: (d) and (d-ref)")
    parser.add_argument("--ckpt", help="state dict of a UNet with these --features (default: random weights)")
    parser.add_argument("--batch-norm", action="store_true", help="UNet with batch norm (to match --ckpt)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    repeats = args.repeats * len(args.size) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.size) or min(repeats) < 1 or min(args.size) < 32:
        parser.error("--repeats must be >= 1 (one value, or one per --size) and --size >= 32")
    device = torch.device(args.device)
    malloc_note = "" if device.type == "cuda" or return_freed_memory_to_os() else " (mallopt unavailable: not glibc)"

    nets = {}
    for padding in ("same", "valid"):
        torch.manual_seed(0)
        nets[padding] = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=NUM_CLASSES,
            features=args.features,
            padding=padding,
            batch_norm=args.batch_norm,
        )
    if args.ckpt:
        nets["same"].load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))
        weights = f"checkpoint {args.ckpt}"
    else:
        weights = "random (He init, seed 0)"
    nets["valid"].load_state_dict(nets["same"].state_dict())
    same, valid = (nets[p].to(device).eval() for p in ("same", "valid"))

    memory_kind = (
        "torch.cuda.max_memory_allocated above the allocation before the call"
        if device.type == "cuda"
        else "peak RSS above RSS before the call, sampled every 2 ms" + malloc_note
    )
    header = {
        "device": str(device) + ("" if device.type == "cuda" else f" ({torch.get_num_threads()} torch threads)"),
        "weights": weights,
        "features": args.features,
        "roi": args.roi,
        "sw_batch_size": args.sw_batch_size,
        "memory": memory_kind,
    }
    for key, value in header.items():
        print(f"{key:>24}: {value}")
    print()
    sizes = []
    for size, rep in zip(args.size, repeats):
        block = bench_size(args, size, rep, same, valid, device, malloc_note)
        print_size(block)
        sizes.append(block)
        if args.json:  # after every size, so a long run leaves what it measured
            with open(args.json, "w") as f:
                json.dump({**header, "sizes": sizes}, f, indent=2)
    print("x floor: time / (c), the plain whole-image pass; x ref: time / the method's exact reference (a-ref), one")
    print("pass over the whole mirror-padded image; labels=c %: label agreement with (c), interior: on pixels farther")
    print("than the margin from the border; labels=ref %, maxdlogit: vs the exact reference.")


if __name__ == "__main__":
    main()
