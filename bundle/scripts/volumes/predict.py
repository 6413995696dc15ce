"""One section through the bundle's 2-D inference, exactly as ``inference.json`` predicts a 2-D file of it.

The steps and the transforms are inference.json's, called on the section's array instead of a loaded file:

1. the section as MONAI's loaders give a 2-D file: ``float32``, channel first, in MONAI's ``(x, y)`` order
   (``LoadImage`` reverses a file's ``(y, x)`` axes; the models are trained so);
2. the intensity rule (:class:`scripts.transforms.ScaleIntensityByRule`): the range the pre-flight decides from the
   stored pixel type and values (:func:`scripts.data.intensity.intensity_scaling`, with the model's training
   statistics), or the image's own percentiles; a stack file's one range for all its sections, as the stack route;
3. the config's inferer (overlap-tile) on a batch of one, under ``no_grad`` (and autocast with ``amp`` on a GPU),
   as ``SupervisedEvaluator`` runs it;
4. ``Activations(softmax)``; the probabilities stored as ``SaveProbabilityMaps`` stores them
   (``probability_dtype``); the label map by ``AsDiscrete(argmax)`` as ``uint8``.

So every section's label map (and probabilities) equals the 2-D inference of that section saved as its own file
(tested), with the same model, tile plan and thread count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from monai.transforms import Activations, AsDiscrete
from scripts.data.intensity import check_intensity_rule, intensity_scaling
from scripts.transforms.intensity import ScaleIntensityByRule
from scripts.transforms.save_probabilities import PROBABILITY_DTYPES

__all__ = ["SectionPredictor", "section_value_range"]


def section_value_range(
    section: np.ndarray, rule: str, intensity_max: float, statistics: Mapping[str, Any] | None = None
) -> tuple[float, float] | None:
    """The ``[low, high]`` range mapped to 0..1 for one section, as inference.json's pre-flight decides it for a
    2-D file (stored pixel type and values; under ``"auto"`` with the model's training ``statistics``: matched to
    them for another bit depth); ``None`` for ``"percentile"``, which the transform computes from the loaded
    (float32) pixels, as for a file."""
    if rule == "percentile":
        return None
    stats = statistics if rule == "auto" else None
    scaling = intensity_scaling(section, rule, intensity_max, dtype=section.dtype, statistics=stats)
    return scaling.low, scaling.high


class SectionPredictor:
    """Predict sections with a network and inferer (see the module docstring).

    Args:
        network: the model (already on ``device``, in eval mode).
        inferer: the config's inferer (``scripts.inferers.OverlapTileInferer``).
        intensity_rule, intensity_max: as in inference.json.
        device: where the network runs.
        amp: autocast on a CUDA device, as inference.json's ``amp``.
        probability_dtype: storage of the probabilities (``None``: not kept).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: Any,
        intensity_rule: str = "auto",
        intensity_max: float = 255,
        device: torch.device | str = "cpu",
        amp: bool = False,
        probability_dtype: str | None = None,
    ) -> None:
        self.network, self.inferer = network, inferer
        self.rule = check_intensity_rule(intensity_rule)
        self.intensity_max = float(intensity_max)
        self.scaler = ScaleIntensityByRule(intensity_rule, intensity_max)
        self.device = torch.device(device)
        self.amp = bool(amp) and self.device.type == "cuda"
        if probability_dtype is not None and probability_dtype not in PROBABILITY_DTYPES:
            raise ValueError(
                f"probability_dtype must be one of {', '.join(PROBABILITY_DTYPES)}, got {probability_dtype!r}."
            )
        self.probability_dtype = probability_dtype
        self.softmax = Activations(softmax=True)
        self.argmax = AsDiscrete(argmax=True)

    def __call__(
        self,
        section: np.ndarray,
        value_range: Sequence[float] | None = None,
        statistics: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``section`` ``(y, x)`` or ``(c, y, x)`` in its stored type -> label map ``(y, x)`` ``uint8`` and the
        stored probabilities ``(classes, y, x)`` (``None`` without ``probability_dtype``).

        ``value_range``: the volume's one range (a stack file, as the single-process stack route scales it);
        ``None``: the section's own, as for a 2-D file (:func:`section_value_range` with the model's ``statistics``).
        """
        if value_range is None:
            value_range = section_value_range(section, self.rule, self.intensity_max, statistics)
        image = torch.from_numpy(np.asarray(section, dtype=np.float32))
        image = image[None] if image.ndim == 2 else image
        image = self.scaler(image.transpose(-1, -2), value_range)  # MONAI's (x, y) order, as LoadImage gives a file
        batch = image[None].to(self.device)
        autocast = torch.autocast(device_type="cuda") if self.amp else nullcontext()
        with torch.no_grad(), autocast:
            logits = self.inferer(batch, self.network)
        prob = self.softmax(logits[0])
        labels = self.argmax(prob)[0].cpu().numpy().T.astype(np.uint8)
        return labels, self._stored(prob) if self.probability_dtype else None

    def _stored(self, prob: torch.Tensor) -> np.ndarray:
        arr = prob.detach().cpu().numpy().transpose(0, 2, 1)
        one = PROBABILITY_DTYPES[self.probability_dtype]
        if one is None:
            return arr.astype(np.float32)
        return np.rint(np.clip(arr, 0.0, 1.0) * one).astype(self.probability_dtype)

    def predict_block(
        self,
        sections: Sequence[np.ndarray],
        value_range: Sequence[float] | None = None,
        statistics: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Every section of a block: labels ``(n, y, x)``, probabilities ``(classes, n, y, x)`` or ``None``."""
        results = [self(s, value_range, statistics) for s in sections]
        labels = np.stack([r[0] for r in results])
        probs = np.stack([r[1] for r in results], axis=1) if self.probability_dtype else None
        return labels, probs
