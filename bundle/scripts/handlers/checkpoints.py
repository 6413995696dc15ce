"""Finding checkpoints to resume from."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["latest_checkpoint"]


def latest_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> str:
    """Path of the newest resumable checkpoint (``<prefix>_epoch=N.pt``) in ``ckpt_dir``.

    Raises:
        FileNotFoundError: when there is none, saying how one is made.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}_epoch=(\d+)\.pt$")
    found = sorted(
        ((int(m.group(1)), p) for p in Path(ckpt_dir).glob(f"{prefix}_epoch=*.pt") if (m := pattern.match(p.name))),
        key=lambda t: t[0],
    )
    if not found:
        raise FileNotFoundError(
            f"No resumable checkpoint '{prefix}_epoch=N.pt' in {ckpt_dir}. Training writes one at the end of every "
            "epoch; run training first, or point `resume_ckpt` at a checkpoint file."
        )
    return str(found[-1][1])
