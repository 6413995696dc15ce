"""Difficult-pixel visualisation and refinement (Matsuzuki & Hotta).

Reference:
    D. Matsuzuki and K. Hotta, "Visualizing and Modifying Difficult Pixels in Cell Image Segmentation",
    Proc. BIOSTEC 2020, vol. 4: BIOSIGNALS, pp. 314-318. doi:10.5220/0009164203140318

The method, as implemented here:

1. confidence map ``f = max_c p(c | x)`` from the per-class softmax probabilities;
2. threshold ``alpha = mean(f)`` over the image (the paper's eq. 1), or a fixed ``threshold``, or ``alpha * scale``;
3. difficult pixels: ``f < alpha`` (strict, so a perfectly uniform confidence map has no difficult pixel);
4. refinement: the difficult pixels lose their arg-max label. For each class of ``priorities`` in turn, the region
   of that class (its confident pixels plus the difficult pixels it has already taken) grows into the adjacent
   difficult pixels, one neighbourhood step per pass, until no pixel changes (or ``max_passes`` passes); the
   difficult pixels no priority class reached go to ``fallback`` (or keep their arg-max when ``fallback=None``);
   with ``keep_other_classes=True`` those whose arg-max is not a priority class keep it, and only the unreached
   difficult pixels of the priority classes go to ``fallback``.

The transform knows no dataset: by default it has no priority class and no fallback (the difficult pixels keep
their arg-max: the maps only); the classes come from the config. Why the bundle's choice (``inference.json``:
``refine_priorities`` = ``[1, 3]`` = (membrane, mitochondria), ``refine_fallback`` = ``0`` = intracellular, see
``scripts/data/classes.py``): the paper (mouse liver: membrane, nucleus, cytoplasm) gives difficult pixels first
to the cell membrane, because membranes are thin structures whose *continuity* decides whether two cells are
separated, and a missed membrane pixel (a gap) costs far more than a membrane one pixel too thick; second to the
nucleus, a compact organelle inside the cell; and the rest to cytoplasm, the "filler" class that surrounds
everything. Our classes map onto this as: membrane -> membrane (same reasoning; it is what the adapted Rand error of
cell regions measures); nucleus -> mitochondria (the compact organelles inside the cells); cytoplasm ->
intracellular (the filler). Glia/extracellular and synapse get no priority: glia/extracellular regions are large
and bounded by membranes, which already take the difficult pixels at their borders, and synapses are small dark
patches *on* membranes, so letting them grow would eat the membrane pixels the refinement wants to keep.

``keep_other_classes`` (default ``False``, the paper's rule): on the 5-class map the fallback turns the difficult
glia/extracellular and synapse pixels that no membrane or mitochondrion reached into intracellular (synapse recall
0.39 -> 0.08 on an under-trained U-Net, docs/README.md, Results). With ``True`` they keep their arg-max; the priority
classes still grow into them where adjacent. Which is better is to be measured on a trained model
(``benchmarks/evaluate_refinement.py --keep-others both``) before it becomes the default.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type, ensure_tuple, ensure_tuple_rep
from scipy import ndimage
from scripts.checks import check_positive_int
from scripts.errors import ConfigError

__all__ = [
    "confidence_map",
    "difficult_pixel_mask",
    "refine_difficult_pixels",
    "DifficultPixelRefine",
    "DifficultPixelRefined",
]

#: (spatial dims, connectivity) -> ``scipy.ndimage.generate_binary_structure`` rank.
_CONNECTIVITY = {(2, 4): 1, (2, 8): 2, (3, 6): 1, (3, 18): 2, (3, 26): 3}


def _check_probabilities(prob: NdarrayOrTensor) -> None:
    if prob.ndim not in (3, 4):
        raise ValueError(
            f"expected channel-first per-class probabilities (C, H, W) or (C, H, W, D), got shape {tuple(prob.shape)};"
            " remove the batch dimension (e.g. decollate the batch) first."
        )
    if prob.shape[0] < 2:
        raise ValueError(
            f"expected at least 2 class channels, got {prob.shape[0]}: pass the network's per-class output "
            "(probabilities or logits with softmax=True), not an arg-max label map."
        )


def confidence_map(prob: NdarrayOrTensor) -> NdarrayOrTensor:
    """Confidence ``f = max over classes`` of per-class probabilities.

    Args:
        prob: per-class probabilities, shape (C, H, W[, D]).

    Returns:
        the confidence map, shape (1, H, W[, D]), same type as ``prob``.
    """
    _check_probabilities(prob)
    if isinstance(prob, torch.Tensor):
        return prob.max(dim=0, keepdim=True).values
    return np.max(prob, axis=0, keepdims=True)


def difficult_pixel_mask(
    confidence: NdarrayOrTensor, threshold: float | None = None, scale: float = 1.0
) -> NdarrayOrTensor:
    """Difficult pixels: ``confidence < alpha``.

    Args:
        confidence: confidence map, any shape (usually (1, H, W)).
        threshold: fixed threshold; ``None`` uses ``alpha = scale * mean(confidence)`` (paper eq. 1 when
            ``scale=1``).
        scale: factor on the image mean; must stay 1 when ``threshold`` is given.

    Returns:
        boolean mask, same shape and type as ``confidence``.

    Raises:
        ValueError: when both ``threshold`` and a ``scale`` other than 1 are given, or ``scale <= 0``.
    """
    _check_threshold(threshold, scale)
    alpha = threshold if threshold is not None else scale * float(confidence.mean())
    return confidence < alpha


def _check_threshold(threshold: float | None, scale: float) -> None:
    if threshold is not None and scale != 1.0:
        raise ValueError(f"give either a fixed threshold ({threshold}) or a scale of the mean ({scale}), not both.")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}.")


def refine_difficult_pixels(
    labels: np.ndarray,
    difficult: np.ndarray,
    priorities: Sequence[int],
    fallback: int | None,
    connectivity: int = 8,
    max_passes: int | None = None,
    keep_other_classes: bool = False,
) -> np.ndarray:
    """Reassign difficult pixels by growing the priority classes into them (see the module docstring).

    Each pass is one binary dilation of the class region restricted to the still-unassigned difficult pixels
    (``scipy.ndimage.binary_dilation`` with ``mask``), so the work is vectorised.

    Args:
        labels: arg-max label map, shape (H, W) or (H, W, D), integer values.
        difficult: boolean mask of difficult pixels, same shape.
        priorities: classes in the order they take difficult pixels.
        fallback: class for the difficult pixels no priority class reached; ``None`` keeps their arg-max label.
        connectivity: neighbourhood, 4 or 8 in 2D, 6, 18 or 26 in 3D.
        max_passes: passes per priority class; ``None`` repeats until nothing changes.
        keep_other_classes: difficult pixels that no priority class reached and whose arg-max is not a priority
            class keep their arg-max instead of going to ``fallback``.

    Returns:
        the refined label map, same shape and dtype as ``labels``.
    """
    structure = ndimage.generate_binary_structure(labels.ndim, _CONNECTIVITY[(labels.ndim, connectivity)])
    refined = labels.copy()
    unassigned = difficult.astype(bool).copy()
    for cls in priorities:
        seeds = (labels == cls) & ~difficult
        if not seeds.any():
            continue
        # iterations=0 repeats the (masked) dilation until the result stops changing
        grown = ndimage.binary_dilation(seeds, structure=structure, iterations=max_passes or 0, mask=unassigned | seeds)
        taken = grown & unassigned
        refined[taken] = cls
        unassigned &= ~taken
    if keep_other_classes:
        unassigned &= np.isin(labels, priorities)
    if fallback is not None:
        refined[unassigned] = fallback
    return refined


class DifficultPixelRefine(Transform):
    """Refine an arg-max segmentation by reassigning its low-confidence ("difficult") pixels.

    Matsuzuki & Hotta, "Visualizing and Modifying Difficult Pixels in Cell Image Segmentation", BIOSTEC 2020
    (BIOSIGNALS), pp. 314-318, doi:10.5220/0009164203140318;
    algorithm and choice of defaults in the module docstring of ``scripts.transforms.difficult_pixels``.

    Example (5 classes, membrane = 1)::

        refine = DifficultPixelRefine(priorities=(1, 3), fallback=0)
        labels = refine(probabilities)                       # (1, H, W)
        labels, confidence, difficult = refine(probabilities, return_maps=True)

    Args:
        priorities: class indices, in order, that grow into adjacent difficult pixels (the paper: the thin
            structures first, e.g. the membrane). Defaults to ``()``: none.
        fallback: class index of the difficult pixels no priority class reached (the paper: the "filler" class,
            e.g. cytoplasm). Defaults to ``None``: they keep their arg-max label. With both defaults the refined
            map is the arg-max (only the confidence map and the difficult-pixel mask are of use).
        connectivity: what "adjacent" means: 4 or 8 in 2D (8 = the 3x3 neighbourhood), 6, 18 or 26 in 3D.
            Defaults to 8.
        threshold: fixed confidence threshold; ``None`` (default) uses ``scale * mean(confidence)`` per image.
        scale: factor on the per-image mean confidence (paper: 1). Defaults to 1.
        softmax: apply softmax over the channel dimension first (input = logits). Defaults to ``False``
            (input = probabilities).
        max_passes: dilation passes per priority class; ``None`` (default) repeats until nothing changes.
        keep_other_classes: difficult pixels no priority class reached keep their arg-max when it is not a
            priority class (e.g. glia/extracellular, synapse), instead of going to ``fallback``. Defaults to
            ``False`` (the paper's rule: all of them go to ``fallback``).

    Raises:
        ValueError: bad ``priorities``/``fallback``/``connectivity``/``max_passes``/``threshold``/``scale``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        priorities: Sequence[int] | int = (),
        fallback: int | None = None,
        connectivity: int = 8,
        threshold: float | None = None,
        scale: float = 1.0,
        softmax: bool = False,
        max_passes: int | None = None,
        keep_other_classes: bool = False,
    ) -> None:
        self.priorities = tuple(int(p) for p in ensure_tuple(priorities))
        if any(p < 0 for p in self.priorities) or len(set(self.priorities)) != len(self.priorities):
            raise ValueError(f"priorities must be distinct non-negative class indices, got {priorities}.")
        if fallback is not None and fallback < 0:
            raise ValueError(f"fallback must be a non-negative class index or None, got {fallback}.")
        if connectivity not in (4, 8, 6, 18, 26):
            raise ValueError(f"connectivity must be 4 or 8 (2D), 6, 18 or 26 (3D), got {connectivity}.")
        check_positive_int("max_passes", max_passes, allow_none=True)
        _check_threshold(threshold, scale)
        self.fallback = fallback
        self.connectivity = connectivity
        self.threshold = threshold
        self.scale = scale
        self.softmax = softmax
        self.max_passes = max_passes
        self.keep_other_classes = bool(keep_other_classes)

    def check_num_classes(self, num_classes: int, hint: str = "") -> None:
        """Raise when ``priorities``/``fallback`` name a class index a ``num_classes``-class model does not have.

        A config calls it in ``initialize`` (``inference.json``), so a config for another class count fails before
        the model is loaded; ``hint`` (e.g. the config keys or flags to change) ends the message.

        Raises:
            ConfigError: (a ``ValueError``) when a priority or the fallback is ``>= num_classes``.
        """
        used = self.priorities + (() if self.fallback is None else (self.fallback,))
        if used and max(used) >= num_classes:
            raise ConfigError(
                f"difficult-pixel refinement: priorities and fallback must be class indices < num_classes "
                f"({num_classes}), got priorities {list(self.priorities)}, fallback {self.fallback}: set them to "
                f"the indices of your thin structures (priorities) and your filler class (fallback, or None).{hint}"
            )

    def __call__(self, img: NdarrayOrTensor, return_maps: bool = False):
        """
        Args:
            img: per-class probabilities (or logits with ``softmax=True``), shape (C, H, W[, D]).
            return_maps: also return the confidence map and the difficult-pixel mask.

        Returns:
            the refined label map (1, H, W[, D]) with ``img``'s type and dtype (integer values, like
            ``AsDiscrete(argmax=True)``); with ``return_maps``, the tuple (refined, confidence, difficult) where
            confidence is (1, H, W[, D]) in ``img``'s dtype and difficult is a boolean (1, H, W[, D]).

        Raises:
            ValueError: wrong shape, a class index out of range, or a connectivity that does not fit the
                number of spatial dimensions.
        """
        _check_probabilities(img)
        num_classes, spatial = img.shape[0], img.ndim - 1
        if (spatial, self.connectivity) not in _CONNECTIVITY:
            raise ValueError(
                f"connectivity {self.connectivity} does not exist in {spatial}D; use 4/8 (2D) or 6/18/26 (3D)."
            )
        self.check_num_classes(num_classes)
        prob, *_ = convert_data_type(img, np.ndarray)
        prob = prob.astype(np.float32, copy=False)
        if self.softmax:
            prob = np.exp(prob - prob.max(axis=0, keepdims=True))
            prob /= prob.sum(axis=0, keepdims=True)
        confidence = confidence_map(prob)
        difficult = difficult_pixel_mask(confidence, self.threshold, self.scale)
        refined = refine_difficult_pixels(
            np.argmax(prob, axis=0),
            difficult[0],
            self.priorities,
            self.fallback,
            self.connectivity,
            self.max_passes,
            self.keep_other_classes,
        )[None]
        out, *_ = convert_to_dst_type(refined, img)
        if not return_maps:
            return out
        conf_out, *_ = convert_to_dst_type(confidence, img)
        diff_out, *_ = convert_to_dst_type(difficult, img, dtype=torch.bool if isinstance(img, torch.Tensor) else bool)
        return out, conf_out, diff_out


class DifficultPixelRefined(MapTransform):
    """Dictionary-based wrapper of :class:`DifficultPixelRefine`.

    Args:
        keys: keys of the per-class probabilities (or logits with ``softmax=True``), shape (C, H, W[, D]).
        refined_keys: where to store the refined label maps, one per key; ``None`` (default) overwrites the input
            key, like MONAI's ``AsDiscreted``.
        confidence_keys: where to store the confidence maps (1, H, W[, D]); ``None`` (default) does not store them.
        difficult_keys: where to store the boolean difficult-pixel masks (1, H, W[, D]); ``None`` (default) does not
            store them.
        priorities, fallback, connectivity, threshold, scale, softmax, max_passes, keep_other_classes: see
            :class:`DifficultPixelRefine`.
        allow_missing_keys: don't raise an exception if a key is missing.

    Example (bundle config, keeping the probabilities in "pred")::

        {"_target_": "scripts.transforms.DifficultPixelRefined", "keys": "pred", "refined_keys": "pred_refined",
         "confidence_keys": "confidence", "difficult_keys": "difficult"}
    """

    backend = DifficultPixelRefine.backend

    def __init__(
        self,
        keys: KeysCollection,
        refined_keys: KeysCollection | None = None,
        confidence_keys: KeysCollection | None = None,
        difficult_keys: KeysCollection | None = None,
        priorities: Sequence[int] | int = (),
        fallback: int | None = None,
        connectivity: int = 8,
        threshold: float | None = None,
        scale: float = 1.0,
        softmax: bool = False,
        max_passes: int | None = None,
        keep_other_classes: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        n = len(self.keys)
        self.refined_keys = self.keys if refined_keys is None else ensure_tuple_rep(refined_keys, n)
        self.confidence_keys = ensure_tuple_rep(confidence_keys, n)
        self.difficult_keys = ensure_tuple_rep(difficult_keys, n)
        self.refiner = DifficultPixelRefine(
            priorities, fallback, connectivity, threshold, scale, softmax, max_passes, keep_other_classes
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, refined_key, conf_key, diff_key in self.key_iterator(
            d, self.refined_keys, self.confidence_keys, self.difficult_keys
        ):
            refined, confidence, difficult = self.refiner(d[key], return_maps=True)
            d[refined_key] = refined
            if conf_key is not None:
                d[conf_key] = confidence
            if diff_key is not None:
                d[diff_key] = difficult
        return d
