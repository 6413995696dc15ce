"""The volume inference's output: an OME-Zarr image of the label map, or an OME-Zarr label image of the input.

Written with ``zarr`` alone (the OME-NGFF metadata is a few JSON attributes; the ``ome-zarr`` package would add
S3, HTTP and pydantic dependencies for nothing here):

- ``<output>/0``: the label map ``(z, y, x)``, ``uint8`` class indices, one level (``multiscales`` with the input's
  pixel size and units), chunks ``(block_sections, chunk, chunk)`` so that every block writes its own chunks;
- ``<output>/probabilities/0`` (``save_probabilities``): the class probabilities ``(c, z, y, x)`` stored as the
  2-D inference's ``_prob.tif`` pages are (``probability_dtype``: ``uint8`` ``round(p * 255)``, ``uint16``,
  ``float32``), an OME-Zarr image of its own with the class names as channel labels.
- An ``--output`` inside the input's ``labels`` group (``vol.zarr/labels/cells``) is written as an OME-Zarr *label
  image* of the input (``image-label`` metadata with the class colours and names, listed in ``labels``), which
  napari, Fiji (MoBIE) and ilastik show over the image.

The NGFF version follows the input's (0.4: zarr v2 with ``/`` chunk keys; 0.5: zarr v3), 0.4 for other inputs (the
version most readers take). The run's settings are kept in the group's ``cellseg`` attribute, so that a later run
can tell whether the output is its own to resume.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.classes import class_palette

from .sources import VolumeError, is_zarr, ngff_attrs

__all__ = [
    "NGFF_VERSIONS",
    "RECORD_KEY",
    "create_output",
    "label_image_parent",
    "list_label",
    "read_record",
    "write_block",
]

#: The OME-NGFF versions written, and the zarr format each is stored in.
NGFF_VERSIONS: dict[str, int] = {"0.4": 2, "0.5": 3}

#: Attribute of the output group holding the run's record.
RECORD_KEY = "cellseg"

#: Where the probabilities go inside the output group.
PROBABILITIES = "probabilities"


def label_image_parent(output: str | os.PathLike) -> Path | None:
    """The OME-Zarr image whose label image ``output`` is (``<image>/labels/<name>``), or ``None``."""
    p = Path(output)
    return p.parent.parent if p.parent.name == "labels" and is_zarr(p.parent.parent) else None


def read_record(output: str | os.PathLike) -> dict | None:
    """The run record an earlier run left in ``output`` (``None``: no zarr group there, or not this bundle's)."""
    if not is_zarr(output):
        return None
    import zarr

    try:
        node = zarr.open(store=str(output), mode="r")
    except Exception:  # noqa: BLE001 - unreadable metadata: not a resumable output
        return None
    record = dict(node.attrs).get(RECORD_KEY)
    return dict(record) if isinstance(record, Mapping) else None


def _compressor(zarr_format: int) -> Any:
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    import zarr

    return zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def _axes(names: str, units: Sequence[str | None]) -> list[dict]:
    spatial = dict(zip("zyx", units))
    axes = []
    for name in names:
        axis: dict[str, Any] = {"name": name, "type": "channel" if name == "c" else "space"}
        if name in spatial and spatial[name]:
            axis["unit"] = spatial[name]
        axes.append(axis)
    return axes


def _multiscales(
    version: str,
    name: str,
    axes: str,
    scale: Sequence[float],
    units: Sequence[str | None],
    translation: Sequence[float] | None = None,
) -> dict:
    transforms: list[dict] = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if translation is not None and any(translation):
        transforms.append({"type": "translation", "translation": [float(t) for t in translation]})
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": _axes(axes, units),
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }
    if version == "0.4":
        multiscale = {"version": "0.4", **multiscale}
    return {"multiscales": [multiscale]}


def _ngff(version: str, attrs: dict) -> dict:
    """NGFF attributes as ``version`` stores them (0.5: under ``"ome"``)."""
    return {"ome": {"version": version, **attrs}} if version != "0.4" else attrs


def _create_array(group: Any, name: str, shape, chunks, dtype: str, zarr_format: int, dims: str) -> Any:
    kwargs: dict[str, Any] = {"compressors": _compressor(zarr_format), "fill_value": 0}
    if zarr_format == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["dimension_names"] = list(dims)
    return group.create_array(name, shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, overwrite=True, **kwargs)


def create_output(
    output: str | os.PathLike,
    shape: Sequence[int],
    block_sections: int,
    chunk_size: int,
    version: str,
    class_names: Sequence[str],
    record: Mapping[str, Any],
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    units: Sequence[str | None] = (None, None, None),
    probability_dtype: str | None = None,
    name: str | None = None,
    translation: Sequence[float] | None = None,
    label_image: bool = False,
) -> None:
    """Create the output group in the empty folder ``output`` with its (empty) arrays, and store ``record`` in it
    (see the module docstring); nothing is written of the pixels (zarr writes no empty chunk).

    Args:
        name: the output's name in the metadata (default: the folder's name).
        translation: the origin ``(z, y, x)`` (an input's OME-Zarr translation), written when not zero.
        label_image: write ``image-label`` metadata (the output is ``<image>/labels/<name>``; list it there with
            :func:`list_label` once it is in place).

    Raises:
        VolumeError: an unknown ``version``.
    """
    import zarr

    if version not in NGFF_VERSIONS:
        raise VolumeError(f"ome_zarr_version must be one of {', '.join(NGFF_VERSIONS)}, got {version!r}.")
    zarr_format = NGFF_VERSIONS[version]
    z, y, x = (int(s) for s in shape)
    chunks = (min(block_sections, z), min(chunk_size, y), min(chunk_size, x))
    name = name or Path(output).name
    group = zarr.open_group(store=str(output), mode="w", zarr_format=zarr_format)
    _create_array(group, "0", (z, y, x), chunks, "uint8", zarr_format, "zyx")
    attrs = _multiscales(version, name, "zyx", scale, units, translation)
    if label_image:
        colors = [{"label-value": i, "rgba": [*rgb, 255]} for i, rgb in enumerate(class_palette(len(class_names)))]
        properties = [{"label-value": i, "class": c} for i, c in enumerate(class_names)]
        label = {"colors": colors, "properties": properties, "source": {"image": "../../"}}
        attrs["image-label"] = {"version": "0.4", **label} if version == "0.4" else label
    group.attrs.update({**_ngff(version, attrs), RECORD_KEY: dict(record)})
    if probability_dtype is not None:
        prob = group.create_group(PROBABILITIES, overwrite=True)
        _create_array(prob, "0", (len(class_names), z, y, x), (1, *chunks), probability_dtype, zarr_format, "czyx")
        prob_attrs = _multiscales(
            version,
            f"{name} probabilities",
            "czyx",
            (1.0, *scale),
            (None, *units),
            None if translation is None else (0.0, *translation),
        )
        one = {"uint8": 255, "uint16": 65535}.get(probability_dtype, 1)
        window = {"min": 0, "max": one, "start": 0, "end": one}
        prob_attrs["omero"] = {
            "version": version,
            "channels": [
                {"label": c, "active": True, "color": "%02X%02X%02X" % rgb, "window": window}
                for c, rgb in zip(class_names, class_palette(len(class_names)))
            ],
        }
        prob.attrs.update({**_ngff(version, prob_attrs), RECORD_KEY: {"probability_dtype": probability_dtype}})


def list_label(image: str | os.PathLike, name: str) -> None:
    """Add ``name`` to ``<image>/labels``'s ``labels`` list (creating the group, in the image's zarr format)."""
    import zarr

    image = Path(image)
    root = zarr.open_group(store=str(image), mode="r")
    ome, version = ngff_attrs(dict(root.attrs))
    labels = zarr.open_group(store=str(image / "labels"), mode="a", zarr_format=root.metadata.zarr_format)
    current, _ = ngff_attrs(dict(labels.attrs))
    names = [n for n in current.get("labels", []) if n != name] + [name]
    labels.attrs.update(_ngff(version or "0.4", {"labels": names}))


def write_block(output: str | os.PathLike, start: int, labels: np.ndarray, probabilities: np.ndarray | None) -> None:
    """Write one block: sections ``start..start+len(labels)-1`` of the label map (and of the probabilities,
    ``(c, n, y, x)``). The block covers whole chunks (``block_sections`` along ``z``), so blocks never share one."""
    import zarr

    stop = start + labels.shape[0]
    zarr.open_array(store=str(Path(output) / "0"), mode="r+")[start:stop] = labels
    if probabilities is not None:
        zarr.open_array(store=str(Path(output) / PROBABILITIES / "0"), mode="r+")[:, start:stop] = probabilities
