"""Evaluation report, non-finite loss guard and checkpoint discovery, on a real Ignite engine."""

import csv
import json

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler, from_engine

from scripts.handlers import SegmentationReport, StopOnNonFiniteLoss, latest_checkpoint
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
    with pytest.raises(FloatingPointError, match="learning rate"):
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
