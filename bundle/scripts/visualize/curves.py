"""Training curves: training loss and validation metrics per epoch, from TensorBoard event files or a CSV.

MONAI's ``TensorBoardStatsHandler`` writes the trainer's loss every *iteration* (tag ``tag_name``, this bundle:
``train_loss``; MONAI's default: ``Loss``; step = iteration) and the evaluator's metrics every *epoch* (tag = metric
name, e.g. ``val_mean_iou``; step = trainer epoch). Per-iteration tags are averaged per epoch, with the epoch
length (iterations per epoch) given or inferred as ``last iteration / last epoch`` of the epoch-level tags (exact
when the last epoch was validated, e.g. ``val_interval=1``); the raw per-iteration values are drawn faintly
behind the mean, at fractional epochs. One panel per tag.

CLI::

    python -m scripts.visualize.curves --logdir bundle/logs --out bundle/logs/curves.png
    python -m scripts.visualize.curves --csv history.csv --out curves.png   # columns: epoch,<tag>,<tag>...
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch.distributed as dist

__all__ = ["load_tensorboard_scalars", "load_csv_scalars", "plot_training_curves", "write_training_curves", "main"]

logger = logging.getLogger(__name__)

#: Tags that are logged per iteration (MONAI's default loss tag and this bundle's).
ITERATION_TAGS: tuple[str, ...] = ("train_loss", "Loss")

Scalars = dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values), sorted by step


def _sorted(series: dict[str, dict[int, float]]) -> Scalars:
    out: Scalars = {}
    for tag, points in series.items():
        steps = np.array(sorted(points), dtype=np.int64)
        out[tag] = (steps, np.array([points[s] for s in steps], dtype=np.float64))
    return out


def load_tensorboard_scalars(logdir: str | os.PathLike) -> Scalars:
    """Read every scalar of every TensorBoard event file under ``logdir`` (recursively).

    Files are read one by one (a trainer and an evaluator writing to the same folder make two files) and merged
    per tag; for a step logged twice, the later file (by modification time) wins.

    Raises:
        FileNotFoundError: no event file under ``logdir``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(logdir).rglob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, str(p)))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file (events.out.tfevents.*) under {logdir}.")
    series: dict[str, dict[int, float]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, {}).update({e.step: float(e.value) for e in acc.Scalars(tag)})
    return _sorted(series)


def load_csv_scalars(path: str | os.PathLike) -> Scalars:
    """Read a CSV whose first column is the step (e.g. ``epoch``) and the others one series each (empty = none).

    Raises:
        ValueError: no data column or no row.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError(f"{path}: expected a header 'step,<tag>,...' and at least one row.")
    header = rows[0]
    series: dict[str, dict[int, float]] = {tag: {} for tag in header[1:]}
    for row in rows[1:]:
        for tag, value in zip(header[1:], row[1:]):
            if value.strip():
                series[tag][int(float(row[0]))] = float(value)
    return _sorted({t: s for t, s in series.items() if s})


def plot_training_curves(
    scalars: Scalars,
    out: str | os.PathLike,
    iteration_tags: Sequence[str] = ITERATION_TAGS,
    epoch_length: int | None = None,
    tags: Sequence[str] | None = None,
    title: str = "Training curves",
) -> Path:
    """Plot one panel per tag against epochs and save a PNG (matplotlib, Agg backend).

    Args:
        scalars: ``{tag: (steps, values)}`` from :func:`load_tensorboard_scalars` / :func:`load_csv_scalars`.
        out: PNG file to write (folders are created).
        iteration_tags: tags logged per iteration (averaged per epoch); all others are per epoch.
        epoch_length: iterations per epoch; ``None`` infers it (module docstring), or plots per-iteration tags
            against iterations when there is no epoch-level tag.
        tags: the tags to plot, in order; ``None``: all, per-iteration tags first, then alphabetical.
        title: figure title.

    Returns:
        ``Path(out)``.

    Raises:
        ValueError: no scalar to plot, an unknown tag, or ``epoch_length < 1``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if epoch_length is not None and epoch_length < 1:
        raise ValueError(f"epoch_length must be >= 1, got {epoch_length}.")
    if tags is None:
        tags = sorted(scalars, key=lambda t: (t not in iteration_tags, t))
    unknown = [t for t in tags if t not in scalars]
    if unknown or not tags:
        raise ValueError(f"no scalars {unknown or ''} to plot; available tags: {sorted(scalars)}.")
    epoch_steps = [int(scalars[t][0].max()) for t in scalars if t not in iteration_tags]
    iteration_steps = [int(scalars[t][0].max()) for t in scalars if t in iteration_tags]
    if epoch_length is None and epoch_steps and iteration_steps:
        epoch_length = max(1, round(max(iteration_steps) / max(epoch_steps)))
        logger.info("curves: %d iterations per epoch (inferred)", epoch_length)

    ncols = min(3, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.2 * nrows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        steps, values = scalars[tag]
        if tag in iteration_tags and epoch_length is not None:
            epochs = (steps - 1) // epoch_length + 1  # iteration 1..L -> epoch 1
            ax.plot(steps / epoch_length, values, color="tab:blue", alpha=0.25, linewidth=0.8, label="per iteration")
            means = [(e, values[epochs == e].mean()) for e in np.unique(epochs)]
            ax.plot(*zip(*means), "o-", color="tab:blue", markersize=3, label="epoch mean")
            ax.legend(fontsize=7)
            ax.set_xlabel("epoch")
        else:
            ax.plot(steps, values, "o-", color="tab:blue" if tag in iteration_tags else "tab:orange", markersize=3)
            ax.set_xlabel("iteration" if tag in iteration_tags else "epoch")
        ax.set_title(tag)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(tags) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_training_curves(
    logdir: str | os.PathLike, out: str | os.PathLike, flush: Sequence[object] = (), title: str = "Training curves"
) -> Path | None:
    """After training: flush the TensorBoard writers, then plot every scalar under ``logdir`` to ``out`` (PNG).

    Meant for a bundle's ``finalize`` list, e.g. ``"$scripts.visualize.curves.write_training_curves(@log_dir,
    @log_dir + '/curves.png', @train#rank0_handlers + @validate#rank0_handlers)"``. In a distributed run only global
    rank 0 (the one that writes the event files) draws the picture; the others return ``None``.

    Args:
        logdir: the TensorBoard log folder of the run.
        out: PNG file to write.
        flush: handlers (or writers); those with a ``flush()`` (SummaryWriter) or a ``_writer`` attribute (MONAI's
            ``TensorBoardStatsHandler``) are flushed first, so that the last epoch is in the picture.
        title: figure title.

    Returns:
        ``Path(out)``, or ``None`` (with a warning, training is not failed for a picture) when there is nothing to
        plot.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return None
    for h in flush:
        writer = getattr(h, "_writer", h)
        if callable(getattr(writer, "flush", None)):
            writer.flush()
    try:
        scalars = load_tensorboard_scalars(logdir)
        return plot_training_curves(scalars, out, title=title)
    except (FileNotFoundError, ValueError) as e:
        logger.warning("no training curves written: %s", e)
        return None


def main(argv: Sequence[str] | None = None) -> Path:
    """CLI: ``python -m scripts.visualize.curves --logdir DIR --out FILE.png`` (or ``--csv FILE``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--logdir", help="folder with TensorBoard event files (searched recursively)")
    src.add_argument("--csv", help="CSV: first column the epoch, then one column per series")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--epoch-length", type=int, default=None, help="iterations per epoch (default: inferred)")
    parser.add_argument("--iteration-tags", nargs="*", default=list(ITERATION_TAGS), help="per-iteration tags")
    parser.add_argument("--tags", nargs="*", default=None, help="tags to plot (default: all)")
    parser.add_argument("--title", default="Training curves")
    args = parser.parse_args(argv)
    scalars = load_tensorboard_scalars(args.logdir) if args.logdir else load_csv_scalars(args.csv)
    out = plot_training_curves(scalars, args.out, args.iteration_tags, args.epoch_length, args.tags, args.title)
    print(out)
    return out


if __name__ == "__main__":
    from scripts.errors import install_excepthook

    install_excepthook()
    main()
