"""Multi-GPU (DistributedDataParallel) override configs, run the way users run them -- ``torchrun -m monai.bundle run``
-- with two CPU processes on the gloo backend. CUDA is hidden from them (``CUDA_VISIBLE_DEVICES=""``): the configs
pick ``cuda:<local rank>``/NCCL whenever CUDA is visible, and on a one-GPU machine rank 1 would ask for ``cuda:1``.

- ``multi_gpu_train.json``: two ranks train, rank 0 alone writes checkpoints, TensorBoard events, curves and logs;
  the training split is shared between the ranks (one iteration per rank and epoch instead of two).
- ``multi_gpu_evaluate.json``: three test images on two ranks (an odd count: a padding sampler would count one
  twice); the report holds every image once and the same confusion matrix as a single-process evaluation.
- The overrides run their base config's pre-flight rank 0 first and keep its ``run``/``finalize`` and handler lists
  (the ``rank0_handlers`` on rank 0 only), and ``StopTogether`` stops all ranks at the same epoch when only one of
  them asks to stop (a time limit run out on one rank).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle_runner import CONFIGS, REPO, TINY, _cli_value

pytestmark = pytest.mark.slow

TRAIN = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")]
EVALUATE = [str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json"), str(CONFIGS / "multi_gpu_evaluate.json")]

#: TINY with odd validation and test splits: 3 items on 2 ranks.
OVERRIDES = {**TINY, "synthetic#num_val": 3, "synthetic#num_test": 3}

#: What rank 0 logs and rank 1 must not.
RANK0_ONLY = ("input summary", "train_loss", "Epoch[1] Metrics", "Key metric", "Saved checkpoint", "Loading dataset")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config_files: list[str], run_id: str | None, overrides: dict, log_dir: Path, nproc: int = 2,
             timeout: int = 240) -> dict[int, str]:
    """``python -m torch.distributed.run --nproc_per_node=<nproc> -m monai.bundle run ...``; returns each rank's output.

    Every rank's stdout and stderr go to ``log_dir`` (torchrun's ``--log-dir``/``--redirects``), so that what each
    rank printed can be checked separately.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", f"--log-dir={log_dir}", "--redirects=3",
           "-m", "monai.bundle", "run"] + ([run_id] if run_id else []) + ["--config_file", json.dumps(config_files)]
    for k, v in overrides.items():
        cmd += [f"--{k}", _cli_value(v)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")  # gloo on CPUs
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    outputs = {}
    for rank in range(nproc):
        files = sorted(log_dir.rglob(f"attempt_*/{rank}/std*.log"))
        outputs[rank] = "\n".join(f.read_text(errors="replace") for f in files)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)}\nexit {proc.returncode}\nTORCHRUN:\n{proc.stderr[-3000:]}\n"
            + "\n".join(f"RANK {r}:\n{out[-4000:]}" for r, out in outputs.items())
        )
    return outputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_root")
    logs = torchrun(TRAIN, "training", {**OVERRIDES, "bundle_root": str(root)}, tmp_path_factory.mktemp("ddp_train_logs"))
    return root, logs


def test_ddp_training_writes_everything_once_from_rank0(trained):
    root, logs = trained
    models = root / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=2.pt", "model.pt"]
    state = torch.load(models / "model.pt", map_location="cpu")["model"]
    assert state and not any(k.startswith("module.") for k in state), "model.pt must hold the unwrapped network"
    ckpt = torch.load(models / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=False)
    assert {"model_info", "model", "optimizer", "trainer", "lr_scheduler", "best_model_saver", "random_states"} <= set(ckpt)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    # 4 training images, 2 ranks, batch 2: one iteration per rank and epoch (two on a single process)
    assert ckpt["trainer"]["epoch_length"] == 1 and ckpt["trainer"]["iteration"] == 2

    events = list((root / "logs").glob("events.out.tfevents.*"))
    assert events, "TensorBoard events expected"
    pids = {p.name.split(".")[-2] for p in events}
    assert len(pids) == 1, f"TensorBoard event files from more than one process: {[p.name for p in events]}"
    assert (root / "logs" / "curves.png").is_file()

    for text in RANK0_ONLY:
        assert text in logs[0], f"rank 0 should log {text!r}"
        assert text not in logs[1], f"rank 1 should not log {text!r}:\n{logs[1][-3000:]}"
    assert logs[0].count("Epoch[2] Metrics") == 1
    assert len(re.findall(r"Epoch: 2/2, Iter: \d+/1 -- train_loss", logs[0])) == 1


def test_ddp_evaluation_counts_every_image_once(trained, tmp_path):
    from monai.bundle import run

    root, _ = trained
    logs = torchrun(EVALUATE, None, {**OVERRIDES, "bundle_root": str(root), "save_predictions": True}, tmp_path / "logs")
    report = json.loads((root / "eval" / "metrics.json").read_text())
    assert report["num_images"] == 3
    assert sum(map(sum, report["confusion_matrix"])) == 3 * 64 * 64
    assert len(list((root / "eval" / "predictions").glob("*.png"))) == 3, "each rank saves its own predictions"
    assert "Evaluation on 3 images" in logs[0] and "Evaluation on" not in logs[1]
    assert "Restored all variables" in logs[0] and "Restored all variables" not in logs[1]

    # the same model evaluated by one process: the same confusion matrix, hence the same scores
    single = tmp_path / "single"
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")]
    # (final_id: skip train.json's finalize -- training curves -- which evaluate.json inherits)
    # (on the CPU without AMP, as the ranks: a GPU's convolutions would differ in the last bits)
    run(None, final_id="no_finalize", config_file=files, **OVERRIDES, bundle_root=str(root), output_dir=str(single),
        device="$torch.device('cpu')", amp=False)
    expected = json.loads((single / "metrics.json").read_text())
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["mean_iou"] == expected["mean_iou"]
    assert report["per_image_mean_iou"] == expected["per_image_mean_iou"]
    # per-image rows carry the right file names although each rank saw only its own images
    def rows(path):
        with open(path) as f:
            return sorted(f.read().splitlines()[1:])

    assert rows(root / "eval" / "metrics_per_image.csv") == rows(single / "metrics_per_image.csv")
    assert [r.split(",")[0].rsplit("/", 1)[-1] for r in rows(single / "metrics_per_image.csv")] == [
        "test_000.png", "test_001.png", "test_002.png"]


def _parser(files: list[str]):
    from monai.bundle import ConfigParser

    return ConfigParser(ConfigParser.load_config_files(files))


#: What multi_gpu_*.json run first: join the process group, then the pre-flight of the config they are merged on with
#: rank 0 ahead of the others (it writes the synthetic data and prepares the run folder while they wait).
DDP_INITIALIZE = ["$scripts.start_run()", "$scripts.workflows.init_distributed(@dist_backend, @device)",
                  "$scripts.workflows.wait_for_rank0(@local_rank)", "$@preflight.run()",
                  "$scripts.workflows.release_others(@local_rank)"]


@pytest.mark.parametrize("base, ddp", [(["train.json"], "multi_gpu_train.json"),
                                       (["train.json", "evaluate.json"], "multi_gpu_evaluate.json")])
def test_override_runs_the_base_configs_preflight_and_steps(base, ddp):
    """The DDP overrides repeat none of their base's checks: they run its pre-flight (``@preflight``, not copied)
    rank 0 first, keep its ``run`` and ``finalize`` (curves drawn by rank 0 alone, scripts.visualize.curves) and end
    the process group last; multi_gpu_train.json keeps train.json's handler lists, StopTogether appended, the rank-0
    lists on rank 0 only."""
    single = _parser([str(CONFIGS / n) for n in base])
    merged = _parser([str(CONFIGS / n) for n in base + [ddp]])
    override = json.loads((CONFIGS / ddp).read_text())
    assert merged["initialize"] == DDP_INITIALIZE and single["initialize"] == [DDP_INITIALIZE[0], DDP_INITIALIZE[3]]
    assert not any(k.split("#")[0] == "preflight" for k in override), "the pre-flight is the base config's"
    assert merged["run"] == single["run"]
    assert merged["finalize"] == single["finalize"] + ["$scripts.workflows.finish_distributed()"]
    assert merged["validate"]["handlers"] == single["validate"]["handlers"]
    assert not any(k.endswith("#_disabled_") for k in override)
    if ddp == "multi_gpu_train.json":
        handlers = merged["train"]["handlers"]
        assert handlers[:-1] == single["train"]["handlers"] and handlers[-1] == {"_target_": "scripts.handlers.StopTogether"}
        assert single["train"]["trainer"]["train_handlers"] == "$@train#handlers + @train#rank0_handlers"
        assert override["train#trainer#train_handlers"] == (
            "$@train#handlers + (@train#rank0_handlers if dist.get_rank() == 0 else [])")


def _stop_together_worker(rank: int, port: int, stop_on_rank: int, result) -> None:
    import torch.distributed as dist
    from ignite.engine import Engine, Events

    from scripts.handlers import StopTogether

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        parser = _parser(TRAIN)
        handler = parser.get_parsed_content(f"train#handlers#{len(parser['train']['handlers']) - 1}")
        assert isinstance(handler, StopTogether)
        engine = Engine(lambda e, b: None)
        if rank == stop_on_rank:  # what a time limit run out on this rank alone does
            engine.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
        handler.attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: dist.barrier())  # a collective, as DDP's next step
        engine.run(range(3), max_epochs=10)
        result.put((rank, engine.state.epoch))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork to start the two ranks quickly")
def test_stop_together_stops_all_ranks_at_the_same_epoch():
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_stop_together_worker, args=(r, port, 1, result)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "the ranks did not stop together (deadlock)"
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(result.get(timeout=5) for _ in procs) == [(0, 2), (1, 2)]
