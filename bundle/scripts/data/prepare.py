"""Command line for dataset preparation and checking.

Usage (from anywhere, the ``scripts`` package being installed)::

    python -m scripts.data.prepare drosophila --src ../shared/datasets/drosophila-vnc --out data/drosophila
    python -m scripts.data.prepare folders --images my/images --labels my/labels --out data/mine \\
        --class-map "0:0,128:1,255:2" [--val-fraction 0.2 --test-fraction 0.2 --seed 0 --crop 256]
    python -m scripts.data.prepare folders --images train-volume.tif --labels train-labels.tif --out data/em \
        --class-map "0:1,255:0"    # a stack and its label stack, split by section
    python -m scripts.data.prepare synthetic --out data/synthetic [--num-train 16 --num-val 4 --num-test 4]
    python -m scripts.data.prepare check --datalist data/drosophila/datalist_fold0.json --num-classes 5

Each command prints what it wrote (or the check's summary) and exits with status 1 and a message naming the
file and the fix when the input is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .classes import NUM_CLASSES
from .drosophila import prepare_drosophila
from .folders import prepare_folders
from .integrity import check_datalist
from .synthetic import generate_dataset

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.data.prepare", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("drosophila", help="prepare the Drosophila ssTEM dataset (crops, sections, 5 folds)")
    d.add_argument("--src", required=True, help="dataset folder holding stack1/ (and stack2/)")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--crop-size", type=int, default=256, help="crop side (default 256)")
    d.add_argument("--num-folds", type=int, default=5, help="cross-validation folds (default 5)")

    f = sub.add_parser("folders", help="prepare your own images/ and labels/ folders, or a stack and its label stack")
    f.add_argument(
        "--images",
        required=True,
        help="folder of 2D images or stacks (PNG/JPEG/TIFF/NIfTI, grey or RGB), or one stack file",
    )
    f.add_argument(
        "--labels",
        required=True,
        help="folder of label images with the same file stems, or the label stack of --images",
    )
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--class-map", required=True, help="label value -> class index, e.g. '0:0,128:1,255:2'")
    f.add_argument("--val-fraction", type=float, default=0.2)
    f.add_argument("--test-fraction", type=float, default=0.2)
    f.add_argument("--seed", type=int, default=0, help="split seed")
    f.add_argument("--crop", type=int, default=0, help="crop side; 0 keeps whole images (default)")
    f.add_argument("--class-names", default=None, help="comma-separated class names for classes.json")

    s = sub.add_parser("synthetic", help="generate the synthetic EM-like dataset")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--num-train", type=int, default=16)
    s.add_argument("--num-val", type=int, default=4)
    s.add_argument("--num-test", type=int, default=4)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("check", help="check a datalist before training")
    c.add_argument("--datalist", required=True, help="datalist JSON file")
    c.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    c.add_argument("--in-channels", type=int, default=None, help="expected image channels (1 grey, 3 RGB)")
    c.add_argument("--keys", nargs="+", default=["training", "validation"], help="datalist lists to check")
    c.add_argument("--no-labels", action="store_true", help="items need no label (e.g. inference lists)")
    c.add_argument(
        "--config",
        nargs="+",
        default=[str(Path(__file__).resolve().parents[2] / "configs" / "train.json")],
        help="training config(s) whose train#deterministic_transforms read every item as training will "
        "(default: the bundle's train.json)",
    )
    c.add_argument("--no-loader", action="store_true", help="skip reading the items through the training transforms")
    return p


def _training_transforms(config_files: Sequence[str]):
    from monai.bundle import ConfigParser

    return ConfigParser(ConfigParser.load_config_files(list(config_files))).get_parsed_content(
        "train#deterministic_transforms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "drosophila":
            paths = prepare_drosophila(args.src, args.out, crop_size=args.crop_size, num_folds=args.num_folds)
            print("\n".join(str(p) for p in paths))
        elif args.command == "folders":
            names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
            print(
                prepare_folders(
                    args.images,
                    args.labels,
                    args.out,
                    args.class_map,
                    val_fraction=args.val_fraction,
                    test_fraction=args.test_fraction,
                    seed=args.seed,
                    crop=args.crop,
                    class_names=names,
                )
            )
        elif args.command == "synthetic":
            print(generate_dataset(args.out, args.num_train, args.num_val, args.num_test, args.size, args.seed))
        else:
            summary = check_datalist(
                args.datalist,
                args.num_classes,
                args.in_channels,
                tuple(args.keys),
                require_labels=not args.no_labels,
                transform=None if args.no_loader else _training_transforms(args.config),
            )
            print(json.dumps(summary, indent=1))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from scripts.errors import install_excepthook

    install_excepthook()
    sys.exit(main())
