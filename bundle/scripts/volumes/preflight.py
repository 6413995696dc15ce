"""volume.json's pre-flight: what the volume run checks before the model loads (its ``initialize``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from scripts.backends import set_backends
from scripts.networks import check_model_info, require_model_file

from .job import VolumeJob

__all__ = ["VolumePreflight"]


class VolumePreflight:
    """The model fits the config (its ``model_info``), seeds and backends, then the job: the input opened lazily, the
    output locked and created or resumed, the blocks planned and logged (:meth:`VolumeJob.prepare`).

    Args:
        job: the run's job.
        ckpt_path: the model used.
        class_names, intensity_max: the config's data conventions, checked against the model's.
        deterministic, allow_tf32: see :func:`scripts.backends.set_backends`.
    """

    def __init__(
        self,
        job: VolumeJob,
        ckpt_path: str | os.PathLike | None,
        class_names: Sequence[str],
        intensity_max: float,
        deterministic: bool = True,
        allow_tf32: bool = True,
    ) -> None:
        self.job, self.ckpt_path = job, ckpt_path
        self.class_names, self.intensity_max = class_names, intensity_max
        self.deterministic, self.allow_tf32 = deterministic, allow_tf32

    def run(self) -> VolumeJob:
        """Check the model, seed and set the backends, prepare and log the job; returns the job.

        Raises:
            ModelFileError: no model file, or one trained with other data conventions.
            VolumeError, RunFolderError: see :meth:`VolumeJob.prepare`.
        """
        require_model_file(self.ckpt_path)
        check_model_info(self.ckpt_path, class_names=self.class_names, intensity_max=self.intensity_max)
        set_backends(seed=0, deterministic=self.deterministic, allow_tf32=self.allow_tf32)
        return self.job.prepare().log()
