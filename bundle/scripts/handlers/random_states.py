"""Every random state a training run depends on, as one checkpointable object (exact resume)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

__all__ = ["RandomStates", "transform_generators"]


def transform_generators(transforms: Any) -> list[np.random.RandomState]:
    """The NumPy generators (``R``) of every MONAI transform reachable from ``transforms``, one per transform, in a
    fixed order.

    A ``Compose``'s transforms are walked, and so are the transforms held as attributes (``Rand2DElasticd`` keeps
    ``Rand2DElastic``, which keeps ``RandAffineGrid`` and ``RandDeformGrid``, each with its own ``R``). A generator
    is listed once per transform that holds it, even when several share it: the sharing can change during a run
    (``RandSpatialCropSamplesd``'s inner croppers share one generator until its first call, which gives each a new
    one), and the list must be as long when a run resumes as when its checkpoint was saved.
    """
    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)
            return
        if not isinstance(obj, Transform):
            return
        generator = getattr(obj, "R", None)
        if isinstance(generator, np.random.RandomState):
            found.append(generator)
        for value in vars(obj).values():
            if isinstance(value, (Transform, list, tuple)):
                walk(value)

    walk(transforms)
    return found


def _np_state_to_torch(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _np_state_from_torch(state: dict[str, Any]) -> tuple:
    return (
        state["name"],
        state["keys"].numpy().astype(np.uint32),
        state["pos"],
        state["has_gauss"],
        state["cached_gaussian"],
    )


class RandomStates:
    """Saves and restores Python's, NumPy's and PyTorch's global random states, the generators of the given
    transforms, and the given data loaders' generators; put it in a resumable checkpoint's ``save_dict`` and the
    resume loader's ``load_dict``.

    Saved at the end of an epoch (after validation), these are exactly the states the uninterrupted run has there,
    so a run resumed from that checkpoint draws the same augmentations and the same shuffling.

    Args:
        transforms: transforms (e.g. the training ``Compose``) whose random generators are saved.
        dataloaders: data loaders whose ``generator`` (when set) is saved.

    The state holds tensors and plain Python values only, so it loads with ``torch.load(weights_only=True)``.
    """

    def __init__(self, transforms: Any = None, dataloaders: Iterable[Any] | Any = ()) -> None:
        self.transforms = transforms
        self.dataloaders = list(dataloaders) if isinstance(dataloaders, (list, tuple)) else [dataloaders]

    def _generators(self) -> list[torch.Generator]:
        return [g for d in self.dataloaders if (g := getattr(d, "generator", None)) is not None]

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        return {
            "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            "numpy": _np_state_to_torch(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "transforms": [_np_state_to_torch(g.get_state()) for g in transform_generators(self.transforms)],
            "dataloaders": [g.get_state() for g in self._generators()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        generators = transform_generators(self.transforms)
        if len(generators) != len(state["transforms"]):
            raise ValueError(
                f"the checkpoint holds the random states of {len(state['transforms'])} transform generator(s) but the "
                f"training transforms now have {len(generators)}: resume with the transforms the run started with."
            )
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
        np.random.set_state(_np_state_from_torch(state["numpy"]))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        for generator, saved in zip(generators, state["transforms"]):
            generator.set_state(_np_state_from_torch(saved))
        for generator, saved in zip(self._generators(), state["dataloaders"]):
            generator.set_state(saved)
