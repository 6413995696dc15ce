"""Data: class map, 2D image I/O, synthetic EM-like data, dataset preparation, integrity checks, and the inference
pre-flight (checks, intensity rule, unique output names, fault-tolerant loading).

Command line: ``python -m scripts.data.prepare {drosophila,folders,synthetic,check} ...``.
"""

from .classes import CLASS_COLORS, CLASS_NAMES, DROSOPHILA_VALUE_MAP, NUM_CLASSES, class_palette
from .datalist import list_images, load_datalist, write_json
from .drosophila import crop_grid, find_drosophila_sections, map_label_values, prepare_drosophila, section_folds
from .folders import pair_files, parse_class_map, prepare_folders
from .fault_tolerant import FAILED_KEY, FaultTolerantDataset, root_cause
from .integrity import DatasetError, check_datalist
from .loading import NamingCompose, ThreadDataLoader, collate_naming_files, item_name
from .intensity import INTENSITY_RULES, IntensityScaling, intensity_scaling
from .output_names import OUTPUT_NAME_KEY, output_name_formatter, unique_output_names
from .preflight import REPORT_NAME, ImageHeader, InferencePlan, plan_inference, read_header
from .io import SUPPORTED_EXTENSIONS, file_stem, has_alpha, image_extension, read_image, to_uint8, write_png
from .synthetic import ensure_synthetic_dataset, generate_dataset, make_sample

__all__ = [
    "CLASS_COLORS",
    "class_palette",
    "CLASS_NAMES",
    "DROSOPHILA_VALUE_MAP",
    "NUM_CLASSES",
    "SUPPORTED_EXTENSIONS",
    "DatasetError",
    "NamingCompose",
    "ThreadDataLoader",
    "collate_naming_files",
    "item_name",
    "FAILED_KEY",
    "FaultTolerantDataset",
    "INTENSITY_RULES",
    "ImageHeader",
    "InferencePlan",
    "IntensityScaling",
    "OUTPUT_NAME_KEY",
    "REPORT_NAME",
    "intensity_scaling",
    "output_name_formatter",
    "plan_inference",
    "read_header",
    "root_cause",
    "unique_output_names",
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
    "map_label_values",
    "pair_files",
    "parse_class_map",
    "prepare_drosophila",
    "prepare_folders",
    "read_image",
    "section_folds",
    "to_uint8",
    "write_json",
    "write_png",
]
