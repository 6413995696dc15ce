"""Fixtures for the MONAI Label tests (run them with the MONAI Label environment, see tools/monailabel_env.sh).

Nothing here imports monailabel at import time: under the project's own Python, where monailabel is absent,
the test modules skip themselves with a reason instead.
"""

from __future__ import annotations

import os

import pytest

from mlabel_utils import MODEL_NAME, make_studies, make_tiny_bundle


@pytest.fixture(autouse=True)
def _one_thread_per_op(monkeypatch):
    """The in-process tasks run small CPU convolutions: keep them off the other core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, int(os.environ.get("OMP_NUM_THREADS", "2")))))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_bundle(tmp_path):
    """A tiny copy of the bundle (real configs and scripts, small defaults) with an initial models/model.pt."""
    return make_tiny_bundle(tmp_path / "model" / MODEL_NAME)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A studies folder: 5 labelled 64x64 PNGs, a 64x96 PNG, a 96x64 .tif and an 80x80 .tiff (unlabelled)."""
    root = tmp_path_factory.mktemp("studies")
    return root, make_studies(root)
