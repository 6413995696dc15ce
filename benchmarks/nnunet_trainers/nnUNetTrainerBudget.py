"""nnU-Net v2 trainer that fits a wall-clock budget: ``nnUNetv2_train ... -tr nnUNetTrainerBudget``.

nnU-Net's shipped trainers run a fixed number of epochs (1000, or 1/5/10/... in the ``nnUNetTrainer_NepochsN``
variants) of 250 iterations; its learning rate follows a poly schedule over ``num_epochs``. A run cut off by a
timer would stop with the learning rate still high. This trainer keeps the poly schedule but sizes the run to the
budget: it starts from a guess, times each epoch, and after every epoch sets ``num_epochs`` (and the scheduler's
``max_steps``) to the number of epochs that end within the budget, so the learning rate decays to the end of the
budget. It can also skip the final validation of the validation cases (``perform_actual_validation``), which on a
CPU costs minutes of sliding-window prediction that the benchmark does not use.

Found by nnU-Net through ``nnUNet_extTrainer=<this folder>`` (nnunetv2 >= 2.6). Settings from the environment
(nnU-Net's command line has no room for trainer arguments):

- ``NNUNET_BUDGET_S``: training wall-clock budget in seconds (default 2700 = 45 min), counted from the start of
  ``run_training`` (data loader start-up included);
- ``NNUNET_ITERS_PER_EPOCH``: training iterations per epoch (default 25: short epochs make the fit fine-grained);
- ``NNUNET_VAL_ITERS``: validation iterations per epoch (default 5; nnU-Net: 50);
- ``NNUNET_S_PER_ITER``: the first guess of seconds per iteration, only used before the first epoch is timed
  (default 5, measured on a 2-core CPU with the 1 GB plan);
- ``NNUNET_SKIP_FINAL_VALIDATION``: ``1`` (default) skips the final validation.

The arithmetic (:func:`initial_epochs`, :func:`fit_epochs`, :func:`poly_lr`) needs no nnU-Net and is tested alone.
"""

from __future__ import annotations

import os
import time

__all__ = ["initial_epochs", "fit_epochs", "poly_lr", "budget_settings"]


def initial_epochs(budget_s: float, iters_per_epoch: int, s_per_iter: float) -> int:
    """Epochs that a budget holds at a guessed speed (at least 1)."""
    if budget_s <= 0 or iters_per_epoch < 1 or s_per_iter <= 0:
        raise ValueError(f"need budget_s > 0, iters_per_epoch >= 1, s_per_iter > 0; got {budget_s}, "
                         f"{iters_per_epoch}, {s_per_iter}.")
    return max(1, int(budget_s // (iters_per_epoch * s_per_iter)))


def fit_epochs(budget_s: float, elapsed_s: float, epochs_done: int, epoch_s: float) -> int:
    """Total epochs so that the run ends within ``budget_s``.

    Args:
        budget_s: the budget.
        elapsed_s: seconds used so far.
        epochs_done: epochs finished so far (>= 1).
        epoch_s: the expected duration of one more epoch.

    Returns:
        ``epochs_done`` plus the whole epochs that fit in what is left (never fewer than ``epochs_done``: the run
        stops now when nothing more fits).
    """
    if epochs_done < 1 or epoch_s <= 0:
        raise ValueError(f"need epochs_done >= 1 and epoch_s > 0, got {epochs_done}, {epoch_s}.")
    return epochs_done + max(0, int((budget_s - elapsed_s) // epoch_s))


def poly_lr(initial_lr: float, epoch: int, num_epochs: int, exponent: float = 0.9) -> float:
    """nnU-Net's poly schedule (``PolyLRScheduler``): the learning rate of ``epoch`` (0-based) of ``num_epochs``."""
    return initial_lr * (1 - epoch / num_epochs) ** exponent


def budget_settings(env: dict | None = None) -> dict:
    """The trainer's settings from the environment (module docstring)."""
    env = os.environ if env is None else env
    return {
        "budget_s": float(env.get("NNUNET_BUDGET_S", 2700)),
        "iters_per_epoch": int(env.get("NNUNET_ITERS_PER_EPOCH", 25)),
        "val_iters": int(env.get("NNUNET_VAL_ITERS", 5)),
        "s_per_iter": float(env.get("NNUNET_S_PER_ITER", 5)),
        "skip_final_validation": env.get("NNUNET_SKIP_FINAL_VALIDATION", "1") == "1",
    }


try:
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError:  # the arithmetic above stays importable (and testable) without nnU-Net
    nnUNetTrainer = None

if nnUNetTrainer is not None:

    class nnUNetTrainerBudget(nnUNetTrainer):
        """nnUNetTrainer whose number of epochs follows the wall-clock budget (module docstring)."""

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.budget = budget_settings()
            self.num_iterations_per_epoch = self.budget["iters_per_epoch"]
            self.num_val_iterations_per_epoch = self.budget["val_iters"]
            self.num_epochs = initial_epochs(self.budget["budget_s"], self.num_iterations_per_epoch,
                                             self.budget["s_per_iter"])

        def _fit_to_budget(self, start: float, epoch_times: list[float]) -> None:
            # the first epoch carries the start-up; later ones give the steady speed
            epoch_s = sum(epoch_times[1:]) / len(epoch_times[1:]) if len(epoch_times) > 1 else epoch_times[0]
            self.num_epochs = fit_epochs(self.budget["budget_s"], time.monotonic() - start, self.current_epoch, epoch_s)
            self.lr_scheduler.max_steps = self.num_epochs

        def run_training(self):
            # nnUNetTrainer.run_training with a loop bound that may change after every epoch
            start = time.monotonic()
            self.on_train_start()
            self.lr_scheduler.max_steps = self.num_epochs
            epoch_times: list[float] = []
            while self.current_epoch < self.num_epochs:
                t0 = time.monotonic()
                self.on_epoch_start()
                self.on_train_epoch_start()
                train_outputs = [self.train_step(next(self.dataloader_train))
                                 for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(train_outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [self.validation_step(next(self.dataloader_val))
                                   for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val_outputs)
                self.on_epoch_end()  # increments current_epoch
                epoch_times.append(time.monotonic() - t0)
                self._fit_to_budget(start, epoch_times)
                self.print_to_log_file(f"budget: {time.monotonic() - start:.0f} of {self.budget['budget_s']:.0f} s, "
                                       f"epochs planned {self.num_epochs}")
            self.on_train_end()

        def perform_actual_validation(self, save_probabilities: bool = False):
            if self.budget["skip_final_validation"]:
                self.print_to_log_file("final validation skipped (NNUNET_SKIP_FINAL_VALIDATION=1)")
                return
            super().perform_actual_validation(save_probabilities)
