from .checkpoints import (
    AtomicDiskSaver,
    CheckpointSaver,
    NoCheckpointError,
    ResumeCheckpointLoader,
    atomic_save,
    latest_checkpoint,
    non_finite_entries,
)
from .distributed import StopTogether, release_others, wait_for_rank0
from .early_stop import EarlyStopHandler
from .empty_epoch import FailOnEmptyEpoch
from .lr_logger import LearningRateLogger
from .nan_guard import StopOnNonFiniteLoss
from .random_states import RandomStates, transform_generators
from .report import SegmentationReport
from .inference_report import InferenceFailed, InferenceReport
from .run_folder import prepare_run_folder, run_files
from .tensorboard import TensorBoardStatsHandler
from .time_budget import FitEpochsToBudget
from .time_limit import TimeLimit
