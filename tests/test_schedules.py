"""StepSchedule and PolySchedule: PyTorch's learning rates bit for bit, a new length, checkpoints old and new."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler
from torch.optim.lr_scheduler import MultiStepLR, PolynomialLR

from scripts.schedules import PolySchedule, StepSchedule


def optimizer(lrs=(1e-3, 3e-4)):
    """Adam with two parameter groups (each schedule must drive every group)."""
    return torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def rates(scheduler, epochs):
    """The learning rates of every group for each of ``epochs`` epochs, the scheduler stepped after each."""
    out = []
    for _ in range(epochs):
        out.append([g["lr"] for g in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def close(a, b):
    """Equal learning rates up to rounding (a closed form against a recursive one)."""
    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("epochs, milestones, gamma", [(30, [22], 0.1), (1500, [1000], 0.1), (12, [3, 6, 6], 0.5)])
def test_the_step_schedule_gives_multisteplrs_rates_bit_for_bit(epochs, milestones, gamma):
    ours = rates(StepSchedule(optimizer(), epochs, milestones, gamma=gamma), epochs + 3)
    torchs = rates(MultiStepLR(optimizer(), milestones, gamma=gamma), epochs + 3)
    assert ours == torchs and ours[-1] != ours[0]


@pytest.mark.parametrize("epochs, power", [(30, 0.9), (7, 1.0), (90, 2.0)])
def test_the_poly_schedule_gives_polynomiallrs_rates_bit_for_bit(epochs, power):
    ours = rates(PolySchedule(optimizer(), epochs, power=power), epochs + 3)
    torchs = rates(PolynomialLR(optimizer(), total_iters=epochs, power=power), epochs + 3)
    assert ours == torchs and ours[epochs] == [0.0, 0.0]


def test_monai_lr_schedule_handler_drives_it():
    sched = StepSchedule(optimizer(), 6, [4])
    seen = []
    engine = Engine(lambda e, b: sched.optimizer.step())
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(sched.optimizer.param_groups[0]["lr"]))
    LrScheduleHandler(sched, print_lr=False).attach(engine)
    engine.run([0], max_epochs=6)
    assert seen == [1e-3] * 4 + [pytest.approx(1e-4)] * 2 and sched.last_epoch == 6


def test_a_new_length_from_the_start_is_the_closed_form_of_that_schedule():
    # a 4-epoch step run (after epoch 3) extended to 8 epochs after epoch 4: the step moves to 6 and the rate is
    # back at 1e-3, as if the run had been configured with 8 epochs; then it steps as the 8-epoch run does
    sched = StepSchedule(optimizer(), 4, [3])
    rates(sched, 4)
    sched.set_total_epochs(8)
    assert sched.total_epochs == 8 and sorted(sched.milestones.elements()) == [6]
    assert sched.get_last_lr() == [1e-3, 3e-4] == [g["lr"] for g in sched.optimizer.param_groups]
    assert close(rates(sched, 4), rates(StepSchedule(optimizer(), 8, [6]), 8)[4:])
    # a finished 4-epoch poly decay (rate 0) extended to 8: the 8-epoch decay at epoch 4, not 0
    poly = PolySchedule(optimizer(), 4, power=0.9)
    rates(poly, 4)
    assert poly.get_last_lr() == [0.0, 0.0]
    poly.set_total_epochs(8)
    assert poly.total_epochs == poly.total_iters == 8
    assert poly.get_last_lr() == pytest.approx([1e-3 * 0.5 ** 0.9, 3e-4 * 0.5 ** 0.9])
    assert close(rates(poly, 5), rates(PolySchedule(optimizer(), 8, power=0.9), 9)[4:])


def test_keep_past_keeps_the_rates_so_far_and_fits_the_rest():
    # the step at 75% of 40 epochs (30), refitted to 10 epochs after epoch 4: round(7.5) = 8, the rate unchanged
    sched = StepSchedule(optimizer(), 40, [30])
    rates(sched, 4)
    sched.set_total_epochs(10, keep_past=True)
    assert sorted(sched.milestones.elements()) == [8] and sched.get_last_lr() == [1e-3, 3e-4]
    # a fit shorter than the epochs done: the step comes after the next epoch, not in the past
    sched.set_total_epochs(4, keep_past=True)
    assert sorted(sched.milestones.elements()) == [5]
    rates(sched, 2)  # epochs 5 and 6: the step has acted; a later fit leaves it where it was
    sched.set_total_epochs(40, keep_past=True)
    assert sorted(sched.milestones.elements()) == [5] and sched.get_last_lr() == pytest.approx([1e-4, 3e-5])
    # the poly decay continues from the current rate (PyTorch's recursive form) and reaches 0 with the fitted run
    poly = PolySchedule(optimizer(), 1000, power=1.0)
    before = rates(poly, 3)[-1]
    now = poly.get_last_lr()
    poly.set_total_epochs(10, keep_past=True)
    assert poly.get_last_lr() == now and now[0] < before[0]
    rest = rates(poly, 7)  # epochs 4..10 of the fitted run (last_epoch 3..9), then last_epoch 10: rate 0
    assert all(a[0] > b[0] for a, b in zip(rest, rest[1:])) and rest[-1][0] > 0 and poly.get_last_lr() == [0.0, 0.0]


def test_state_dict_round_trip_and_torch_checkpoints():
    sched = StepSchedule(optimizer(), 8, [6])
    rates(sched, 3)
    sched.set_total_epochs(12, keep_past=True)
    state = sched.state_dict()
    assert state["total_epochs"] == 12 and "fractions" not in state  # the fractions come from the configuration
    other = StepSchedule(optimizer(), 8, [6])
    other.load_state_dict(state)
    assert other.total_epochs == 12 and sorted(other.milestones.elements()) == [9] and other.last_epoch == 3
    assert other.fractions == [0.75]
    # PyTorch's MultiStepLR state (checkpoints of v0.7.1 and earlier) records no length: the configured one when
    # its milestones are the configured ones, else unknown
    torch_state = MultiStepLR(optimizer(), [6]).state_dict()
    same = StepSchedule(optimizer(), 8, [6])
    same.load_state_dict(torch_state)
    assert same.total_epochs == 8
    moved = StepSchedule(optimizer(), 8, [6])
    moved.load_state_dict(MultiStepLR(optimizer(), [3]).state_dict())
    assert moved.total_epochs is None and sorted(moved.milestones.elements()) == [3]
    # PyTorch's PolynomialLR state is PolySchedule's
    poly = PolySchedule(optimizer(), 8)
    poly.load_state_dict(PolynomialLR(optimizer(), total_iters=5).state_dict())
    assert poly.total_epochs == 5 and set(poly.state_dict()) == set(PolynomialLR(optimizer()).state_dict())


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_a_bad_length_is_refused(bad):
    with pytest.raises(ValueError, match="total_epochs must be a whole number of epochs >= 1"):
        StepSchedule(optimizer(), bad, [1])
    with pytest.raises(ValueError, match="total_epochs must be a whole number of epochs >= 1"):
        PolySchedule(optimizer(), 5).set_total_epochs(bad)
