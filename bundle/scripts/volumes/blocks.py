"""Blocks of sections and their done-markers: what makes a volume run resumable.

A block is ``block_sections`` consecutive sections (the last one may be shorter); its output covers whole chunks
of the output arrays, so no two blocks ever write the same chunk. A block is done when its marker exists, and the
marker is written only after all of the block's data (atomically: a temporary name renamed into place), so:

- a killed run (``kill -9`` of the driver or of a worker) resumes with the unmarked blocks; a block that was being
  written when the run died has no marker and is written again in full -- a half-written block is never kept;
- a marked block is never written again: the driver plans only unmarked blocks, and a task that finds its block
  marked (a retried task whose first try had finished) returns without writing.

The state lives in a folder beside the output (``<output>.blocks``; for a label image ``<image>/labels/<name>``,
beside the image: ``<image>.labels-<name>.blocks``), outside the zarr hierarchy, which zarr v3 readers would
otherwise warn about: ``run.json`` (the run's id, also stored in the output, so that markers of another output are
never trusted), ``done/<block>.json`` (the markers: sections, worker, pid, seconds), ``blocks.log`` (one line per
block written -- ``start`` and ``done`` -- an audit of every write) and the lock of the run
(:mod:`scripts.locks`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from scripts.atomic import atomic_path

from .ome_zarr import label_image_parent

__all__ = ["BlockLedger", "block_ranges", "state_folder"]


def block_ranges(sections: int, block_sections: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each block of ``block_sections`` sections (the last one may be shorter)."""
    return [(s, min(s + block_sections, sections)) for s in range(0, sections, block_sections)]


def state_folder(output: str | os.PathLike) -> Path:
    """The folder of a run's markers, log and lock (see the module docstring)."""
    out = Path(output).absolute()
    image = label_image_parent(out)
    if image is not None:
        return image.with_name(f"{image.name}.labels-{out.name}.blocks")
    return out.with_name(out.name + ".blocks")


class BlockLedger:
    """The done-markers and write log of one output (see the module docstring).

    Args:
        folder: the state folder (:func:`state_folder`).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.done_dir = self.folder / "done"
        self.log_path = self.folder / "blocks.log"

    def _marker(self, block: int) -> Path:
        return self.done_dir / f"{block:07d}.json"

    def run_id(self) -> str | None:
        """The id of the output these markers belong to (``None``: none yet)."""
        try:
            return str(json.loads((self.folder / "run.json").read_text())["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def reset(self, run_id: str) -> None:
        """Forget every marker (a new output) and bind the folder to output ``run_id``; the lock file stays."""
        shutil.rmtree(self.done_dir, ignore_errors=True)
        self.done_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "run.json") as tmp:
            tmp.write_text(json.dumps({"run_id": run_id}) + "\n")
        self.log("reset", -1, run_id)

    def done(self) -> set[int]:
        """The blocks marked done."""
        if not self.done_dir.is_dir():
            return set()
        return {int(p.name[:-5]) for p in self.done_dir.iterdir() if p.name.endswith(".json") and p.name[:-5].isdigit()}

    def is_done(self, block: int) -> bool:
        return self._marker(block).is_file()

    def mark(self, block: int, start: int, stop: int, seconds: float, worker: str | None = None) -> None:
        """Mark ``block`` done (after its data is written): the marker is renamed into place whole."""
        info = {
            "block": block,
            "sections": [start, stop],
            "seconds": round(seconds, 3),
            "worker": worker,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with atomic_path(self._marker(block)) as tmp:
            tmp.write_text(json.dumps(info) + "\n")
        self.log("done", block, f"{start}-{stop}")

    def log(self, event: str, block: int, detail: str = "") -> None:
        """Append ``<time> <event> <block> <detail> pid=<pid>`` to ``blocks.log`` (one ``write`` per line:
        lines of concurrent workers do not interleave on a local file system)."""
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {event} {block} {detail} pid={os.getpid()}\n"
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def events(self) -> list[tuple[str, int]]:
        """``(event, block)`` of every line of the log, in order (what the tests count)."""
        if not self.log_path.is_file():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].lstrip("-").isdigit():
                out.append((parts[1], int(parts[2])))
        return out
