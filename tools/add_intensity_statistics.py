"""Record the training images' intensity statistics in a ``model.pt`` saved without them (by v0.8.0 or earlier), so
that ``intensity_rule auto`` maps 16-bit and float images onto them (``scripts.data.intensity``) instead of keeping
the rule of those versions.

Usage (from the repository root)::

    python tools/add_intensity_statistics.py --model bundle/models/pretrained/model.pt \\
        --datalist bundle/data/drosophila/datalist_fold0.json --key training_sections --overwrite

``--datalist``/``--key``: the images the model was trained on (its training list). The statistics are computed as
``train.json`` computes them (``scripts.data.training_statistics``, scaled by the model's ``intensity_max``) and
added to the file's ``model_info``; every other entry, the weights included, is written back unchanged (checked
tensor by tensor after writing). The result goes to ``--out``, or replaces ``--model`` with ``--overwrite``; the file
is written atomically. Prints the statistics and the new file's sha256. Exit status 1 with one message on a problem.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))  # this repository's bundle package

__all__ = ["add_intensity_statistics", "main"]


def _same(a, b) -> bool:
    """Whether two checkpoint entries are equal, tensors by ``torch.equal`` (dtype and shape included)."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def add_intensity_statistics(model: Path, datalist: Path, key: str, out: Path) -> dict:
    """Write ``model`` with the statistics of ``datalist[key]``'s images in its ``model_info`` to ``out``; return them.

    Raises:
        ValueError: ``model`` has no ``model_info``, or the file written differs from ``model`` elsewhere.
    """
    import torch
    from monai.data import load_decathlon_datalist

    from scripts.checkpoint_files import atomic_save
    from scripts.data.intensity import STATISTICS_KEY, training_statistics
    from scripts.networks.model_info import MODEL_INFO_KEY

    checkpoint = torch.load(model, map_location="cpu", weights_only=True)
    info = checkpoint.get(MODEL_INFO_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(info, dict):
        raise ValueError(f"{model} has no {MODEL_INFO_KEY!r} entry (a bare state dict): nothing to add the statistics to.")
    items = load_decathlon_datalist(str(datalist), data_list_key=key)
    stats = training_statistics(items, float(info.get("intensity_max") or 255))
    updated = {**checkpoint, MODEL_INFO_KEY: {**info, STATISTICS_KEY: stats}}
    atomic_save(updated, out)
    written = torch.load(out, map_location="cpu", weights_only=True)
    if not _same(written, updated) or not _same({k: v for k, v in written.items() if k != MODEL_INFO_KEY},
                                                {k: v for k, v in checkpoint.items() if k != MODEL_INFO_KEY}):
        raise ValueError(f"{out} does not hold {model}'s entries unchanged after writing; it is not to be used.")
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="the model.pt to read")
    p.add_argument("--datalist", type=Path, required=True, help="the datalist the model was trained with")
    p.add_argument("--key", default="training", help="its training list (default: training)")
    p.add_argument("--out", type=Path, help="where to write (default: --model itself, with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (or --model)")
    args = p.parse_args(argv)
    out = args.out or args.model
    try:
        if not args.model.is_file():
            raise FileNotFoundError(f"--model {args.model}: no such file.")
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it (or --out another file).")
        stats = add_intensity_statistics(args.model, args.datalist, args.key, out)
    except (OSError, ValueError, KeyError) as e:
        print(f"add_intensity_statistics: {e}", file=sys.stderr)
        return 1
    print(f"intensity_statistics: {stats}")
    print(f"{out}: sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
