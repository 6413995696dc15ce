"""Pinned weights: the shipped ``model.pt`` is checked against ``large_files.json``'s sha256 when it is used.

``large_files.json`` (MONAI's large-files format, at the bundle root) pins every shipped model file by sha256. A
file that differs (edited, truncated, replaced by hand) still loads if it can, but the log says so, once per file
version: the hash is computed once per (path, size, modification time) in a process, so a run that reads the file
several times pays for one hash (about 20 ms for the 7.8 MB U-Net).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["check_pinned_file", "file_sha256", "pinned_hash"]

#: The pins' file, at the bundle root.
MANIFEST = "large_files.json"


def pinned_hash(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(manifest path, sha256)`` pinned for ``path`` by the ``large_files.json`` of the bundle holding it (the
    nearest parent folder with one), or ``None`` when no manifest lists it."""
    path = Path(path).resolve()
    for root in path.parents:
        manifest = root / MANIFEST
        if not manifest.is_file():
            continue
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8")).get("large_files", [])
        except (OSError, ValueError, AttributeError):
            logger.warning(
                "%s cannot be read as MONAI's large-files JSON; the pinned weights are not checked.", manifest
            )
            return None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and (root / str(entry.get("path", ""))).resolve() == path:
                if str(entry.get("hash_type", "sha256")).lower() == "sha256" and entry.get("hash_val"):
                    return str(manifest), str(entry["hash_val"]).lower()
        return None
    return None


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime_ns: the cache key
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, computed once per (path, size, modification time) in a process."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def check_pinned_file(path: str | os.PathLike) -> str:
    """Compare ``path`` with its pinned sha256 and log the outcome (a warning naming both hashes and the fix when
    they differ): ``"match"``, ``"differs"``, or ``"unpinned"`` when no manifest lists it. Never raises for a
    readable file: a differing file may be deliberate."""
    pin = pinned_hash(path)
    if pin is None:
        return "unpinned"
    manifest, expected = pin
    found = file_sha256(path)
    if found == expected:
        logger.info("%s matches its pinned sha256 (%s).", path, manifest)
        return "match"
    logger.warning(
        "%s is not the file this bundle version ships: sha256 %s, %s pins %s. It was changed after packaging "
        "(edited, truncated or replaced); results will not match the model card. Restore it (e.g. `git checkout -- "
        "%s`, or extract the bundle archive again); put a model of your own at models/model.pt instead.",
        path,
        found,
        manifest,
        expected,
        path,
    )
    return "differs"
