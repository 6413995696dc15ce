"""Run the bundle's workflows the way users do: ``python -m monai.bundle run`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"

#: Overrides that shrink every workflow to seconds on a CPU: 64x64 synthetic images, a 3-level U-Net with 4..16
#: features, two epochs of two iterations.
TINY = {
    "synthetic#num_train": 4,
    "synthetic#num_val": 2,
    "synthetic#num_test": 2,
    "synthetic#size": 64,
    "features": [4, 8, 16],
    "patch_size": [64, 64],
    "epochs": 2,
    "batch_size": 2,
    "val_batch_size": 2,
    "cache_workers": 0,
    "show_progress": False,
}


#: TINY's keys that inference.json has (its other keys are training settings, refused there as unknown).
TINY_INFERENCE = {k: v for k, v in TINY.items() if k.startswith("synthetic#") or k in ("features", "patch_size")}


def _cli_value(v) -> str:
    """Values as Python Fire parses them (``True``, not ``true``)."""
    return v if isinstance(v, str) else repr(v)


def config_arg(*names: str, root: Path = CONFIGS) -> str:
    files = [str(root / n) for n in names]
    return files[0] if len(files) == 1 else json.dumps(files)


def run_bundle(
    config: str,
    run_id: str | None = None,
    overrides: dict | None = None,
    cwd: Path = REPO,
    timeout: int = 300,
    check: bool = True,
    extra_args: list[str] | None = None,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run [run_id] --config_file <config> --key value ...``; returns the finished process."""
    cmd = [sys.executable, "-m", "monai.bundle", "run"] + ([run_id] if run_id else []) + ["--config_file", config]
    for k, v in (overrides or {}).items():
        cmd += [f"--{k}", _cli_value(v)]
    cmd += extra_args or []
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}\nexit {proc.returncode}\nSTDOUT:\n{proc.stdout[-6000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc


def assert_identical(a, b, where: str = "") -> None:
    """Assert two checkpoints (nested dicts, lists, tensors, plain values) are equal bit for bit, naming the first
    differing entry (exact-resume tests)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
