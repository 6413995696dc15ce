from .checkpoints import latest_checkpoint
from .nan_guard import StopOnNonFiniteLoss
from .report import SegmentationReport
from .inference_report import InferenceFailed, InferenceReport
