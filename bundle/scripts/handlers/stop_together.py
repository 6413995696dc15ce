"""All ranks of a DistributedDataParallel run (``multi_gpu_train.json``) stop at the same epoch."""

from __future__ import annotations

import ignite.distributed as idist
from ignite.engine import Engine, Events

__all__ = ["StopTogether"]


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
