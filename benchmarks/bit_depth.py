"""Any bit depth, the same answer: label agreement of rescaled copies of 8-bit images with the 8-bit original, under
the ``auto`` intensity rule of v0.8.0 (a model without ``intensity_statistics``) and the current one (the model's
training statistics), through the bundle's inference workflow.

For every 8-bit image (the first ``--per-key`` images of each ``--keys`` list of ``--datalist``) it writes the
original (PNG, 8-bit; its central ``--crop`` x ``--crop`` pixels when given) and three copies of the same picture:

- ``x257``: uint16 TIFF, value x 257 (0..255 onto 0..65535);
- ``float01``: float32 TIFF, value / 255 (0..1);
- ``u16_1000_5000``: uint16 TIFF, 1000 + value x 4000 / 255, rounded (a camera's offset and range).

Then it runs ``inference.json`` in this process (``monai.bundle.ConfigWorkflow``, as ``python -m monai.bundle run
inference`` does; label maps only) twice on that folder: with ``--ckpt`` (which must record its statistics), and
with a copy of it whose ``model_info`` lacks them (the same weights: v0.8.0's rule). Reported per image and copy:
the rule each run applied (``inference_report.json``) and the fraction of pixels whose label equals the 8-bit
original's in the same run (the originals themselves are scaled as in training in both runs: checked).

``--synthetic N`` replaces the data by N synthetic EM-like images (:func:`scripts.data.make_sample`) and the model by a
randomly initialised network of ``--features`` whose statistics are those images' (a smoke run: the agreements of
random weights mean nothing).

Usage::

    python benchmarks/bit_depth.py --datalist /work/dros/datalist_fold0.json --keys testing_sections unlabelled \\
        --per-key 4 [--crop 256] [--ckpt bundle/models/pretrained/model.pt] [--work-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from scripts.data import read_image, training_statistics, write_png
from scripts.data.intensity import STATISTICS_KEY
from scripts.networks import MODEL_INFO_KEY, ModelInfo

REPO = Path(__file__).resolve().parents[1]
INFERENCE = REPO / "bundle" / "configs" / "inference.json"

#: the copies of an 8-bit image: name -> (function of the uint8 array, file suffix)
VARIANTS = {
    "x257": (lambda a: a.astype(np.uint16) * np.uint16(257), ".tif"),
    "float01": (lambda a: a.astype(np.float32) / np.float32(255), ".tif"),
    "u16_1000_5000": (lambda a: np.round(1000 + a.astype(np.float64) * 4000 / 255).astype(np.uint16), ".tif"),
}


def write_inputs(images: list[Path], folder: Path, crop: int | None = None) -> list[str]:
    """The originals (their central ``crop`` x ``crop`` pixels when given) and their copies in ``folder``; returns the
    images' names (file stems)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for path in images:
        image = read_image(path)
        if image.dtype != np.uint8 or image.ndim != 2:
            raise ValueError(f"{path}: a grey 8-bit image is needed (got {image.dtype}, shape {image.shape}).")
        if crop:
            y, x = ((n - crop) // 2 for n in image.shape)
            image = image[max(y, 0):max(y, 0) + crop, max(x, 0):max(x, 0) + crop]
        name = Path(path).stem
        write_png(folder / f"{name}.png", image)
        for variant, (convert, suffix) in VARIANTS.items():
            tifffile.imwrite(folder / f"{name}_{variant}{suffix}", convert(image))
        names.append(name)
    return names


def without_statistics(ckpt: Path, out: Path) -> Path:
    """A copy of ``ckpt`` whose ``model_info`` records no intensity statistics (a model of v0.8.0)."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    info = dict(checkpoint.get(MODEL_INFO_KEY) or {})
    if not info.get(STATISTICS_KEY):
        raise ValueError(f"{ckpt} records no {STATISTICS_KEY}: add them with tools/add_intensity_statistics.py.")
    info.pop(STATISTICS_KEY)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**checkpoint, MODEL_INFO_KEY: info}, out)
    return out


def run_inference(work: Path, ckpt: Path, input_dir: Path, output_dir: Path) -> dict:
    """One inference run (label maps only); returns output name -> the report's record."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(INFERENCE), meta_file=str(REPO / "bundle" / "configs" / "metadata.json"), logging_file=None,
        workflow_type="infer", bundle_root=str(work), ckpt_path=str(ckpt), input=str(input_dir),
        output_dir=str(output_dir), pictures=False, save_probabilities=False, progress=False,
    )
    workflow.initialize()
    workflow.run()
    report = json.loads((output_dir / "inference_report.json").read_text())
    bad = [f for f in report["files"] if f["status"] != "ok"]
    if bad:
        raise RuntimeError(f"inference failed on {[f['input'] for f in bad]}: {[f['reason'] for f in bad]}")
    return {f["output_name"]: f for f in report["files"]}


def synthetic_model(work: Path, images: list[Path], features: list[int]) -> Path:
    """A randomly initialised network of the config with the statistics of ``images`` (``--synthetic``)."""
    from monai.bundle import ConfigParser

    cfg = ConfigParser()
    cfg.read_config(str(INFERENCE))
    cfg["features"] = features
    cfg["ckpt_path"] = None
    torch.manual_seed(0)
    net = cfg.get_parsed_content("network_def")
    info = ModelInfo(net, cfg.get_parsed_content("class_names"), 255, [64, 64],
                     intensity_statistics=training_statistics(images, 255))
    out = work / "model_new" / "model.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "model_info": info.state_dict()}, out)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", type=Path, help="a datalist whose lists hold 8-bit grey images")
    parser.add_argument("--keys", nargs="+", default=["testing_sections"], help="its lists to take images from")
    parser.add_argument("--per-key", type=int, default=4, help="images per list (the first ones)")
    parser.add_argument("--crop", type=int, help="use the central crop x crop pixels of each image")
    parser.add_argument("--ckpt", type=Path, default=REPO / "bundle" / "models" / "pretrained" / "model.pt")
    parser.add_argument("--synthetic", type=int, default=0, help="N synthetic images and a random model instead")
    parser.add_argument("--size", type=int, default=64, help="--synthetic: image size")
    parser.add_argument("--features", type=int, nargs="+", default=[4, 8, 16], help="--synthetic: network widths")
    parser.add_argument("--work-dir", help="folder for the copies, models and outputs (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.getLogger("scripts").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        if args.synthetic:
            from scripts.data import make_sample

            images = [write_png(work / "sources" / f"synthetic_{i:02d}.png", make_sample(args.size, seed=i)[0])
                      for i in range(args.synthetic)]
            ckpt = synthetic_model(work, images, args.features)
        else:
            if args.datalist is None:
                parser.error("give --datalist (or --synthetic N)")
            from monai.data import load_decathlon_datalist

            images = [Path(item["image"]) for key in args.keys
                      for item in load_decathlon_datalist(str(args.datalist), data_list_key=key)[: args.per_key]]
            ckpt = args.ckpt
        names = write_inputs(images, work / "input", args.crop)
        old = without_statistics(ckpt, work / "model_v080" / "model.pt")
        runs = {rule: run_inference(work, model, work / "input", work / f"out_{rule}")
                for rule, model in (("v0.8.0", old), ("current", ckpt))}

        rows, originals_equal = [], True
        for name in names:
            ref = {rule: np.asarray(Image.open(work / f"out_{rule}" / f"{name}_seg.png")) for rule in runs}
            originals_equal &= bool(np.array_equal(ref["v0.8.0"], ref["current"]))
            for variant in VARIANTS:
                row = {"image": name, "variant": variant}
                for rule, records in runs.items():
                    seg = np.asarray(Image.open(work / f"out_{rule}" / f"{name}_{variant}_seg.png"))
                    row[rule] = {"rule": records[f"{name}_{variant}"]["intensity"]["rule"],
                                 "range": records[f"{name}_{variant}"]["intensity"]["range"],
                                 "agreement": float((seg == ref[rule]).mean())}
                rows.append(row)
            for rule, records in runs.items():
                if records[name]["intensity"]["rule"] != "model":
                    raise RuntimeError(f"{name}: the 8-bit original was not scaled as in training under {rule}")
        statistics = torch.load(ckpt, map_location="cpu", weights_only=True)[MODEL_INFO_KEY][STATISTICS_KEY]

    summary = {variant: {rule: {"min": min(r[rule]["agreement"] for r in rows if r["variant"] == variant),
                                "mean": float(np.mean([r[rule]["agreement"] for r in rows if r["variant"] == variant]))}
                         for rule in runs} for variant in VARIANTS}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu(s), torch {torch.__version__}, "
                   f"{'cuda' if torch.cuda.is_available() else f'cpu ({torch.get_num_threads()} torch threads)'}",
        "ckpt": str(ckpt),
        "intensity_statistics": statistics,
        "images": [str(p) for p in images],
        "crop": args.crop,
        "originals_identical_under_both_rules": originals_equal,
        "rows": rows,
        "summary": summary,
    }
    print(f"training statistics: {statistics}")
    print(f"{'image':<16} {'copy':<14} {'v0.8.0 rule':<12} {'agreement':>9}   {'current rule':<12} {'agreement':>9}")
    for r in rows:
        print(f"{r['image']:<16} {r['variant']:<14} {r['v0.8.0']['rule']:<12} {100 * r['v0.8.0']['agreement']:>8.2f}%"
              f"   {r['current']['rule']:<12} {100 * r['current']['agreement']:>8.2f}%")
    for variant, s in summary.items():
        print(f"{'min / mean':<16} {variant:<14} {'':<12} {100 * s['v0.8.0']['min']:>6.2f} / {100 * s['v0.8.0']['mean']:.2f}%"
              f"   {'':<12} {100 * s['current']['min']:>6.2f} / {100 * s['current']['mean']:.2f}%")
    print(f"8-bit originals identical under both rules: {originals_equal}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
