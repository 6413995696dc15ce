"""The pre-flights: what a workflow checks and sets up before any work, so that a wrong setting, data file or model
stops it in seconds with one message (a :class:`~scripts.errors.UserError`) instead of deep inside the run.

Each config builds one and runs it in ``initialize`` (``"$@preflight.run()"``):

- :class:`TrainingPreflight` (``train.json``): the training settings, the run folder (locked, one run at a time),
  seeds and backends, the datalist;
- :class:`EvaluationPreflight` (``evaluate.json``): seeds and backends, the model, the test list;
- :class:`InferencePreflight` (``inference.json``): the model, the refinement, the output folder's lock, seeds and
  backends, then the :class:`~scripts.workflows.InferencePlan` of the inputs.

Under ``torchrun`` (``multi_gpu_*.json``) the run folder is prepared by global rank 0 alone, and each process seeds
``seed`` plus its rank, so that the ranks draw different augmentations.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.distributed as dist
from scripts.backends import set_backends
from scripts.data.integrity import check_datalist
from scripts.data.intensity import check_intensity_rule
from scripts.locks import lock_folder
from scripts.networks import check_model_info, require_model_file

from .inference_plan import InferencePlan
from .run_folder import prepare_run_folder

__all__ = ["EvaluationPreflight", "InferencePreflight", "TrainingPreflight"]

#: Ends the message of a refinement that names a class the model does not have (inference.json's keys to change).
REFINEMENT_HINT = " Set --refine_priorities and --refine_fallback (inference.json)."


def _rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class TrainingPreflight:
    """``train.json``'s pre-flight: the settings, then (:meth:`run`) the run folder, seeds and backends, the datalist.

    Args:
        settings: the training settings, checked: a ``scripts.settings.check_training_settings`` component, listed
            first in the config so that it is checked when the pre-flight is built, before the datalist (and the
            synthetic data) is made. The pre-flight uses their ``resume``, ``overwrite``, ``seed``,
            ``num_classes``, ``in_channels``, ``intensity_max`` and ``val_batch_size``.
        bundle_root: the run folder; an old run moves to ``<bundle_root>/archive/`` (``--overwrite True``).
        run_lock: the folder's lock (a ``scripts.locks.lock_folder`` component of ``bundle_root``), listed right
            after ``settings`` so that it is taken before the datalist or the synthetic data is made; :meth:`run`
            takes it if not.
        ckpt_dir, log_dir: the run's ``models/`` and ``logs/`` (:func:`scripts.workflows.prepare_run_folder`).
        datalist: the datalist file.
        train_key, val_key: its training and validation lists (the validation list is batched by
            ``val_batch_size`` whole images, so their sizes must agree).
        transform: the training loader's deterministic transforms; every item is also read through them
            (:func:`scripts.data.check_datalist`).
        deterministic, allow_tf32: see :func:`scripts.backends.set_backends`.
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        bundle_root: str | os.PathLike,
        ckpt_dir: str | os.PathLike,
        log_dir: str | os.PathLike,
        datalist: str | os.PathLike,
        train_key: str = "training",
        val_key: str = "validation",
        transform: Callable | Sequence[Callable] | None = None,
        deterministic: bool = True,
        allow_tf32: bool = True,
        run_lock: Any = None,
    ) -> None:
        self.settings = dict(settings)
        self.bundle_root, self.ckpt_dir, self.log_dir = str(bundle_root), str(ckpt_dir), str(log_dir)
        self.datalist, self.train_key, self.val_key, self.transform = datalist, train_key, val_key, transform
        self.deterministic, self.allow_tf32 = deterministic, allow_tf32
        #: the previous run, moved to the archive after the first training step (``--overwrite True``), or None
        self.pending_archive = None

    def run(self) -> None:
        """Lock and prepare the run folder (global rank 0), seed and set the backends, check every listed file.

        Raises:
            RunFolderError: another run holds ``bundle_root`` (:func:`scripts.locks.lock_folder`), or the folder does
                not fit the request (:func:`scripts.workflows.prepare_run_folder`).
        """
        s = self.settings
        if _rank() == 0:
            lock_folder(self.bundle_root, purpose="training")  # taken when built (run_lock); idempotent
            self.pending_archive = prepare_run_folder(
                self.ckpt_dir,
                self.log_dir,
                resume=s["resume"],
                overwrite=s["overwrite"],
                archive_dir=os.path.join(self.bundle_root, "archive"),
                defer=True,
            )
        set_backends(seed=s["seed"] + _rank(), deterministic=self.deterministic, allow_tf32=self.allow_tf32)
        check_datalist(
            self.datalist,
            s["num_classes"],
            in_channels=s["in_channels"],
            keys=[self.train_key, self.val_key],
            batch_sizes={self.val_key: s["val_batch_size"]},
            intensity_max=s["intensity_max"],
            transform=self.transform,
        )


class EvaluationPreflight:
    """``evaluate.json``'s pre-flight (:meth:`run`): seeds and backends, the model fits the config (its
    ``model_info``: class names, intensity scaling), every file of the test list is readable and fits.

    Args:
        ckpt_path: the model evaluated.
        datalist, test_key: the datalist file and its list evaluated.
        class_names, num_classes, in_channels, intensity_max: the config's data conventions.
        intensity_rule: the test images' intensity rule (:mod:`scripts.data.intensity`, as inference's); under
            ``"model"`` images with values above ``intensity_max`` are refused here, the other rules scale them.
        seed, deterministic, allow_tf32: see :func:`scripts.backends.set_backends`.
    """

    def __init__(
        self,
        ckpt_path: str | os.PathLike | None,
        datalist: str | os.PathLike,
        test_key: str,
        class_names: Sequence[str],
        num_classes: int,
        in_channels: int,
        intensity_max: float,
        intensity_rule: str = "model",
        seed: int = 0,
        deterministic: bool = True,
        allow_tf32: bool = True,
    ) -> None:
        self.ckpt_path, self.datalist, self.test_key = ckpt_path, datalist, test_key
        self.class_names, self.num_classes = class_names, num_classes
        self.in_channels, self.intensity_max = in_channels, intensity_max
        self.intensity_rule = check_intensity_rule(intensity_rule)
        self.seed, self.deterministic, self.allow_tf32 = seed, deterministic, allow_tf32

    def run(self) -> None:
        """Seed and set the backends, check the model's ``model_info`` and the test list."""
        set_backends(seed=self.seed, deterministic=self.deterministic, allow_tf32=self.allow_tf32)
        require_model_file(self.ckpt_path)  # before the engine would meet it
        check_model_info(self.ckpt_path, class_names=self.class_names, intensity_max=self.intensity_max)
        check_datalist(
            self.datalist,
            self.num_classes,
            in_channels=self.in_channels,
            keys=[self.test_key],
            intensity_max=self.intensity_max if self.intensity_rule == "model" else None,
        )


class InferencePreflight:
    """``inference.json``'s pre-flight (:meth:`run`), before the model loads: the model fits the config (its
    ``model_info``), the difficult-pixel refinement names only classes the model has, seeds and backends, then every
    input is looked at once (:meth:`scripts.workflows.InferencePlan.prepare`) and the plan is logged.

    Args:
        plan: the run's plan, filled here (the dataset's items and the report's records).
        ckpt_path: the model used.
        class_names, num_classes, intensity_max: the config's data conventions.
        refinement: the ``DifficultPixelRefine`` of the pictures and refined maps (``None``: none).
        deterministic, allow_tf32: see :func:`scripts.backends.set_backends`.
    """

    def __init__(
        self,
        plan: InferencePlan,
        ckpt_path: str | os.PathLike | None,
        class_names: Sequence[str],
        num_classes: int,
        intensity_max: float,
        refinement: Any = None,
        deterministic: bool = True,
        allow_tf32: bool = True,
    ) -> None:
        self.plan, self.ckpt_path, self.refinement = plan, ckpt_path, refinement
        self.class_names, self.num_classes, self.intensity_max = class_names, num_classes, intensity_max
        self.deterministic, self.allow_tf32 = deterministic, allow_tf32

    def run(self) -> InferencePlan:
        """Check the refinement and the model, lock the output folder, seed and set the backends, plan the inputs;
        returns the plan.

        Raises:
            RunFolderError: another run writes into ``output_dir``, or it cannot be written to.
        """
        if self.refinement is not None:
            self.refinement.check_num_classes(self.num_classes, hint=REFINEMENT_HINT)
        require_model_file(self.ckpt_path)  # before the engine would meet it
        check_model_info(self.ckpt_path, class_names=self.class_names, intensity_max=self.intensity_max)
        lock_folder(self.plan.output_dir, purpose="inference")  # before the old report is read and anything written
        set_backends(seed=0, deterministic=self.deterministic, allow_tf32=self.allow_tf32)
        plan = self.plan.prepare().log()
        if not len(plan):  # every input refused or finished: the evaluator has nothing to do, MONAI skips its run
            warnings.filterwarnings("ignore", message="`dataloader` is empty", module="monai.engines.workflow")
        return plan
