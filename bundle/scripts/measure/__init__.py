"""Answers per object: the connected objects of chosen classes in a label map, measured (area, perimeter,
centroid, mean confidence; µm when the pixel size is known), the instance label map, and a folder's summary (count,
area fraction, density per µm²). The workflow over an inference output folder is
:class:`scripts.workflows.FolderMeasurement` (``configs/measure.json``, ``docs/measure.md``).
"""

from .objects import OBJECT_COLUMNS, ObjectTable, measure_objects, write_csv, write_instance_map
from .summary import ALL_IMAGES, SUMMARY_COLUMNS, summary_rows

__all__ = [
    "ALL_IMAGES",
    "OBJECT_COLUMNS",
    "SUMMARY_COLUMNS",
    "ObjectTable",
    "measure_objects",
    "summary_rows",
    "write_csv",
    "write_instance_map",
]
