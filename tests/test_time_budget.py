"""FitEpochsToBudget: the arithmetic, the epochs and schedules it fits on a real Ignite engine, and bad arguments."""

from __future__ import annotations

import time

import pytest
import torch
from ignite.engine import Engine, Events
from torch.optim.lr_scheduler import StepLR

from scripts.handlers import FitEpochsToBudget
from scripts.handlers.time_budget import fit_epochs
from scripts.schedules import PolySchedule, StepSchedule


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
    sched = PolySchedule(optimizer(), 1000, power=1.0)
    engine, lrs = run_engine(budget_s=0.6, max_epochs=1000, scheduler=sched)  # ~0.06 s per epoch: ~10 epochs
    epochs = engine.state.epoch
    assert 5 <= epochs <= 12 and engine.state.max_epochs == epochs and sched.total_epochs == epochs
    # linear decay (power 1) over the fitted run: the last epoch trains at about 1/epochs of the initial rate
    assert lrs[0] == 1.0 and lrs[-1] == pytest.approx(1.0 / epochs, rel=0.35)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_a_short_plan_is_extended_to_fill_the_budget():
    sched = PolySchedule(optimizer(), 2, power=1.0)
    engine, lrs = run_engine(budget_s=0.6, max_epochs=2, scheduler=sched)
    assert engine.state.epoch >= 5 and sched.total_epochs == engine.state.epoch
    assert min(lrs) > 0  # a 2-epoch decay would have reached 0 at epoch 3


def test_step_milestones_keep_their_fraction_of_the_run():
    sched = StepSchedule(optimizer(), 1000, [750], gamma=0.1)  # 75% of 1000 planned epochs
    engine, lrs = run_engine(budget_s=0.6, max_epochs=1000, scheduler=sched)
    epochs = engine.state.epoch
    drop = [i for i, lr in enumerate(lrs) if lr < 1.0]
    assert drop, "the rate never dropped"
    # the first reduced epoch is about 75% into the fitted run (milestone m: epochs m+1.. run at 0.1)
    assert abs(drop[0] - 0.75 * epochs) <= 2 and lrs[-1] == pytest.approx(0.1)


def test_other_schedulers_and_no_budget_are_left_alone(caplog):
    sched = StepLR(optimizer(), step_size=100)
    engine, _ = run_engine(budget_s=0.3, max_epochs=1000, scheduler=sched)
    assert engine.state.epoch < 1000 and sched.step_size == 100  # epochs fitted, the scheduler untouched
    assert "StepLR does not know its length" in caplog.text
    engine, _ = run_engine(budget_s=None, max_epochs=3, scheduler=None)
    assert engine.state.epoch == 3  # disabled: the plan stands


class FakeClock:
    """Seconds that advance only when a training step says so: the budget's arithmetic without timing noise."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def budgeted_run(tmp_path, budget_s, max_epochs, scheduler=None, resume_from=None, kill_after=None, step_s=1.0):
    """A trainer whose iterations take ``step_s`` fake seconds (3 per epoch), with the budget handler and, as in
    train.json, a resume loader before it and a checkpoint of the handler, trainer and scheduler saved after it.
    Returns the engine, the handler and the checkpoint path."""
    from scripts.handlers import ResumeCheckpointLoader

    clock = FakeClock()

    def step(engine, batch):
        clock.now += step_s

    engine = Engine(step)
    handler = FitEpochsToBudget(budget_s, scheduler)
    handler.clock = clock
    to_save = {"time_budget": handler, "trainer": engine}
    if scheduler is not None:
        to_save["lr_scheduler"] = scheduler
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: scheduler.step())
    if resume_from is not None:
        ResumeCheckpointLoader(str(resume_from), dict(to_save), engine_key="trainer", follow_epochs=False).attach(engine)
    handler.attach(engine)
    ckpt = tmp_path / f"c{len(list(tmp_path.glob('c*.pt')))}.pt"
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: torch.save(
        {k: v.state_dict() for k, v in to_save.items()}, ckpt))
    if kill_after is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=kill_after), lambda e: e.terminate())
    engine.run(range(3), max_epochs=max_epochs)
    return engine, handler, ckpt


def test_the_clock_survives_a_resume(tmp_path):
    """A budgeted run killed after epoch 4 (12 of 30 s used) and resumed spends only the 18 s left: 10 epochs in
    all, as the uninterrupted run; the plan outgrew --epochs (2), which MONAI's loader alone would refuse."""
    whole, _, _ = budgeted_run(tmp_path, 30, max_epochs=2)
    assert whole.state.epoch == 10
    killed, handler, ckpt = budgeted_run(tmp_path, 30, max_epochs=2, kill_after=4)
    assert killed.state.epoch == 4 and torch.load(ckpt)["time_budget"]["used_s"] == 12.0
    resumed, handler, ckpt = budgeted_run(tmp_path, 30, max_epochs=2, resume_from=ckpt)
    assert handler.used_before_s == 12.0 and resumed.state.epoch == 10 and handler.used_s() == 30.0
    # resumed again, the finished run trains nothing more; with a larger budget it trains on (one epoch fits)
    again, handler, _ = budgeted_run(tmp_path, 30, max_epochs=2, resume_from=ckpt)
    assert again.state.epoch == 10 and handler.used_s() == 30.0
    longer, handler, _ = budgeted_run(tmp_path, 36, max_epochs=2, resume_from=ckpt)
    assert longer.state.epoch == 12 and handler.used_s() == 36.0


@pytest.mark.parametrize("saved_by", ["this version", "v0.7.1"])
def test_the_step_keeps_its_place_across_a_resume(tmp_path, saved_by):
    """The step schedule at 75% of --epochs 40 (milestone 30) fitted to a 30 s budget (10 epochs) drops the rate
    after epoch 7 or 8 (round(0.75 x 10)); killed after epoch 4 and resumed, it must drop at the same epoch, also
    from a checkpoint of v0.7.1 (PyTorch's MultiStepLR state, without the length; the fractions in the clock's)."""
    def run(**kw):
        sched = StepSchedule(optimizer(), 40, [30], gamma=0.1)
        engine, _, ckpt = budgeted_run(tmp_path, 30, 40, sched, **kw)
        return engine, sched, ckpt

    whole, sched, _ = run()
    assert whole.state.epoch == 10 and sorted(sched.milestones.elements()) == [8]
    _, _, ckpt = run(kill_after=4)
    if saved_by == "v0.7.1":
        saved = torch.load(ckpt)
        del saved["lr_scheduler"]["total_epochs"]
        saved["time_budget"]["fractions"] = [0.75]
        torch.save(saved, ckpt)
    resumed, sched, _ = run(resume_from=ckpt)
    assert resumed.state.epoch == 10 and sorted(sched.milestones.elements()) == [8]
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_a_checkpoint_without_the_clock_resumes_with_a_new_one(tmp_path, caplog):
    """Checkpoints of v0.6.x hold no ``time_budget`` entry: the loader leaves the handler as it is (a new clock)
    instead of refusing the checkpoint; an entry not declared optional is still required."""
    import logging

    from scripts.errors import RunFolderError
    from scripts.handlers import ResumeCheckpointLoader

    net = torch.nn.Linear(1, 1)
    torch.save({"model": net.state_dict()}, tmp_path / "old.pt")
    handler = FitEpochsToBudget(10)
    load_dict = {"model": torch.nn.Linear(1, 1), "time_budget": handler}
    loader = ResumeCheckpointLoader(str(tmp_path / "old.pt"), load_dict, engine_key=None, optional=["time_budget"])
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run([0])
    assert handler.used_before_s == 0.0 and "holds no 'time_budget' entry" in caplog.text
    assert torch.equal(load_dict["model"].weight, net.weight) and set(loader.load_dict) == {"model", "time_budget"}
    strict = ResumeCheckpointLoader(str(tmp_path / "old.pt"), {"model": torch.nn.Linear(1, 1), "time_budget": handler},
                                    engine_key=None)
    engine = Engine(lambda e, b: None)
    strict.attach(engine)
    with pytest.raises(RunFolderError, match="holds no 'time_budget' entry"):
        engine.run([0])


@pytest.mark.parametrize("state", [{}, {"used_s": -1.0}, {"used_s": "10"}, None, {"used_s": 1.0, "epoch_s": 0},
                                   {"used_s": 1.0, "epoch_s": "3"}])
def test_a_bad_clock_state_is_refused(state):
    with pytest.raises(ValueError, match="non-negative 'used_s'"):
        FitEpochsToBudget(10).load_state_dict(state)


def test_a_disabled_handler_keeps_the_clock_it_loaded():
    assert FitEpochsToBudget(None).state_dict() == {"used_s": 0.0, "epoch_s": None}
    handler = FitEpochsToBudget(None)  # a budgeted run resumed once without --time_budget_s
    handler.load_state_dict({"used_s": 12.0, "epoch_s": 3.0})
    assert handler.state_dict() == {"used_s": 12.0, "epoch_s": 3.0}
