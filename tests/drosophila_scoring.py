"""Score a model file on labelled Drosophila sections as the model cards do (the real-data tests of the shipped
models): the sections read as the bundle reads them (MONAI's ``LoadImage``), the default inferer, IoU accumulated
over the sections."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch


#: The whole section.
WHOLE = (slice(None), slice(None))


def section_iou(dataset: Path, model: Path, sections: Iterable[int], window=WHOLE) -> torch.Tensor:
    """Per-class IoU of ``model`` over the stack-1 ``sections`` of the raw Drosophila ``dataset`` folder, restricted
    to ``window`` (a pair of slices in LoadImage's order; default: whole sections)."""
    from monai.transforms import LoadImage

    from scripts.data import DROSOPHILA_VALUE_MAP
    from scripts.data.drosophila import map_label_values
    from scripts.inferers import OverlapTileInferer
    from scripts.metrics.confusion import confusion_matrix, scores_from_confusion
    from scripts.networks import network_from_checkpoint

    net = network_from_checkpoint(model).eval()
    load = LoadImage(image_only=True)
    total = torch.zeros(5, 5, dtype=torch.int64)
    for section in sections:
        raw = np.asarray(load(Path(dataset) / "stack1" / "raw" / f"{section:02d}.tif"), dtype=np.float32)[window]
        grey = np.asarray(load(Path(dataset) / "stack1" / "labels" / f"labels{section:08d}.png"))[window]
        label = torch.from_numpy(map_label_values(grey.astype(np.int64), DROSOPHILA_VALUE_MAP).astype(np.int64))
        with torch.no_grad():
            pred = OverlapTileInferer()(torch.from_numpy(raw / 255.0)[None, None], net).argmax(1)
        total += confusion_matrix(pred[None], label[None, None], 5)[0]
    return scores_from_confusion(total)["iou"]
