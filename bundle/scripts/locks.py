"""One run per folder, under concurrency: an exclusive lock on the run folder, taken before anything is written.

A training run locks its ``bundle_root`` (``<bundle_root>/.run.lock``) and an inference run its ``output_dir``
(``<output_dir>/.run.lock``) with an operating-system file lock (``fcntl.flock``, exclusive, non-blocking). A second
run into the same folder is refused in one line that names the holder (pid, host, start time, command). The kernel
releases the lock when the holding process ends in any way, ``kill -9`` included, so there is no stale lock to
clear: the lock file left behind is reused by the next run. (On a network file system without ``flock`` support,
the lock cannot be taken and the run says so and goes on unlocked.)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from .errors import RunFolderError

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "FolderLock", "lock_folder"]

#: The lock file's name inside the locked folder.
LOCK_NAME = ".run.lock"

#: Locks held by this process, by folder (kept open for the process's lifetime).
_HELD: dict[str, "FolderLock"] = {}


class FolderLock:
    """An exclusive lock on ``folder`` held by this process until :meth:`release` or the process ends."""

    def __init__(self, folder: str | os.PathLike, purpose: str = "run") -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._shared = False  # held by another lock object of this process

    def acquire(self) -> "FolderLock":
        """Take the lock.

        Raises:
            RunFolderError: another process holds it (its pid, host, start and command are named).
        """
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a file of that name, a read-only folder, ...
            reason = e.strerror or type(e).__name__
            raise RunFolderError(
                f"{self.folder}: cannot write the run's files there ({reason}); give a writable folder "
                f"(--bundle_root for training, --output_dir for inference)."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                # this process holds it already (another lock object, e.g. of a workflow built earlier in this
                # process, such as a second monai.bundle.load(...)): one run per folder is a rule between processes
                self._shared = True
                return self
            raise RunFolderError(
                f"{self.folder} is in use by another {holder.get('purpose', 'run')} ({_describe(holder)}); one run per "
                f"folder: wait for it to end, or give this run another folder (--bundle_root for training, "
                f"--output_dir for inference)."
            ) from None
        except OSError as e:  # e.g. a network file system without flock
            os.close(fd)
            logger.warning(
                "%s: cannot lock the folder (%s); going on without the one-run-per-folder lock.", self.folder, e
            )
            return self
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None or self._shared

    def release(self) -> None:
        """Release the lock (the file stays; the next run reuses it); a lock shared with another object of this
        process stays with that object."""
        self._shared = False
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}: "
        f"{holder.get('command', '?')}"
    )


def _rank() -> int:
    """This process's global rank under ``torch.distributed`` (0 without a process group)."""
    dist = sys.modules.get("torch.distributed")
    return dist.get_rank() if dist is not None and dist.is_available() and dist.is_initialized() else 0


def lock_folder(folder: str | os.PathLike, purpose: str = "run") -> FolderLock | None:
    """Lock ``folder`` for the rest of this process (idempotent per folder within a process). Under
    ``torch.distributed`` global rank 0 holds the lock for the whole run; the other ranks return ``None``.

    Raises:
        RunFolderError: another process holds the folder, or it cannot be written to.
    """
    if _rank() != 0:
        return None
    key = str(Path(folder).resolve())
    lock = _HELD.get(key)
    if lock is None or not lock.held:
        lock = FolderLock(folder, purpose).acquire()
        _HELD[key] = lock
    return lock
