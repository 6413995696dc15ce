"""``tools/zoo_check.sh`` passes: the MONAI Model Zoo's ``ci/verify_bundle.py`` (``-m min`` and ``-m full``) and its
code checks on the packaged bundle placed as a zoo contribution. Needs a checkout of Project-MONAI/model-zoo (a work
tree or a bare git dir) named by ``MODEL_ZOO``, and the test extra's code checkers (in this interpreter, or in the
one ``FORMAT_PYTHON`` names); skipped otherwise (nothing is downloaded at test time)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_runner import REPO

ZOO = os.environ.get("MODEL_ZOO")
FORMAT_PYTHON = os.environ.get("FORMAT_PYTHON", sys.executable)


def _has_checkers() -> bool:
    if FORMAT_PYTHON == sys.executable:
        return all(importlib.util.find_spec(m) is not None for m in ("black", "isort", "flake8", "pre_commit_hooks"))
    return subprocess.run([FORMAT_PYTHON, "-c", "import black, isort, flake8, pre_commit_hooks"]).returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ZOO or not Path(ZOO).is_dir(), reason="set MODEL_ZOO to a Project-MONAI/model-zoo checkout"),
    pytest.mark.skipif(not ZOO or not _has_checkers(), reason="needs the test extra's code checkers"),
]


def test_zoo_check_passes():
    env = dict(os.environ, PYTHON=sys.executable, FORMAT_PYTHON=FORMAT_PYTHON, PYTHONPATH="")
    proc = subprocess.run(["bash", str(REPO / "tools" / "zoo_check.sh"), ZOO], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for step in ("directory is verified correctly.", "metadata format is verified correctly.",
                 "data shape is verified correctly.", "export weights into TorchScript module successfully.",
                 "zoo checks passed: microscopy_cell_segmentation"):
        assert step in out, step
