"""Ignite handlers of the bundle's workflows: crash-safe checkpoints and resume, divergence and empty-epoch guards,
early stopping, time limit and budget, random states, learning-rate and TensorBoard logging, the evaluation report,
stopping all DDP ranks together, and archiving the previous run once the new one has started."""

from .archive_previous_run import ArchivePreviousRun
from .checkpoints import AtomicDiskSaver, CheckpointSaver, ResumeCheckpointLoader
from .early_stop import EarlyStopHandler
from .empty_epoch import FailOnEmptyEpoch
from .lr_logger import LearningRateLogger
from .nan_guard import StopOnNonFiniteLoss
from .random_states import RandomStates
from .report import SegmentationReport
from .stop_together import StopTogether
from .tensorboard import TensorBoardStatsHandler
from .time_budget import FitEpochsToBudget
from .time_limit import TimeLimit
from .user_errors import QuietUserErrors

__all__ = [
    "ArchivePreviousRun",
    "AtomicDiskSaver",
    "CheckpointSaver",
    "EarlyStopHandler",
    "FailOnEmptyEpoch",
    "FitEpochsToBudget",
    "LearningRateLogger",
    "RandomStates",
    "QuietUserErrors",
    "ResumeCheckpointLoader",
    "SegmentationReport",
    "StopOnNonFiniteLoss",
    "StopTogether",
    "TensorBoardStatsHandler",
    "TimeLimit",
]
