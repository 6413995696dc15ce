"""Checkpoint files on disk: crash-safe writes and finding the newest resumable checkpoint.

- :func:`atomic_save`: ``torch.save`` into a temporary file in the target folder, flushed and fsynced, then
  ``os.replace`` d over the target (and the folder fsynced): a kill -9 at any instant leaves either the old or the new
  file, never a truncated one.
- :func:`non_finite_entries`: the tensors of a checkpoint that hold NaN or infinity (such a checkpoint is not saved).
- :func:`latest_checkpoint`: the newest ``checkpoint_epoch=N.pt``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from scripts.errors import RunFolderError

__all__ = ["TMP_SUFFIX", "NoCheckpointError", "atomic_save", "latest_checkpoint", "non_finite_entries"]

#: Suffix of the temporary files :func:`atomic_save` writes (``.<name>.<pid>.tmp``); left over only by a kill.
TMP_SUFFIX = ".tmp"


class NoCheckpointError(RunFolderError, FileNotFoundError):
    """``--resume True`` but the run folder holds no resumable checkpoint."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``torch.save(obj, path)`` that never leaves a partial ``path``: temporary file, flush, fsync, ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh, **kwargs)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def non_finite_entries(obj: Any, prefix: str = "") -> list[str]:
    """Names (``a/b/c``) of the floating-point tensors in a nested checkpoint dict that hold NaN or infinity."""
    if isinstance(obj, torch.Tensor):
        return [prefix or "<tensor>"] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, Mapping):
        return [n for k, v in obj.items() for n in non_finite_entries(v, f"{prefix}/{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in non_finite_entries(v, f"{prefix}/{i}" if prefix else str(i))]
    return []


def latest_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> str:
    """Path of the newest resumable checkpoint (``<prefix>_epoch=N.pt``) in ``ckpt_dir``.

    Raises:
        NoCheckpointError: when there is none, saying how one is made (a ``FileNotFoundError``).
    """
    pattern = re.compile(rf"^{re.escape(prefix)}_epoch=(\d+)\.pt$")
    found = sorted(
        ((int(m.group(1)), p) for p in Path(ckpt_dir).glob(f"{prefix}_epoch=*.pt") if (m := pattern.match(p.name))),
        key=lambda t: t[0],
    )
    if not found:
        raise NoCheckpointError(
            f"No resumable checkpoint '{prefix}_epoch=N.pt' in {ckpt_dir} (one is written at the end of every epoch); "
            "run training first, point `resume_ckpt` at a checkpoint file, or start over with --overwrite True."
        )
    return str(found[-1][1])
