"""Kill -9 at random points of a training run, resume, and get exactly what the uninterrupted run gives.

One uninterrupted reference run (tiny U-Net, 3 epochs of 2 iterations, validation every epoch, CPU) records every
"tick" it passes: each Ignite event of the trainer and the evaluator, and three points of every checkpoint write
(half of the file written, before ``os.replace``, before an old checkpoint is removed). Ten ticks are drawn (seeded)
-- four among training iterations, three among validation events, three inside checkpoint writes -- and for each a
fresh run is SIGKILLed there, then resumed (``--resume True``, or ``--overwrite True`` when the kill came before the
first resumable checkpoint), as a user would. The finished run must then hold bit-identical weights in ``model.pt``
and in the last resumable checkpoint, the same optimiser, best-model and early-stopping state and the same random
states as the reference.

Runs are forked from this process (the imports are paid once); the kill is a real ``SIGKILL`` of the child.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import run

# what the configs import, imported once here so that each forked run starts warm
import scripts.data  # noqa: F401
import scripts.handlers  # noqa: F401
import scripts.inferers  # noqa: F401
import scripts.losses  # noqa: F401
import scripts.metrics  # noqa: F401
import scripts.networks  # noqa: F401
import scripts.transforms  # noqa: F401
from bundle_runner import CONFIGS, TINY, assert_identical

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forks the training runs")

#: bundle_runner's tiny settings without its synthetic-data keys (these tests bring their own data), three epochs
OVERRIDES = {**{k: v for k, v in TINY.items() if not k.startswith("synthetic#")}, "epochs": 3}
TRAIN = [str(CONFIGS / "train.json"), str(CONFIGS / "experiments" / "paper" / "unet_sce_iou.json")]


def _install_ticks(kill_at: int | None, record: list[str]) -> None:
    """Count ticks (see the module docstring); SIGKILL this process at tick number ``kill_at``."""
    import ignite.engine

    import scripts.checkpoint_files as checkpoint_files

    def tick(label: str) -> None:
        record.append(label)
        if kill_at is not None and len(record) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    fire = ignite.engine.Engine._fire_event

    def fire_event(self, event_name, *args, **kwargs):
        tick(f"{type(self).__name__}:{getattr(event_name, 'value', event_name)}")
        return fire(self, event_name, *args, **kwargs)

    ignite.engine.Engine._fire_event = fire_event

    class Torch:  # the ``torch`` atomic_save sees: torch.save writes half the bytes, ticks, then the rest
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def save(obj, fh, **kwargs):
            buffer = io.BytesIO()
            torch.save(obj, buffer, **kwargs)
            data = buffer.getvalue()
            fh.write(data[: len(data) // 2])
            fh.flush()
            tick("write:half")
            fh.write(data[len(data) // 2:])

    class Os:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            tick("write:replace")
            os.replace(src, dst)

    checkpoint_files.torch = Torch()
    checkpoint_files.os = Os()
    unlink = Path.unlink

    def unlink_tick(self, *args, **kwargs):
        if self.name.endswith(".pt"):
            tick("write:remove")
        return unlink(self, *args, **kwargs)

    Path.unlink = unlink_tick


def _train(root: str, datalist: str, kill_at: int | None, ticks_file: str | None, **extra) -> None:
    """Child process: one training run (optionally killed), ticks written to ``ticks_file``."""
    torch.set_num_threads(1)
    record: list[str] = []
    if kill_at is not None or ticks_file:
        _install_ticks(kill_at, record)
    try:
        # (final_id: skip the training curves picture, seconds of matplotlib per run)
        run("training", final_id="no_finalize", config_file=TRAIN, **OVERRIDES, bundle_root=root, datalist_file=datalist,
            **extra)
    except BaseException as e:  # noqa: BLE001 - reported through the exit code
        print(f"training failed: {e!r}", file=sys.stderr)
        os._exit(1)
    if ticks_file:
        Path(ticks_file).write_text("\n".join(record))
    os._exit(0)


def _fork(*args, **kwargs) -> int:
    proc = multiprocessing.get_context("fork").Process(target=_train, args=args, kwargs=kwargs)
    proc.start()
    proc.join(timeout=300)
    if proc.is_alive():
        proc.kill()
        raise AssertionError("training did not finish in 300 s")
    return proc.exitcode


def _final_state(root: Path) -> dict:
    models = root / "models"
    ckpts = sorted(models.glob("checkpoint_epoch=*.pt"))
    assert [p.name for p in ckpts] == ["checkpoint_epoch=3.pt"], sorted(p.name for p in models.iterdir())
    assert not list(models.glob(".*")), "temporary files left behind"
    ckpt = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    best = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    return {"checkpoint": ckpt, "model.pt": best}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synthetic_dataset):
    root = tmp_path_factory.mktemp("reference")
    ticks = root / "ticks.txt"
    assert _fork(str(root), str(synthetic_dataset), None, str(ticks)) == 0
    return _final_state(root), ticks.read_text().splitlines()


def _kill_points(ticks: list[str]) -> list[int]:
    """Ten 1-based tick numbers: four in training iterations, three in validation, three in checkpoint writes."""
    rng = random.Random(0)
    groups = {
        "train": [i for i, t in enumerate(ticks, 1) if t.startswith("SupervisedTrainer:") and "iteration" in t],
        "validate": [i for i, t in enumerate(ticks, 1) if t.startswith("SupervisedEvaluator:")],
        "write": [i for i, t in enumerate(ticks, 1) if t.startswith("write:")],
    }
    return sorted(rng.sample(groups["train"], 4) + rng.sample(groups["validate"], 3) + rng.sample(groups["write"], 3))


def test_reference_run_is_reproducible_and_finite(reference):
    state, ticks = reference
    assert {"write:half", "write:replace", "write:remove"} <= set(ticks), "the hooks see the checkpoint writes"
    ckpt = state["checkpoint"]
    assert {"model_info", "model", "optimizer", "lr_scheduler", "trainer", "best_model_saver", "early_stop",
            "divergence_guard", "random_states"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == 6 and ckpt["trainer"]["epoch_length"] == 2
    assert ckpt["random_states"]["transforms"], "the augmentations' own generators are saved"
    assert set(state["model.pt"]) == {"model", "model_info"}
    assert state["model.pt"]["model_info"]["network"]["_target_"] == "scripts.networks.UNet"


def test_kill_anywhere_and_resume_is_exact(reference, synthetic_dataset, tmp_path):
    expected, ticks = reference
    points = _kill_points(ticks)
    assert len(set(points)) == 10
    for n in points:
        root = tmp_path / f"kill_{n}"
        assert _fork(str(root), str(synthetic_dataset), n, None) == -signal.SIGKILL, f"tick {n} ({ticks[n - 1]})"
        has_checkpoint = any((root / "models").glob("checkpoint_epoch=*.pt"))
        for path in (root / "models").glob("*.pt"):  # whatever survived the kill loads
            torch.load(path, map_location="cpu", weights_only=True)
        again = {"resume": True} if has_checkpoint else {"overwrite": True}
        assert _fork(str(root), str(synthetic_dataset), None, None, **again) == 0, f"resume after tick {n} ({ticks[n - 1]})"
        assert_identical(_final_state(root), expected, f"killed at tick {n} ({ticks[n - 1]})")
