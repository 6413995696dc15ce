"""Command line of the exports.

Usage (from anywhere, the ``scripts`` package being installed)::

    python -m scripts.export bioimageio --out dist/bioimageio --image path/to/section.tif \\
        [--model bundle/models/model.pt] [--zip dist/cellseg_bioimageio.zip] [--test-size 256] [--overwrite]

It prints the written ``rdf.yaml`` (and zip) and exits with status 1 and a one-line message naming the fix when the
model, the image or the output folder does not fit. Check the package with ``bioimageio test <folder>`` in the
environment ``tools/bioimageio_env.sh`` makes.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bioimageio", help="a BioImage Model Zoo model package (format 0.5)")
    b.add_argument("--out", required=True, help="package folder (new or empty; --overwrite replaces a package)")
    b.add_argument(
        "--image",
        required=True,
        help="a section the test tensors and cover are made from (only into the package), e.g. "
        "drosophila-vnc/stack1/raw/00.tif",
    )
    b.add_argument(
        "--model",
        default=None,
        help="model.pt with model_info (default: the shipped " "bundle/models/pretrained/model.pt)",
    )
    b.add_argument("--zip", default=None, help="also write the package as this zip (for Fiji/deepImageJ, QuPath)")
    b.add_argument(
        "--test-size",
        type=int,
        default=256,
        help="side of the test output kept after the halo (default 256; the input adds the halo)",
    )
    b.add_argument("--name", default=None, help="package name (default: the shipped model's)")
    b.add_argument("--author", action="append", default=None, help="an author (repeat; default: metadata.json's)")
    b.add_argument("--license", default=None, help="SPDX licence of the weights (default CC-BY-NC-SA-3.0)")
    b.add_argument("--overwrite", action="store_true", help="replace an earlier package in --out and --zip")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from scripts.errors import UserError
    from scripts.export.bioimageio import LICENSE, export_bioimageio

    extra = {k: v for k, v in (("name", args.name), ("license", args.license)) if v is not None}
    try:
        rdf = export_bioimageio(
            args.out,
            args.image,
            model=args.model,
            test_size=args.test_size,
            authors=args.author,
            license=extra.pop("license", LICENSE),
            zip_path=args.zip,
            overwrite=args.overwrite,
            command="python -m scripts.export " + " ".join(shlex.quote(a) for a in argv),
            **extra,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(rdf)
    if args.zip:
        print(args.zip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
