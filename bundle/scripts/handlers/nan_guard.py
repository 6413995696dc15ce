"""Stop a diverging training run before the damage is applied or saved, with a message that says what to do."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import list_data_collate
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from monai.utils import CommonKeys
from scripts.checkpoint_files import NoCheckpointError, latest_checkpoint
from scripts.errors import DivergenceError

__all__ = ["StopOnNonFiniteLoss"]

logger = logging.getLogger(__name__)


def _value(loss: Any) -> float:
    if isinstance(loss, (list, tuple)):
        loss = loss[0]
    return float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)


class StopOnNonFiniteLoss:
    """Stops training, raising :class:`~scripts.errors.DivergenceError`, at the first sign of divergence.

    On a MONAI ``SupervisedTrainer`` the checks run at ``IterationEvents.BACKWARD_COMPLETED``, i.e. after the
    backward pass and *before the optimiser step*, so the step that would damage the weights is never applied:

    - the loss is NaN or infinite;
    - the loss exceeds ``explosion_factor`` times the reference loss (the mean loss of the first epoch; during the
      first epoch, the first iteration's loss) -- a finite explosion (e.g. a learning rate 1e6 drives the loss to
      1e18 without ever reaching infinity);
    - a gradient is NaN or infinite (not checked with AMP, where the ``GradScaler`` skips such steps itself).

    At the end of every epoch (before the checkpoint of that epoch is written) the weights are checked, and so is the
    loss of the epoch's last batch under the weights after the epoch's last step (one forward pass without
    gradients; batch-norm statistics and random states are restored), so a damaging last step is not saved. The
    message names the last resumable checkpoint in ``ckpt_dir`` (finite: non-finite tensors are never saved) and
    what to change. On an engine without MONAI's iteration events the loss is checked after each iteration.

    The reference loss is part of ``state_dict()``, so put this handler in the resumable checkpoint.

    Args:
        ckpt_dir: the run's checkpoint folder, for the message.
        explosion_factor: a loss above this multiple of the reference stops the run (``None``: never).
        output_transform: picks the loss out of ``engine.state.output`` when checked after an iteration.
    """

    def __init__(
        self,
        ckpt_dir: str | None = None,
        explosion_factor: float | None = 1e4,
        output_transform: Callable | None = None,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.explosion_factor = explosion_factor
        self.output_transform = output_transform or from_engine(["loss"], first=True)
        self.reference: float | None = None
        self._first_epoch: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference = state.get("reference")

    def attach(self, engine: Engine) -> None:
        if engine.has_event_handler(self.before_step) or engine.has_event_handler(self.after_iteration):
            return
        if IterationEvents.BACKWARD_COMPLETED in getattr(engine, "_allowed_events", []):
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.before_step)
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.after_iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def __call__(self, engine: Engine) -> None:
        self.after_iteration(engine)

    # -- checks ---------------------------------------------------------------------------------------------------
    def before_step(self, engine: Engine) -> None:
        self._check_loss(engine, _value(engine.state.output[CommonKeys.LOSS]), before_step=True)
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            return
        grads = [(n, p.grad) for n, p in engine.network.named_parameters() if p.grad is not None]
        if not grads or bool(torch.stack([torch.isfinite(g).all() for _, g in grads]).all()):  # one device sync
            return
        bad = [n for n, g in grads if not bool(torch.isfinite(g).all())]
        if bad:
            self._stop(
                engine, f"the gradients of {len(bad)} parameter(s) ({', '.join(bad[:3])}) are NaN or infinite", True
            )

    def after_iteration(self, engine: Engine) -> None:
        self._check_loss(engine, _value(self.output_transform(engine.state.output)), before_step=False)

    def _check_loss(self, engine: Engine, value: float, before_step: bool, after_last_step: bool = False) -> None:
        when = " after the epoch's last optimiser step" if after_last_step else ""
        if not math.isfinite(value):
            self._stop(engine, f"the training loss became {value}{when}", before_step)
        reference = (
            self.reference if self.reference is not None else (self._first_epoch[0] if self._first_epoch else None)
        )
        if (
            self.explosion_factor is not None
            and reference is not None
            and reference > 0
            and value > self.explosion_factor * reference
        ):
            self._stop(
                engine,
                f"the training loss exploded to {value:.4g}{when}, more than "
                f"{self.explosion_factor:g} times its first-epoch value {reference:.4g}",
                before_step,
            )
        if self.reference is None and not after_last_step:
            self._first_epoch.append(value)

    def epoch_completed(self, engine: Engine) -> None:
        if self.reference is None and self._first_epoch:
            self.reference = sum(self._first_epoch) / len(self._first_epoch)
        network = getattr(engine, "network", None)
        if network is None:
            return
        bad = [
            n for n, p in network.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())
        ]
        if bad:
            self._stop(engine, f"{len(bad)} weight tensor(s) ({', '.join(bad[:3])}) became NaN or infinite", False)
        loss = self._last_batch_loss(engine)
        if loss is not None:  # the epoch's last step is checked only here, before this epoch's checkpoint is written
            self._check_loss(engine, loss, before_step=False, after_last_step=True)

    @staticmethod
    def _last_batch_loss(engine: Engine) -> float | None:
        """The loss of the epoch's last batch under the weights after its optimiser step (batch-norm statistics and
        random states untouched), or ``None`` on an engine that is not a MONAI trainer."""
        needed = ("prepare_batch", "inferer", "loss_function", "network")
        if any(not hasattr(engine, a) for a in needed) or getattr(engine.state, "batch", None) is None:
            return None
        batch = engine.state.batch
        if isinstance(batch, list):  # MONAI decollates the batch after each iteration
            batch = list_data_collate(batch)
        batch = engine.prepare_batch(batch, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        network = engine.network
        buffers = [b.clone() for b in network.buffers()]
        rng = torch.get_rng_state()
        try:
            with torch.no_grad():
                value = _value(engine.loss_function(engine.inferer(inputs, network), targets).mean())
        finally:
            with torch.no_grad():
                for b, saved in zip(network.buffers(), buffers):
                    b.copy_(saved)
            torch.set_rng_state(rng)
        return value

    def _stop(self, engine: Engine, what: str, before_step: bool) -> None:
        engine.terminate()
        last = None
        if self.ckpt_dir:
            try:
                last = latest_checkpoint(self.ckpt_dir)
            except NoCheckpointError:
                last = None
        lr = ""
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            lr = f" (now {optimizer.param_groups[0]['lr']:g})"
        resume = (
            f"the last checkpoint, {Path(last).name} in {self.ckpt_dir}, is finite: resume from it with "
            f"--resume True and a lower --learning_rate{lr}"
            if last
            else f"no resumable checkpoint was written yet: train again with a lower --learning_rate{lr}"
        )
        raise DivergenceError(
            f"{what} at epoch {engine.state.epoch}, iteration {engine.state.iteration}; training stopped"
            f"{' before the optimiser step' if before_step else ''} and nothing was saved from this state. "
            f"{resume[0].upper()}{resume[1:]}. "
            "Other causes: images not normalised (check --intensity_max), labels outside the class map (run the "
            "integrity check)."
        )
