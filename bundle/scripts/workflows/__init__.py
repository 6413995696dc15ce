"""What the bundle's workflows run around MONAI's engines, wired by the configs.

- ``preflight``: each workflow's checks and set-up before any work (its ``initialize``).
- ``run_folder``: one training run per folder (``--resume``, ``--overwrite``, the archive).
- ``distributed``: the process group and "rank 0 first" of ``multi_gpu_*.json``.
- ``inference_plan``, ``output_names``, ``fault_tolerant``, ``inference_report``: an inference run over a folder --
  every input checked once before the model loads, a unique output name per input, a file that fails is reported
  and skipped, ``inference_report.json``.
- ``measurement``: the objects of an inference folder's label maps, measured (``configs/measure.json``).
"""

from .distributed import finish_distributed, init_distributed, release_others, wait_for_rank0
from .fault_tolerant import FAILED_KEY, FaultTolerantDataset, root_cause
from .inference_plan import REPORT_NAME, InferencePlan, picture_folder
from .inference_report import InferenceFailed, InferenceReport
from .measurement import FolderMeasurement, MeasurementFailed
from .output_names import OUTPUT_NAME_KEY, PICTURE_KEY, output_name_formatter, unique_output_names
from .preflight import EvaluationPreflight, InferencePreflight, TrainingPreflight
from .run_folder import SHIPPED, checkpoint_to_resume, prepare_run_folder, run_files

__all__ = [
    "FAILED_KEY",
    "OUTPUT_NAME_KEY",
    "PICTURE_KEY",
    "REPORT_NAME",
    "SHIPPED",
    "EvaluationPreflight",
    "FaultTolerantDataset",
    "FolderMeasurement",
    "InferenceFailed",
    "InferencePlan",
    "InferencePreflight",
    "InferenceReport",
    "MeasurementFailed",
    "TrainingPreflight",
    "checkpoint_to_resume",
    "finish_distributed",
    "init_distributed",
    "output_name_formatter",
    "picture_folder",
    "prepare_run_folder",
    "release_others",
    "root_cause",
    "run_files",
    "unique_output_names",
    "wait_for_rank0",
]
