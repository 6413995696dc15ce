"""Evaluation report, non-finite loss guard and checkpoint discovery, on a real Ignite engine."""

import csv
import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler, from_engine

from scripts.checkpoint_files import atomic_save, latest_checkpoint
from scripts.handlers import SegmentationReport, StopOnNonFiniteLoss
from scripts.metrics import SegmentationConfusionMatrix


def _eval_engine(batches):
    def step(engine, batch):
        return {"pred": batch["pred"], "label": batch["label"]}

    engine = Engine(step)
    IgniteMetricHandler(
        SegmentationConfusionMatrix(num_classes=2), output_transform=from_engine(["pred", "label"]), save_details=True
    ).attach(engine, "val_mean_iou")
    return engine


def test_report_writes_csv_json_and_names(tmp_path):
    truth = torch.zeros(1, 1, 2, 2)
    truth[0, 0, 0, 0] = 1
    batches = [
        {"image": MetaTensor(torch.zeros(1, 1, 2, 2), meta={"filename_or_obj": ["a.png"]}), "pred": torch.zeros(1, 1, 2, 2), "label": torch.zeros(1, 1, 2, 2)},
        {"image": MetaTensor(torch.zeros(1, 1, 2, 2), meta={"filename_or_obj": ["b.png"]}), "pred": torch.zeros(1, 1, 2, 2), "label": truth},
    ]
    engine = _eval_engine(batches)
    report = SegmentationReport(str(tmp_path), ["bg", "fg"], metric_name="val_mean_iou")
    report.attach(engine)
    engine.run(batches)
    data = json.loads((tmp_path / "metrics.json").read_text())
    # accumulated: class bg tp 7 fp 1 -> 7/8; class fg tp 0 -> 0
    assert data["per_class"]["bg"]["accumulated"]["iou"] == pytest.approx(0.875)
    assert data["per_class"]["fg"]["accumulated"]["iou"] == 0.0
    assert data["mean_iou"] == pytest.approx(0.4375)
    assert data["per_image_mean_iou"] == pytest.approx(0.6875)
    assert data["confusion_matrix"] == [[7, 0], [1, 0]]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["class"] for r in rows] == ["bg", "fg", "mean"]
    per_image = list(csv.DictReader(open(tmp_path / "metrics_per_image.csv")))
    assert [r["image"] for r in per_image] == ["a.png", "b.png"]
    assert float(per_image[1]["mean_iou"]) == pytest.approx(0.375)
    assert "fg" in report.table(data)


def test_report_without_metric_details_says_what_to_attach(tmp_path):
    engine = Engine(lambda e, b: b)
    SegmentationReport(str(tmp_path), ["a", "b"], metric_name="missing").attach(engine)
    with pytest.raises(RuntimeError, match="save_details=True"):
        engine.run([1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_message(bad):
    losses = iter([1.0, bad, 0.5])
    # MONAI trainers decollate: the output is a list of per-sample dicts
    engine = Engine(lambda e, b: [{"loss": torch.tensor(next(losses))}])
    StopOnNonFiniteLoss().attach(engine)
    with pytest.raises(FloatingPointError, match="lower --learning_rate"):
        engine.run([0, 1, 2], max_epochs=1)
    assert engine.state.iteration == 2


def test_finite_loss_runs_through():
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.1)})
    StopOnNonFiniteLoss().attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    assert engine.state.iteration == 6


def test_latest_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="run training first"):
        latest_checkpoint(str(tmp_path))
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"")
    (tmp_path / "model.pt").write_bytes(b"")
    assert latest_checkpoint(str(tmp_path)).endswith("checkpoint_epoch=10.pt")


# --- reliability (issue 10): crash-safe checkpoints, exact resume, divergence, run folder, loaders ---------------

import numpy as np
from ignite.engine import Events
from ignite.handlers import Checkpoint
from monai.engines import SupervisedTrainer

from scripts.errors import DataLoadingError, DivergenceError, RunFolderError, user_error_in
from scripts.handlers import (AtomicDiskSaver, CheckpointSaver, EarlyStopHandler, FailOnEmptyEpoch, RandomStates,
                              ResumeCheckpointLoader)
from scripts.schedules import PolySchedule, StepSchedule
from scripts.workflows import prepare_run_folder


class _Box:
    """A checkpointable tensor holder."""

    def __init__(self, value):
        self.value = torch.tensor(value)

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_atomic_save_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    atomic_save({"a": torch.ones(3)}, tmp_path / "x.pt")
    atomic_save({"a": torch.zeros(3)}, tmp_path / "x.pt")
    assert torch.equal(torch.load(tmp_path / "x.pt")["a"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_old_checkpoint_is_removed_only_after_its_successor_is_written(tmp_path):
    # Ignite's Checkpoint asks to remove checkpoint_epoch=1.pt *before* writing epoch 2; when that write fails (here:
    # a non-finite tensor, refused), epoch 1 must still be there -- the old way (DiskSaver) deleted it first
    box = _Box([1.0])
    engine = Engine(lambda e, b: None)
    ckpt = Checkpoint({"box": box, "other": _Box([0.0])}, AtomicDiskSaver(tmp_path), n_saved=1,
                      score_function=lambda e: e.state.epoch, score_name="epoch", filename_prefix="")
    engine.add_event_handler(Events.EPOCH_COMPLETED, ckpt)
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: setattr(box, "value", torch.tensor([float("nan")])))
    with pytest.raises(DivergenceError, match="refusing to write.*box/value"):
        engine.run([0], max_epochs=2)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]
    assert torch.load(tmp_path / "checkpoint_epoch=1.pt")["box"]["value"].item() == 1.0


def _key_metric_engine(scores):
    engine = Engine(lambda e, b: None)
    it = iter(scores)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(val=next(it)))
    return engine


def test_resumed_best_model_saver_keeps_a_better_model(tmp_path):
    # case 3: best 0.0854 at epoch 3; the run is resumed, epoch 4 scores 0.0764: model.pt must keep epoch 3's model
    net = torch.nn.Linear(2, 1)
    saver = CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="val",
                            key_metric_filename="model.pt")
    engine = _key_metric_engine([0.05, 0.0854])
    saver.attach(engine)
    engine.run([0], max_epochs=2)
    best = {k: v.clone() for k, v in net.state_dict().items()}
    state = saver.state_dict()
    assert state["_saved"][0][0] == pytest.approx(0.0854)

    with torch.no_grad():
        net.weight.add_(1.0)  # the resumed run's weights differ
    resumed = CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="val",
                              key_metric_filename="model.pt")
    resumed.load_state_dict(state)
    engine = _key_metric_engine([0.0764])
    resumed.attach(engine)
    engine.run([0], max_epochs=1)
    saved = torch.load(tmp_path / "model.pt")
    assert all(torch.equal(saved[k], best[k]) for k in best), "a worse score replaced the best model"


def _trainer(loss_values, lr=0.1, guard=None):
    net = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.ones_(net.weight)
    values = iter(loss_values)

    def loss_fn(pred, target):
        v = next(values)
        return (pred - target).pow(2).mean() * 0 + v if isinstance(v, float) and not np.isfinite(v) else (pred - target).pow(2).mean() * v

    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=[{"image": torch.ones(1, 2), "label": torch.zeros(1, 1)}] * 2,
                                network=net, optimizer=torch.optim.SGD(net.parameters(), lr=lr), loss_function=loss_fn,
                                train_handlers=[guard or StopOnNonFiniteLoss()])
    return trainer, net


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_before_the_optimiser_step(bad, tmp_path):
    # case 6: the old guard checked after the iteration, i.e. after optimizer.step() had applied the damage
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"")
    trainer, net = _trainer([1.0, bad], guard=StopOnNonFiniteLoss(ckpt_dir=str(tmp_path)))
    with pytest.raises(DivergenceError, match=r"before the optimiser step.*checkpoint_epoch=1\.pt.*--resume True") as err:
        trainer.run()
    after_first = 1.0 - 0.1 * 4.0  # loss (w . x)^2 with w = x = (1, 1): gradient 2 * 2 * x = 4 per weight
    assert torch.allclose(net.weight, torch.full((1, 2), after_first)), "the second step must not be applied"
    assert trainer.state.iteration == 2
    assert isinstance(err.value, FloatingPointError)


def test_finite_explosion_stops_the_run():
    # case 6b: lr 1e6 drove the loss to 7.5e18 without a NaN and the run ended with rc 0; 1e4 x the first-epoch loss
    # stops it now (here the loss scale jumps 1e5 x)
    trainer, net = _trainer([1.0, 1.0, 1.0, 1.0, 1e5], lr=0.0)  # (the third: the epoch-end check of the last step)
    with pytest.raises(DivergenceError, match="exploded"):
        trainer.run()
    assert trainer.state.iteration == 4 and trainer.state.epoch == 2


def test_damaging_last_step_of_an_epoch_is_not_saved():
    # case 6: with the damage done by an epoch's last step, the old guard fired only in the next epoch -- after the
    # epoch's checkpoint had saved the damaged weights. The loss under the new weights is checked at the epoch's end.
    trainer, _ = _trainer([1.0, 1.0, float("nan")])
    saved = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.epoch))  # a checkpoint saver
    with pytest.raises(DivergenceError, match="after the epoch's last optimiser step at epoch 1"):
        trainer.run()
    assert saved == []


def test_guard_state_is_checkpointable():
    guard = StopOnNonFiniteLoss()
    trainer, _ = _trainer([1.0, 3.0, 1.0, 1.0, 1.0, 1.0], lr=0.0, guard=guard)
    trainer.run()
    assert guard.state_dict() == {"reference": pytest.approx(8.0)}  # first epoch: pred 2, losses 4 * 1 and 4 * 3
    other = StopOnNonFiniteLoss()
    other.load_state_dict(guard.state_dict())
    assert other.reference == guard.reference


def test_random_states_round_trip_covers_nested_transform_generators():
    from monai.transforms import Compose, Rand2DElasticd, RandFlipd, RandGaussianNoised
    from scripts.handlers.random_states import transform_generators

    compose = Compose([RandFlipd("image", prob=0.5), Rand2DElasticd("image", spacing=(8, 8), magnitude_range=(1, 2), prob=1.0),
                       RandGaussianNoised("image", prob=1.0)])
    compose.set_random_state(seed=3)
    assert len(transform_generators(compose)) >= 5, "Rand2DElasticd keeps generators in its inner transforms"
    states = RandomStates(compose)
    data = {"image": torch.rand(1, 16, 16)}
    saved = states.state_dict()
    first = [compose(dict(data))["image"] for _ in range(3)] + [torch.rand(2), np.random.rand(2)]
    states.load_state_dict(saved)
    again = [compose(dict(data))["image"] for _ in range(3)] + [torch.rand(2), np.random.rand(2)]
    for a, b in zip(first, again):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    buffer = __import__("io").BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)  # loads the way CheckpointLoader loads


def test_random_states_keep_their_length_when_a_transform_gives_its_inner_croppers_new_generators():
    """RandSpatialCropSamplesd (section patches: recipes/shipped.json) reseeds its inner croppers with new generators
    on its first call: a checkpoint saved after calls must load into the fresh transforms of a resumed run, and the
    resumed crops must be the uninterrupted run's."""
    from monai.transforms import Compose, RandSpatialCropSamplesd

    def pipeline():
        compose = Compose([RandSpatialCropSamplesd("image", roi_size=(4, 4), num_samples=2, random_size=False)])
        compose.set_random_state(seed=3)
        return compose

    data = {"image": torch.arange(256.0).reshape(1, 16, 16)}
    run = pipeline()
    run(dict(data))
    saved = RandomStates(run).state_dict()
    expected = [p["image"] for p in run(dict(data))]
    resumed = pipeline()  # a new process: nothing called yet
    RandomStates(resumed).load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip([p["image"] for p in resumed(dict(data))], expected))


def test_early_stop_state_is_checkpointable():
    handler = EarlyStopHandler(patience=3, score_function=lambda e: 0.5)
    trainer = Engine(lambda e, b: None)
    handler.set_trainer(trainer)
    evaluator = Engine(lambda e, b: None)
    handler.attach(evaluator)
    evaluator.run([0], max_epochs=2)
    assert handler.state_dict()["counter"] == 1 and handler.state_dict()["best_score"] == 0.5
    other = EarlyStopHandler(patience=3, score_function=lambda e: 0.5)
    other.set_trainer(trainer)
    other.load_state_dict(handler.state_dict())
    assert other._handler.counter == 1


def test_resume_loader_names_an_unreadable_file(tmp_path):
    path = tmp_path / "checkpoint_epoch=2.pt"
    path.write_bytes(b"")  # what a kill during the old, non-atomic write left
    loader = ResumeCheckpointLoader(str(path), {"model": torch.nn.Linear(1, 1)}, engine_key=None)
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    with pytest.raises(RunFolderError, match=r"checkpoint_epoch=2\.pt: the file cannot be read|cannot resume from .*checkpoint_epoch=2\.pt"):
        engine.run([0])


def test_resume_loader_applies_a_new_learning_rate(tmp_path):
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e12)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5], gamma=0.1)
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()}, tmp_path / "c.pt")
    opt2 = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[5], gamma=0.1)
    loader = ResumeCheckpointLoader(str(tmp_path / "c.pt"), {"model": net, "optimizer": opt2, "lr_scheduler": sched2},
                                    engine_key=None, learning_rate=1e-3)
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    engine.run([0])
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3) and sched2.base_lrs == [1e-3]


def _saved_schedule(tmp_path, make_scheduler, epochs_done):
    """A checkpoint of an Adam 1e-3 run whose scheduler was stepped ``epochs_done`` times, and a fresh optimiser."""
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = make_scheduler(opt, "saved")
    for _ in range(epochs_done):
        opt.step()
        sched.step()
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()},
               tmp_path / "c.pt")
    return net, opt.param_groups[0]["lr"], torch.optim.Adam(net.parameters(), lr=1e-3)


def _resume(tmp_path, net, opt, sched, follow_epochs=True):
    loader = ResumeCheckpointLoader(str(tmp_path / "c.pt"), {"model": net, "optimizer": opt, "lr_scheduler": sched},
                                    engine_key=None, follow_epochs=follow_epochs)
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    engine.run([0])


#: the schedules as configured and as a checkpoint holds them: this version's, or PyTorch's (v0.7.1 and earlier)
SAVED_BY = ["bundle", "torch"]


def _poly(saved_by, saved_epochs, configured_epochs):
    def make(opt, which):
        if which == "saved" and saved_by == "torch":
            return torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=saved_epochs, power=0.9)
        return PolySchedule(opt, saved_epochs if which == "saved" else configured_epochs, power=0.9)
    return make


def _step(saved_by, saved_epochs, configured_epochs):
    """train.json's step schedule: after 75% of the epochs (``int``)."""
    def make(opt, which):
        epochs = saved_epochs if which == "saved" else configured_epochs
        if which == "saved" and saved_by == "torch":
            return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(0.75 * epochs)], gamma=0.1)
        return StepSchedule(opt, epochs, [int(0.75 * epochs)], gamma=0.1)
    return make


@pytest.mark.parametrize("saved_by", SAVED_BY)
def test_resume_with_more_epochs_extends_a_finished_poly_decay(tmp_path, saved_by):
    # a 4-epoch poly run ends at lr 0; resumed with --epochs 8 it used to train on at lr 0 (the checkpoint's length)
    poly = _poly(saved_by, 4, 8)
    net, saved_lr, opt = _saved_schedule(tmp_path, poly, epochs_done=4)
    assert saved_lr == 0.0
    sched = poly(opt, "configured")
    _resume(tmp_path, net, opt, sched)
    expected = 1e-3 * (1 - 4 / 8) ** 0.9  # the 8-epoch decay at epoch 4: 5.36e-4
    assert sched.total_epochs == 8 and sched.last_epoch == 4
    assert opt.param_groups[0]["lr"] == pytest.approx(expected) and sched.get_last_lr() == [pytest.approx(expected)]
    opt.step()
    sched.step()  # the decay goes on from there, not from 0
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 5 / 8) ** 0.9)


@pytest.mark.parametrize("saved_by", SAVED_BY)
@pytest.mark.parametrize("schedule", [_poly, _step])
def test_resume_with_the_same_epochs_keeps_the_saved_schedule_exactly(tmp_path, saved_by, schedule):
    make = schedule(saved_by, 10, 10)
    net, saved_lr, opt = _saved_schedule(tmp_path, make, epochs_done=9)
    sched = make(opt, "configured")
    _resume(tmp_path, net, opt, sched)
    # the recursive form's value, bit for bit (the closed form differs in the last bits)
    assert opt.param_groups[0]["lr"] == saved_lr and sched.total_epochs == 10 and sched.last_epoch == 9
    reference = make(torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=1e-3), "saved")
    for _ in range(10):
        reference.optimizer.step()
        reference.step()
    opt.step()
    sched.step()
    assert sched.get_last_lr() == reference.get_last_lr()  # and it goes on as the uninterrupted run


@pytest.mark.parametrize("saved_by", SAVED_BY)
def test_resume_with_more_epochs_moves_the_learning_rate_step(tmp_path, saved_by):
    # train.json's step at 75% of the epochs: 4 epochs -> after epoch 3; resumed with --epochs 8 -> after epoch 6
    step = _step(saved_by, 4, 8)
    net, saved_lr, opt = _saved_schedule(tmp_path, step, epochs_done=4)
    assert saved_lr == pytest.approx(1e-4)
    sched = step(opt, "configured")
    _resume(tmp_path, net, opt, sched)
    assert sorted(sched.milestones.elements()) == [6] and opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert sched.total_epochs == 8
    for epoch in (5, 6):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 if epoch < 6 else 1e-4)


def test_a_budgeted_resume_keeps_the_checkpoints_fitted_schedule(tmp_path):
    # with --time_budget_s the checkpoint holds the decay fitted to the budget (55 epochs) and --epochs is only the
    # first guess (53): the guess must not replace the fitted schedule on resume (follow_epochs=False)
    poly = _poly("bundle", 55, 53)
    net, saved_lr, opt = _saved_schedule(tmp_path, poly, epochs_done=40)
    sched = poly(opt, "configured")
    _resume(tmp_path, net, opt, sched, follow_epochs=False)
    assert sched.total_epochs == 55 and opt.param_groups[0]["lr"] == saved_lr


@pytest.mark.parametrize("budget", [None, 2700])
def test_train_json_resumes_with_the_configured_epochs_unless_a_budget_is_on(tmp_path, budget):
    """train.json's loader and schedule, resuming a 4-epoch run (the step after epoch 3) with --epochs 8: the step
    moves to after epoch 6 and the rate is back at 1e-3, and the run trains to epoch 8; with --time_budget_s the
    checkpoint's plan stays (4 epochs, the step passed). The checkpoint holds no clock (as before v0.6.10)."""
    from monai.bundle import ConfigParser

    from bundle_runner import CONFIGS

    def config(epochs, **overrides):
        parser = ConfigParser(ConfigParser.load_config_files(str(CONFIGS / "train.json")))
        parser.update({"epochs": epochs, "network": "$torch.nn.Linear(1, 1)", "device": "cpu", **overrides,
                       "resumable": {"model": "@network", "optimizer": "@optimizer", "lr_scheduler": "@lr_scheduler",
                                     "time_budget": "@train#handlers#5"}})
        return parser

    first = config(4)
    opt, sched = first.get_parsed_content("optimizer"), first.get_parsed_content("lr_scheduler")
    trainer = Engine(lambda e, b: opt.step())
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    trainer.run([0], max_epochs=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    torch.save({"model": first.get_parsed_content("network").state_dict(), "optimizer": opt.state_dict(),
                "lr_scheduler": sched.state_dict(), "trainer": trainer.state_dict()}, tmp_path / "c.pt")

    resumed = config(8, resume=True, resume_ckpt=str(tmp_path / "c.pt"), time_budget_s=budget)
    engine = Engine(lambda e, b: None)
    resumed.get_parsed_content("train#handlers#0").attach(engine)
    engine.run([0], max_epochs=8)
    sched = resumed.get_parsed_content("lr_scheduler")
    if budget is None:
        assert engine.state.epoch == 8 and sched.total_epochs == 8 and sorted(sched.milestones.elements()) == [6]
        assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    else:
        assert engine.state.epoch == 4 and sched.total_epochs == 4 and sorted(sched.milestones.elements()) == [3]
        assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert resumed.get_parsed_content("train#handlers#5").used_before_s == 0.0  # a new clock


def test_run_folder_refuses_a_second_run_and_archives_with_overwrite(tmp_path):
    # case 5: a second run into the same folder silently overwrote model.pt and kept the first run's checkpoints
    models, logs = tmp_path / "models", tmp_path / "logs"
    models.mkdir()
    logs.mkdir()
    (models / "model.pt").write_bytes(b"1")
    (models / "checkpoint_epoch=5.pt").write_bytes(b"1")
    (models / ".model.pt.123.tmp").write_bytes(b"partial")
    (logs / "events.out.tfevents.1.host.1.0").write_bytes(b"1")
    with pytest.raises(RunFolderError) as err:
        prepare_run_folder(str(models), str(logs))
    message = str(err.value)
    assert "\n" not in message and "--resume True" in message and "--overwrite True" in message
    assert not (models / ".model.pt.123.tmp").exists(), "a temporary file left by a kill is removed"
    archive = prepare_run_folder(str(models), str(logs), overwrite=True)
    assert archive and not list(models.iterdir()) and not list(logs.iterdir())
    assert sorted(p.relative_to(archive).as_posix() for p in Path(archive).rglob("*") if p.is_file()) == [
        "logs/events.out.tfevents.1.host.1.0", "models/checkpoint_epoch=5.pt", "models/model.pt"]
    with pytest.raises(RunFolderError, match="No resumable checkpoint.*--overwrite True"):
        prepare_run_folder(str(models), str(logs), resume=True)
    with pytest.raises(RunFolderError, match="contradict"):
        prepare_run_folder(str(models), str(logs), resume=True, overwrite=True)


def test_shipped_weights_are_not_a_run_and_stay_when_a_run_is_archived(tmp_path):
    models, logs = tmp_path / "models", tmp_path / "logs"
    shipped = models / "pretrained" / "model.pt"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"shipped")
    assert prepare_run_folder(str(models), str(logs)) is None  # only the shipped weights: a fresh folder
    (models / "model.pt").write_bytes(b"trained")
    with pytest.raises(RunFolderError):
        prepare_run_folder(str(models), str(logs))
    archive = prepare_run_folder(str(models), str(logs), overwrite=True)
    assert shipped.read_bytes() == b"shipped" and not (models / "model.pt").exists()
    assert (Path(archive) / "models" / "model.pt").read_bytes() == b"trained"
    assert not (Path(archive) / "models" / "pretrained").exists()


def test_empty_epoch_is_an_error():
    # case 1: a loader thread that died made every epoch run 0 iterations, and the run exited 0
    engine = Engine(lambda e, b: None)
    FailOnEmptyEpoch().attach(engine)
    with pytest.raises(DataLoadingError, match="epoch 1 ran no iteration"):
        engine.run([], max_epochs=1, epoch_length=1)


def test_thread_loader_raises_collate_errors_naming_the_files():
    # case 1: MONAI's ThreadDataLoader thread died in collate and the epoch simply ended (0 iterations)
    from monai.data import Dataset, MetaTensor
    from monai.data import ThreadDataLoader as MonaiThreadDataLoader

    from scripts.data import ThreadDataLoader

    items = [{"image": MetaTensor(torch.zeros(c, 8, 8), meta={"filename_or_obj": f"/d/{n}.tif"})}
             for n, c in (("a", 3), ("planar", 4))]
    old = list(MonaiThreadDataLoader(Dataset(items), batch_size=2))
    assert old == [], "the old loader yields nothing (the failure only goes to stderr)"
    with pytest.raises(DataLoadingError, match=r"/d/a\.tif image \(3, 8, 8\), /d/planar\.tif image \(4, 8, 8\)"):
        list(ThreadDataLoader(Dataset(items), batch_size=2))


def test_naming_compose_names_the_file(tmp_path):
    from monai.transforms import LoadImaged

    from scripts.data import NamingCompose

    with pytest.raises(DataLoadingError, match=r"missing\.png: loading/transforming this item failed"):
        NamingCompose([LoadImaged("image")])({"image": str(tmp_path / "missing.png")})


def test_user_errors_are_found_through_wrappers():
    try:
        try:
            raise DivergenceError("diverged")
        except DivergenceError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as wrapped:
        assert str(user_error_in(wrapped)) == "diverged"


def test_resume_checks_the_network_configuration_first(tmp_path):
    from scripts.errors import ConfigError
    from scripts.networks import ModelInfo, UNet

    small = UNet(spatial_dims=2, in_channels=1, out_channels=5, features=(4, 8, 16))
    torch.save({"model_info": ModelInfo(small).state_dict(), "model": small.state_dict()}, tmp_path / "c.pt")
    other = UNet(spatial_dims=2, in_channels=1, out_channels=5, features=(8, 16, 32))
    loader = ResumeCheckpointLoader(str(tmp_path / "c.pt"), {"model_info": ModelInfo(other), "model": other}, engine_key=None)
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    with pytest.raises(ConfigError, match=r"cannot resume from .*c\.pt: .*another network configuration \(features") as err:
        engine.run([0])
    assert "size mismatch" not in str(err.value)


def test_non_finite_gradients_with_a_finite_loss_stop_before_the_step():
    net = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.ones_(net.weight)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[{"image": torch.ones(1, 2), "label": torch.zeros(1, 1)}],
                                network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                                loss_function=lambda p, t: (p * 0).abs().sqrt().mean(),  # loss 0, gradient 0 * inf = nan
                                train_handlers=[StopOnNonFiniteLoss()])
    with pytest.raises(DivergenceError, match=r"gradients of 1 parameter\(s\) \(weight\) are NaN or infinite"):
        trainer.run()
    assert torch.equal(net.weight, torch.ones(1, 2))


def test_resume_from_a_checkpoint_without_the_new_entries_says_what_to_do(tmp_path):
    net = torch.nn.Linear(1, 1)
    torch.save({"model": net.state_dict()}, tmp_path / "checkpoint_epoch=1.pt")  # the pre-0.4 resumable layout
    loader = ResumeCheckpointLoader(str(tmp_path / "checkpoint_epoch=1.pt"), {"model": net, "early_stop": _Box(0.0)},
                                    engine_key=None)
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    with pytest.raises(RunFolderError, match=r"holds no 'early_stop' entry.*--overwrite True"):
        engine.run([0])


# ------------------------------------------------ handlers that train.json's run used to wire imperatively


def test_early_stop_from_the_trainers_list_stops_the_trainer_on_the_validators_score():
    from ignite.engine import Events

    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])  # never better than the first: patience 2 stops after epoch 3
    evaluator = Engine(lambda e, b: None)
    handler = EarlyStopHandler(patience=2, score_function=lambda e: next(scores), validator=evaluator)
    trainer = Engine(lambda e, b: None)
    handler.attach(trainer)  # as in train#handlers: stops this engine, scores the validator
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    trainer.run([0], max_epochs=5)
    assert trainer.state.epoch == 3 and handler.state_dict()["counter"] == 2


def test_time_limit_none_attaches_nothing_and_a_limit_stops_at_epoch_end():
    import time

    from scripts.handlers import TimeLimit

    trainer = Engine(lambda e, b: None)
    TimeLimit(None).attach(trainer)
    trainer.run([0], max_epochs=3)
    assert trainer.state.epoch == 3
    handler = TimeLimit(0.2)  # a float is accepted, rounded up to Ignite's whole seconds: 1 s
    time.sleep(1.1)  # caching the datasets after the config built the handler: not counted
    trainer = Engine(lambda e, b: time.sleep(0.6))
    handler.attach(trainer)
    trainer.run([0], max_epochs=10)
    assert trainer.state.epoch == 2  # 0.6 s after epoch 1, 1.2 s > 1 s after epoch 2


def test_lr_logger_and_tensorboard_handler_write_only_once_attached(tmp_path):
    from scripts.handlers import LearningRateLogger, TensorBoardStatsHandler
    from scripts.visualize.curves import load_tensorboard_scalars

    net = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.25)
    lr_logger, stats = LearningRateLogger(tmp_path, optimizer), TensorBoardStatsHandler(log_dir=tmp_path, iteration_log=False)
    assert not list(tmp_path.iterdir()), "built but not attached (another rank's rank0_handlers): no event file"
    trainer = Engine(lambda e, b: None)
    lr_logger.attach(trainer)
    stats.attach(trainer)
    trainer.run([0], max_epochs=2)
    stats.close()
    steps, values = load_tensorboard_scalars(tmp_path)["lr/group_0"]
    assert list(steps) == [1, 2] and list(values) == [0.25, 0.25]  # one value per epoch, at its start
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # one event file each, once attached


def test_place_network_channels_last_for_2d_only():
    from scripts.backends import place_network
    from scripts.networks import UNet

    net2d = place_network(UNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 8)), "cpu", True)
    convs = [p for p in net2d.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    net3d = place_network(UNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8, 8)), "cpu", True)
    assert all(p.is_contiguous() for p in net3d.parameters())  # 5-D weights: left as they are
    plain = place_network(UNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 8)), "cpu", False)
    assert all(p.is_contiguous() for p in plain.parameters())
