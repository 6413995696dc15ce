"""Crash-safe checkpoints: removal only after the successor is complete, resumable state.

- :class:`AtomicDiskSaver`: Ignite's ``DiskSaver`` writing through :func:`scripts.checkpoint_files.atomic_save`
  (a kill at any instant leaves the old or the new file, never a truncated one), refusing non-finite tensors,
  and deferring the removals Ignite's ``Checkpoint`` asks for *before* it saves until *after* the successor is written.
- :class:`CheckpointSaver`: MONAI's ``CheckpointSaver`` on :class:`AtomicDiskSaver`; it also has a ``state_dict``
  (the best-metric bookkeeping) so that the best-model saver can be part of the resumable checkpoint, and with
  ``engine_key`` it saves the engine it is attached to (and its AMP ``GradScaler``) without a config cycle.
- :class:`ResumeCheckpointLoader`: MONAI's ``CheckpointLoader`` that loads the engine it is attached to, turns an
  unreadable or mismatching checkpoint into one message, and applies a changed ``learning_rate`` or ``--epochs``
  (the length of the learning-rate schedule) on resume.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader as _MonaiCheckpointLoader
from monai.handlers import CheckpointSaver as _MonaiCheckpointSaver
from scripts.checkpoint_files import atomic_save, non_finite_entries
from scripts.errors import ConfigError, DivergenceError, RunFolderError, UserError
from scripts.schedules import EpochSchedule

__all__ = ["AtomicDiskSaver", "CheckpointSaver", "ResumeCheckpointLoader"]

logger = logging.getLogger(__name__)


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` that writes atomically, removes old files only after the new one is complete, and
    refuses to save non-finite tensors.

    Ignite's ``Checkpoint`` calls ``remove(old)`` *before* ``__call__(new)``; here ``remove`` only marks the file, and
    ``__call__`` deletes the marked files once the new file is in place. Saving happens on rank ``save_on_rank`` only.

    Args:
        dirname: folder of the checkpoints (created).
        filename: a fixed file name (e.g. ``model.pt``) used instead of Ignite's generated one.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.filename = filename
        self.pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        if idist.get_rank() != self.save_on_rank:
            self.pending_removal.clear()
            return
        bad = non_finite_entries(checkpoint)
        if bad:
            raise DivergenceError(
                f"refusing to write {self.dirname / name}: {len(bad)} tensor(s) hold NaN or infinity "
                f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); the files already there are kept. "
                "Lower --learning_rate and resume from the last checkpoint (--resume True)."
            )
        atomic_save(checkpoint, self.dirname / name, **self.kwargs)
        for old in self.pending_removal:
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)
        self.pending_removal.clear()

    def remove(self, filename: str) -> None:
        self.pending_removal.append(self.filename or filename)


class CheckpointSaver(_MonaiCheckpointSaver):
    """MONAI ``CheckpointSaver`` writing through :class:`AtomicDiskSaver`, with a ``state_dict``.

    Same arguments as ``monai.handlers.CheckpointSaver``, plus:

    Args:
        engine_key: when given, the engine this handler is attached to (and its AMP ``GradScaler``, under
            ``"scaler"``) is added to ``save_dict`` under this key (e.g. ``"trainer"``); a config can then put the
            saver in the trainer's own handler list.

    ``state_dict()``/``load_state_dict()`` hold the best-metric bookkeeping (scores and file names of the key-metric
    checkpoints), so a resumed run compares its next validation with the best score so far instead of saving it as
    "new best". With ``n_saved=1`` the interval checkpoint left by an earlier (resumed) run is removed once the new
    one is written.
    """

    def __init__(self, *args: Any, engine_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key
        self._n_saved = kwargs.get("n_saved")
        for ckpt, fixed in (
            (self._final_checkpoint, kwargs.get("final_filename")),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, None),
        ):
            if ckpt is not None:
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed)

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.save_dict[self.engine_key] = engine
            engine.add_event_handler(Events.STARTED, self._add_scaler)
        super().attach(engine)

    def _add_scaler(self, engine: Engine) -> None:
        # MONAI's SupervisedTrainer creates its GradScaler in run(), after the handlers are attached
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            self.save_dict["scaler"] = engine.scaler

    def state_dict(self) -> dict:
        return dict(self._key_metric_checkpoint.state_dict()) if self._key_metric_checkpoint is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            super().load_state_dict(state_dict)

    def interval_completed(self, engine: Engine) -> None:
        super().interval_completed(engine)
        ckpt = self._interval_checkpoint
        if self._n_saved == 1 and ckpt is not None and ckpt.last_checkpoint and idist.get_rank() == 0:
            keep = Path(ckpt.last_checkpoint).name
            pattern = re.compile(
                rf"^{re.escape(ckpt.filename_prefix + '_' if ckpt.filename_prefix else '')}"
                rf"checkpoint_{ckpt.score_name}=\d+\.pt$"
            )
            for path in Path(self.save_dir).iterdir():
                if path.name != keep and pattern.match(path.name):
                    path.unlink(missing_ok=True)


class ResumeCheckpointLoader(_MonaiCheckpointLoader):
    """MONAI ``CheckpointLoader`` for resuming training.

    Same arguments as ``monai.handlers.CheckpointLoader``, plus:

    Args:
        engine_key: the engine this handler is attached to (and its AMP ``GradScaler``, under ``"scaler"``) is loaded
            from this key (e.g. ``"trainer"``).
        learning_rate: the configured learning rate; when it differs from the one the checkpoint was started with,
            the optimiser's learning rates (and the scheduler's base rates) are rescaled to it after loading, so
            that ``--resume True --learning_rate 1e-4`` continues a diverged run with the new rate. When equal,
            nothing changes (exact resume).
        follow_epochs: whether the configured schedule length replaces the checkpoint's (below).
        optional: entries of ``load_dict`` that a checkpoint of an earlier bundle version may lack (e.g.
            ``"time_budget"``, saved since v0.6.10): such an entry is left as constructed, with a log line, instead
            of refusing the checkpoint.

    The length of the learning-rate schedule follows the configuration, not the checkpoint: when the checkpoint's
    ``total_epochs`` differs from the configured one (``--epochs``), the schedule (a
    :class:`~scripts.schedules.EpochSchedule`) is set to the configured length with ``set_total_epochs``, which also
    makes the learning rate the one the configured schedule gives at the resumed epoch (its closed form). So
    ``--resume True --epochs 200`` extends a finished 100-epoch poly run with the decay of a 200-epoch run instead of
    training on at the learning rate 0 it ended with, and moves a step to its fraction of 200 epochs. With the same
    ``--epochs`` the checkpoint's schedule is kept as it is (exact resume). Other schedulers are loaded as saved.
    ``follow_epochs=False`` keeps the checkpoint's schedule whatever the configuration says: ``train.json`` sets it
    when a time budget is on (``FitEpochsToBudget``), whose checkpoints hold the schedule fitted to the budget,
    ``--epochs`` being only its first guess; the engine's ``max_epochs`` then becomes the checkpoint's plan (MONAI's
    loader would restore the configured one, and refuse a checkpoint whose epoch is beyond it).

    A checkpoint that cannot be read (truncated, not a checkpoint) or was made by another network configuration
    raises one :class:`~scripts.errors.UserError` naming the file.
    """

    def __init__(
        self,
        *args: Any,
        engine_key: str | None = "trainer",
        learning_rate: float | None = None,
        follow_epochs: bool = True,
        optional: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key
        self.learning_rate = learning_rate
        self.follow_epochs = follow_epochs
        self.optional = tuple(optional)

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.load_dict[self.engine_key] = engine
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        schedule = self.load_dict.get("lr_scheduler")
        configured = schedule.total_epochs if self.follow_epochs and isinstance(schedule, EpochSchedule) else None
        absent: dict[str, Any] = {}
        try:
            if not self.follow_epochs or any(key in self.load_dict for key in self.optional):
                saved = torch.load(self.load_path, map_location="cpu", weights_only=True)
                absent = {
                    key: self.load_dict.pop(key) for key in self.optional if key in self.load_dict and key not in saved
                }
                for key in absent:
                    self.logger.info(f"{self.load_path} holds no {key!r} entry (an earlier version): left as it is.")
                planned = saved.get(self.engine_key, {}).get("max_epochs") if self.engine_key else None
                if not self.follow_epochs and isinstance(planned, int) and planned >= 1:
                    # a time budget's plan, not --epochs (its first guess, which MONAI's loader would otherwise
                    # restore, refusing a checkpoint beyond it)
                    engine.state.max_epochs = planned
                del saved
            super().__call__(engine)
            scaler = getattr(engine, "scaler", None) if self.engine_key is not None else None
            if getattr(engine, "amp", False) and scaler is not None:  # created in run(), after attach
                saved = torch.load(self.load_path, map_location=self.map_location, weights_only=True).get("scaler")
                if saved:
                    scaler.load_state_dict(saved)
        except UserError:
            raise
        except (KeyError, ValueError) as e:
            missing = re.search(r"Key '([^']+)' from x is not found in y", str(e))  # Ignite's message for a missing key
            if isinstance(e, KeyError) or missing:
                key = missing.group(1) if missing else e.args[0]
                raise RunFolderError(
                    f"cannot resume from {self.load_path}: it holds no {key!r} entry (a checkpoint of an older version "
                    "of this bundle, or not a resumable checkpoint); start over with --overwrite True."
                ) from e
            raise ConfigError(f"cannot resume from {self.load_path}: {e}") from e
        except Exception as e:  # noqa: BLE001 - unreadable file: EOFError, UnpicklingError, zip reader errors...
            raise RunFolderError(
                f"cannot resume from {self.load_path}: the file cannot be read as a checkpoint "
                f"({type(e).__name__}: {e}). Delete it to resume from an older one, or start over with --overwrite True."
            ) from e
        finally:
            self.load_dict.update(absent)
        if configured is not None and schedule.total_epochs != configured:
            saved = "another length" if schedule.total_epochs is None else f"{schedule.total_epochs} epochs"
            schedule.set_total_epochs(configured)
            lrs = ", ".join(f"{lr:.3g}" for lr in schedule.get_last_lr())
            self.logger.info(
                f"Resumed with the configured schedule, {schedule.plan()} (the checkpoint's: {saved}); "
                f"learning rate now {lrs} at epoch {schedule.last_epoch}."
            )
        if self.learning_rate is not None:
            self._apply_learning_rate(float(self.learning_rate))

    def _apply_learning_rate(self, lr: float) -> None:
        optimizer = self.load_dict.get("optimizer")
        scheduler = self.load_dict.get("lr_scheduler")
        if optimizer is None:
            return
        for i, group in enumerate(optimizer.param_groups):
            initial = group.get("initial_lr", group["lr"])
            if initial == lr:
                continue
            group["lr"] = group["lr"] * lr / initial
            group["initial_lr"] = lr
            if scheduler is not None and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs[i] = lr
            if scheduler is not None and hasattr(scheduler, "_last_lr"):
                scheduler._last_lr[i] = group["lr"]
            self.logger.info(f"Resumed with learning_rate {lr:g} instead of the checkpoint's {initial:g}.")
