"""Seams for DistributedDataParallel runs (``multi_gpu_*.json``): all ranks stop together, rank 0 prepares first."""

from __future__ import annotations

import ignite.distributed as idist
import torch.distributed as dist
from ignite.engine import Engine, Events

__all__ = ["StopTogether", "wait_for_rank0", "release_others"]


class StopTogether:
    """At the end of each epoch, stops the engine on every rank when one rank asked to stop (a time limit run out on
    that rank alone, a divergence seen by one rank): otherwise the others would wait forever in DDP's next all-reduce.
    Attach it after the handlers that may stop the engine. With one process it does nothing.
    """

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        anyone = idist.all_reduce(1.0 if engine.should_terminate else 0.0, op="MAX") > 0
        if anyone and not engine.should_terminate:
            engine.terminate()


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
