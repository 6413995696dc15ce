"""Shared pytest fixtures.

- ``drosophila_dir``: the real Drosophila ssTEM dataset folder (``<repo>/../shared/datasets/drosophila-vnc``, or
  the ``DROSOPHILA_VNC_DIR`` environment variable); tests using it are skipped with a reason when it is absent.
- ``synthetic_dataset``: a tiny synthetic dataset (4 training, 2 validation, 2 testing samples of 64x64) written
  once per test session into a temporary folder; returns the datalist path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def drosophila_vnc_path() -> Path:
    """Where the real dataset is expected (``DROSOPHILA_VNC_DIR`` overrides the default)."""
    env = os.environ.get("DROSOPHILA_VNC_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets" / "drosophila-vnc"


@pytest.fixture(scope="session")
def drosophila_dir() -> Path:
    path = drosophila_vnc_path()
    if not (path / "stack1" / "raw").is_dir() or not (path / "stack1" / "labels").is_dir():
        pytest.skip(
            f"Drosophila ssTEM dataset not found at {path} (needs stack1/raw and stack1/labels); "
            "set DROSOPHILA_VNC_DIR to run the real-data tests."
        )
    return path


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from scripts.data import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synthetic"), num_train=4, num_val=2, num_test=2, size=64, seed=0)
