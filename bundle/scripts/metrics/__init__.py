from .confusion import (
    SegmentationConfusionMatrix,
    confusion_matrix,
    format_table,
    per_image_scores,
    scores_from_confusion,
)
