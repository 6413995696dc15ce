"""Fixtures for the MONAI Label tests (run them with the MONAI Label environment, see tools/monailabel_env.sh).

Nothing here imports monailabel at import time: under the project's own Python, where monailabel is absent,
the test modules skip themselves with a reason instead.
"""

from __future__ import annotations

import os

import pytest

from mlabel_utils import MODEL_NAME, make_app_copy, make_studies, train_source_bundle


@pytest.fixture(autouse=True)
def _one_thread_per_op(monkeypatch):
    """The in-process tasks run small CPU convolutions: keep them off the other core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, int(os.environ.get("OMP_NUM_THREADS", "2")))))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_source(tmp_path_factory):
    """A source bundle whose models/model.pt was trained (one tiny epoch, features 4..16) through train.json."""
    return train_source_bundle(tmp_path_factory.mktemp("source") / "bundle")


@pytest.fixture
def tiny_bundle(tmp_path, trained_source):
    """The app's copy of the trained bundle, made with the manual's tool; no width override in its configs."""
    return make_app_copy(trained_source, tmp_path / "app")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A studies folder: 5 labelled 64x64 PNGs, a 64x96 PNG, a 96x64 .tif and an 80x80 .tiff (unlabelled)."""
    root = tmp_path_factory.mktemp("studies")
    return root, make_studies(root)
