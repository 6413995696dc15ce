"""Set-up of a DistributedDataParallel run (``multi_gpu_*.json``): the process group, and "rank 0 first"."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

__all__ = ["finish_distributed", "init_distributed", "release_others", "wait_for_rank0"]


def init_distributed(backend: str, device: torch.device) -> None:
    """Join the process group (``torchrun`` sets its address and size), select this rank's GPU on a CUDA
    ``device``, and silence the INFO logs of every rank but 0 (one log per run)."""
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(device)
    if dist.get_rank() > 0:
        logging.disable(logging.INFO)


def wait_for_rank0(local_rank: int) -> None:
    """The first half of "rank 0 first": every rank but global rank 0 waits here until rank 0 called
    :func:`release_others`, then every rank but each node's local rank 0 waits until that one did (files a node
    shares -- the synthetic data, the run folder -- are written once, then read)."""
    if dist.get_rank() != 0:
        dist.barrier()
    if local_rank != 0:
        dist.barrier()


def release_others(local_rank: int) -> None:
    """The second half of "rank 0 first": called by every rank after the work rank 0 must do first."""
    if dist.get_rank() == 0:
        dist.barrier()
    if local_rank == 0:
        dist.barrier()


def finish_distributed() -> None:
    """Leave the process group together (``finalize``): a barrier first, so that no rank tears its connections down
    while rank 0 still runs its end-of-run handlers (a rank that did so could abort at exit: "terminate called
    without an active exception", seen once with gloo on a CPU)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
