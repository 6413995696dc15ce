"""FitEpochsToBudget: the arithmetic, the epochs and schedules it fits on a real Ignite engine, and bad arguments."""

from __future__ import annotations

import time

import pytest
import torch
from ignite.engine import Engine, Events
from torch.optim.lr_scheduler import MultiStepLR, PolynomialLR, StepLR

from scripts.handlers import FitEpochsToBudget
from scripts.handlers.time_budget import fit_epochs


@pytest.mark.parametrize(
    "budget, elapsed, done, epoch_s, expected",
    [
        (100, 10, 1, 10, 10),  # 90 s left: 9 more epochs of 10 s
        (100, 10, 1, 11, 9),  # 8 more (88 s), not 9
        (100, 100, 5, 10, 5),  # nothing left: stop now
        (100, 150, 5, 10, 5),  # over budget: never fewer than done
        (0.3, 0.0, 1, 0.1, 4),  # 3 more, despite 0.3 / 0.1 = 2.9999999999999996
    ],
)
def test_fit_epochs(budget, elapsed, done, epoch_s, expected):
    assert fit_epochs(budget, elapsed, done, epoch_s) == expected


@pytest.mark.parametrize("done, epoch_s", [(0, 1.0), (1, 0.0), (1, float("nan"))])
def test_fit_epochs_refuses_bad_arguments(done, epoch_s):
    with pytest.raises(ValueError, match="epochs_done >= 1 and epoch_s > 0"):
        fit_epochs(10, 0, done, epoch_s)


@pytest.mark.parametrize("budget", [0, -5, "60", float("nan")])
def test_handler_refuses_a_bad_budget(budget):
    with pytest.raises(ValueError, match="budget_s must be a positive number"):
        FitEpochsToBudget(budget)


def run_engine(budget_s, max_epochs, scheduler, step_s=0.02, steps=3):
    """An engine whose epochs take about steps * step_s seconds, the scheduler stepped per epoch (as the bundle's
    LrScheduleHandler does), the budget handler attached after it."""

    def step(engine, batch):
        time.sleep(step_s)
        return 0.0

    engine = Engine(step)
    lrs = []
    if scheduler is not None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: lrs.append(scheduler.optimizer.param_groups[0]["lr"]))
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: scheduler.step())
    FitEpochsToBudget(budget_s, scheduler).attach(engine)
    engine.run(range(steps), max_epochs=max_epochs)
    return engine, lrs


def optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_a_long_plan_is_cut_to_the_budget_and_the_poly_decay_ends_with_it():
    sched = PolynomialLR(optimizer(), total_iters=1000, power=1.0)
    engine, lrs = run_engine(budget_s=0.6, max_epochs=1000, scheduler=sched)  # ~0.06 s per epoch: ~10 epochs
    epochs = engine.state.epoch
    assert 5 <= epochs <= 12 and engine.state.max_epochs == epochs and sched.total_iters == epochs
    # linear decay (power 1) over the fitted run: the last epoch trains at about 1/epochs of the initial rate
    assert lrs[0] == 1.0 and lrs[-1] == pytest.approx(1.0 / epochs, rel=0.35)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_a_short_plan_is_extended_to_fill_the_budget():
    sched = PolynomialLR(optimizer(), total_iters=2, power=1.0)
    engine, lrs = run_engine(budget_s=0.6, max_epochs=2, scheduler=sched)
    assert engine.state.epoch >= 5 and sched.total_iters == engine.state.epoch
    assert min(lrs) > 0  # a 2-epoch decay would have reached 0 at epoch 3


def test_multistep_milestones_keep_their_fraction_of_the_run():
    sched = MultiStepLR(optimizer(), milestones=[750], gamma=0.1)  # 75% of 1000 planned epochs
    engine, lrs = run_engine(budget_s=0.6, max_epochs=1000, scheduler=sched)
    epochs = engine.state.epoch
    drop = [i for i, lr in enumerate(lrs) if lr < 1.0]
    assert drop, "the rate never dropped"
    # the first reduced epoch is about 75% into the fitted run (milestone m: epochs m+1.. run at 0.1)
    assert abs(drop[0] - 0.75 * epochs) <= 2 and lrs[-1] == pytest.approx(0.1)


def test_other_schedulers_and_no_budget_are_left_alone():
    sched = StepLR(optimizer(), step_size=100)
    engine, _ = run_engine(budget_s=0.3, max_epochs=1000, scheduler=sched)
    assert engine.state.epoch < 1000 and sched.step_size == 100  # epochs fitted, the scheduler untouched
    engine, _ = run_engine(budget_s=None, max_epochs=3, scheduler=None)
    assert engine.state.epoch == 3  # disabled: the plan stands
