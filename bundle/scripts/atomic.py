"""Crash-safe outputs: each file or folder is written under a temporary name beside its target, then renamed into
place, so that a killed process (``kill -9``, ``SIGTERM``) leaves the old output or the new one, never a partial one.

Temporary names are hidden and marked: ``.<name>.<pid>.partial<ext>`` (``<ext>``: the target's extension, so that
writers that pick the format by extension, such as MONAI's ``PILWriter``/``ITKWriter``, write the right one), and
``.<name>.<pid>.old`` for a folder being replaced. :func:`remove_leftovers` deletes those of processes that no longer
run (a killed run's), and the ``.<name>.<pid>.tmp`` files of :func:`scripts.data.io.write_png` and
:func:`scripts.data.write_json` too; nothing else reads them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_folder", "atomic_path", "remove_leftovers", "temporary_path"]

#: A temporary name: ``.<name>.<pid>.partial[<ext>]``, ``.<name>.<pid>.old`` or ``.<name>.<pid>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.(partial(\.[^.]+)*|old|tmp)$")


def _extension(name: str) -> str:
    return ".nii.gz" if name.lower().endswith(".nii.gz") else os.path.splitext(name)[1]


def temporary_path(path: str | os.PathLike, kind: str = "partial") -> Path:
    """The temporary name of ``path`` for this process (``kind``: ``"partial"`` or ``"old"``)."""
    path = Path(path)
    ext = _extension(path.name) if kind == "partial" else ""
    return path.with_name(f".{path.name}.{os.getpid()}.{kind}{ext}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` to write to; it replaces ``path`` when the block ends without an
    error (and is removed when it raises)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to fill; it replaces the folder ``path`` (and all its files)
    when the block ends without an error (and is removed when it raises)."""
    path = Path(path)
    tmp, old = temporary_path(path), temporary_path(path, "old")
    _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _remove(old)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of this process is never in use outside the context managers above
    if os.name != "posix":
        return True  # no cheap check (os.kill would end the process on Windows): leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders (the names above) in ``folder`` left by processes that no longer run;
    return them."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            match = _TEMPORARY.match(entry.name)
            if match and not _running(int(match["pid"])):
                _remove(entry)
                removed.append(entry)
    return removed
