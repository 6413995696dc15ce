"""A network that takes its time (tests of runs killed mid-block): the inner network's output after ``delay`` s."""

from __future__ import annotations

import time

import torch


class SlowNetwork(torch.nn.Module):
    """``module(x)`` after sleeping ``delay`` seconds; the overlap-tile inferer reads the geometry of ``module``
    (:func:`scripts.networks.wrappers.unwrap_network`), so the results are ``module``'s own."""

    def __init__(self, module: torch.nn.Module, delay: float = 0.5) -> None:
        super().__init__()
        self.module = module
        self.delay = float(delay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.module(x)
