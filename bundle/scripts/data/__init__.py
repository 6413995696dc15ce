"""Data: class map, 2D image I/O, headers and pixel sizes, datalists, synthetic EM-like data, dataset preparation, integrity
checks, the intensity rule, and loading that names the file that fails.

Command line: ``python -m scripts.data.prepare {drosophila,folders,synthetic,check} ...``.
"""

from .classes import CLASS_COLORS, CLASS_NAMES, DROSOPHILA_VALUE_MAP, NUM_CLASSES, class_palette
from .datalist import list_images, load_datalist, write_json
from .drosophila import crop_grid, find_drosophila_sections, map_label_values, prepare_drosophila, section_folds
from .folders import pair_files, parse_class_map, prepare_folders
from .header import ImageHeader, read_header
from .integrity import DatasetError, check_datalist
from .intensity import INTENSITY_RULES, IntensityScaling, intensity_scaling, training_statistics
from .io import SUPPORTED_EXTENSIONS, file_stem, has_alpha, image_extension, read_image, to_uint8, write_png
from .loading import NamingCompose, ThreadDataLoader, collate_naming_files, item_name
from .pixel_size import PixelSize, read_pixel_size
from .stacks import StackError, StackSource, open_stack
from .synthetic import ensure_synthetic_dataset, generate_dataset, make_sample

__all__ = [
    "CLASS_COLORS",
    "class_palette",
    "CLASS_NAMES",
    "DROSOPHILA_VALUE_MAP",
    "NUM_CLASSES",
    "SUPPORTED_EXTENSIONS",
    "DatasetError",
    "StackError",
    "StackSource",
    "NamingCompose",
    "ThreadDataLoader",
    "collate_naming_files",
    "item_name",
    "INTENSITY_RULES",
    "ImageHeader",
    "IntensityScaling",
    "PixelSize",
    "intensity_scaling",
    "training_statistics",
    "read_header",
    "check_datalist",
    "crop_grid",
    "ensure_synthetic_dataset",
    "file_stem",
    "has_alpha",
    "find_drosophila_sections",
    "generate_dataset",
    "image_extension",
    "list_images",
    "load_datalist",
    "make_sample",
    "open_stack",
    "map_label_values",
    "pair_files",
    "parse_class_map",
    "prepare_drosophila",
    "prepare_folders",
    "read_image",
    "read_pixel_size",
    "section_folds",
    "to_uint8",
    "write_json",
    "write_png",
]
