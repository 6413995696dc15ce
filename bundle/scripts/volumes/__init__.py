"""Volumes (serial-section EM, FIB-SEM) segmented section by section with the bundle's 2-D model, at scale.

- ``sources``: OME-Zarr (0.4, 0.5), zarr and HDF5 inputs read lazily, a block of sections at a time;
- ``ome_zarr``: the OME-Zarr output (label map, probabilities, or a label image of the input);
- ``predict``: one section through inference.json's own transforms, inferer and post-processing;
- ``blocks``: blocks of sections and their done-markers (resume, never a half-written or twice-written block);
- ``job`` / ``preflight``: the driver's plan of a run (volume.json's pre-flight) and a worker's block;
- ``dask_runner``: the blockwise runner on Dask (``LocalCluster`` or a scheduler address);
- ``synthetic``: a small synthetic OME-Zarr volume, and OME-Zarr writing of an array.

See ``docs/dask.md`` and ``configs/volume.json``.
"""

from .blocks import BlockLedger, block_ranges, state_folder
from .dask_runner import DaskVolumeRunner, default_workers
from .job import VolumeJob, default_output
from .ome_zarr import create_output, label_image_parent, read_record
from .predict import SectionPredictor, section_value_range
from .preflight import VolumePreflight
from .sources import VolumeError, VolumeSource, is_zarr, open_volume
from .synthetic import ensure_synthetic_volume, write_ome_zarr

__all__ = [
    "BlockLedger",
    "DaskVolumeRunner",
    "SectionPredictor",
    "VolumeError",
    "VolumeJob",
    "VolumePreflight",
    "VolumeSource",
    "block_ranges",
    "create_output",
    "default_output",
    "default_workers",
    "ensure_synthetic_volume",
    "is_zarr",
    "label_image_parent",
    "open_volume",
    "read_record",
    "section_value_range",
    "state_folder",
    "write_ome_zarr",
]
