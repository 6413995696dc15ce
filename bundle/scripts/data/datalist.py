"""Datalist helpers: reading MONAI-style (Decathlon) datalists, listing images for inference, writing JSON.

A datalist is a JSON object whose keys (``"training"``, ``"validation"``, ``"testing"``, and optionally the whole
images of each split, ``"training_sections"``, ``"validation_sections"``, ``"testing_sections"``, and
``"unlabelled"``) hold lists of ``{"image": relpath, "label": relpath}`` items, paths
relative to the JSON file's folder, exactly what ``monai.data.load_decathlon_datalist`` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from scripts.errors import UserError

from .io import image_extension

__all__ = ["InputError", "InputNotFoundError", "load_datalist", "list_images", "write_json"]

_WHAT = "give --input a folder of images (.png/.jpg/.tif/.tiff/.nii/.nii.gz), a datalist .json or one image file"


class InputError(UserError, ValueError):
    """An input that is not a folder of images, a datalist or an image file."""


class InputNotFoundError(UserError, FileNotFoundError):
    """An input path that does not exist."""


def load_datalist(path: str | os.PathLike, key: str = "training") -> list[dict]:
    """Load one list of a datalist JSON file, with paths made absolute.

    Thin wrapper on ``monai.data.load_decathlon_datalist`` that fails with a clear message.

    Args:
        path: the datalist JSON file.
        key: which list to read (``"training"``, ``"validation"``, ``"testing"``, ``"training_sections"``,
            ``"validation_sections"``, ``"testing_sections"``, ``"unlabelled"``, ...).

    Returns:
        The items of ``key`` (dicts), their ``image``/``label`` paths resolved against the JSON file's folder.

    Raises:
        FileNotFoundError: when the JSON file does not exist.
        ValueError: when the file is not valid JSON, has no list ``key`` (the message lists the keys it has),
            or the list is empty.
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist file not found.")
    try:
        content = json.loads(path.read_text())
    except ValueError as e:  # UnicodeDecodeError included
        raise ValueError(f"{path}: not a valid JSON datalist: {e}") from e
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a datalist must be a JSON object with lists under keys such as 'training'.")
    lists = sorted(k for k, v in content.items() if isinstance(v, list))
    if not isinstance(content.get(key), list):
        raise ValueError(f"{path}: no list under key {key!r}; the datalist's lists are {lists}.")
    if not content[key]:
        raise ValueError(f"{path}: the list {key!r} is empty; add items or choose another key from {lists}.")
    return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key)


def list_images(source: str | os.PathLike, key: str = "testing") -> list[dict]:
    """List the images to run inference on, as ``[{"image": path}, ...]`` (MONAI dataset items).

    Args:
        source: a folder (its PNG/JPEG/TIFF/NIfTI files, not recursive, sorted by name), a datalist ``.json``
            (the items of ``key``; their other keys, e.g. ``label``, are kept), or one image file.
        key: the datalist key to read when ``source`` is a JSON file.

    Returns:
        A non-empty list of dicts with absolute ``image`` paths.

    Raises:
        InputNotFoundError: when ``source`` does not exist (a ``FileNotFoundError``).
        InputError: when a folder holds no supported image, or ``source`` is a file of an unsupported type (a
            ``ValueError``).
    """
    source = Path(source)
    if not source.exists():
        raise InputNotFoundError(f"{source}: no such folder, datalist or image file; {_WHAT}.")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and image_extension(p) and not p.name.startswith("."))
        if not files:
            raise InputError(f"{source}: the folder holds no .png/.jpg/.tif/.tiff/.nii/.nii.gz image; {_WHAT}.")
        return [{"image": str(p.resolve())} for p in files]
    if source.suffix.lower() == ".json":
        return load_datalist(source, key)
    if image_extension(source):
        return [{"image": str(source.resolve())}]
    raise InputError(f"{source}: not an image, folder or datalist; {_WHAT}.")


def write_json(path: str | os.PathLike, content: dict) -> Path:
    """Write a JSON file (a datalist, a manifest) atomically, parent folders created, with deterministic
    formatting so that reruns give identical files.

    Args:
        path: output ``.json`` file; a datalist's item paths should be relative to its folder.
        content: the JSON object.

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=1) + "\n")
    os.replace(tmp, path)
    return path
