"""tools/side_env.sh: when the MONAI Label and bioimage.io environments share another virtualenv's torch.

CI makes both with SHARE_TORCH_FROM=.venv (each would otherwise hold its own 5 GB CUDA build of torch); these tests
check the decision with stand-in interpreters, so they need no second environment.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fake_venv(root: Path, torch_version: str | None) -> Path:
    """A folder whose ``bin/python`` is this Python with a stand-in ``torch`` of that version (none: no torch)."""
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    body = f"__version__ = {torch_version!r}\n" if torch_version else "raise ImportError('no torch here')\n"
    (root / "lib" / "torch.py").write_text(body)
    python = root / "bin" / "python"
    python.write_text(f'#!/usr/bin/env bash\nPYTHONPATH="{root / "lib"}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return root


def shell_venv(root: Path, purelib: Path) -> Path:
    """A folder whose ``bin/python`` only tells its purelib folder (the environment being made)."""
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.write_text(f'#!/usr/bin/env bash\necho "{purelib}"\n')
    python.chmod(0o755)
    return root


def run(snippet: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{REPO}/tools/side_env.sh"; {snippet}'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_the_same_release_is_shared(tmp_path):
    shared = fake_venv(tmp_path / "shared", "2.14.1+cu130")
    out = run("side_env_shared_site 2.14.1", SHARE_TORCH_FROM=str(shared))
    assert out.returncode == 0 and out.stdout.strip() == sysconfig.get_path("purelib"), out.stderr


def test_another_release_or_no_torch_is_not_shared(tmp_path):
    for name, version in (("old", "2.13.0+cpu"), ("none", None)):
        shared = fake_venv(tmp_path / name, version)
        out = run("side_env_shared_site 2.14.1", SHARE_TORCH_FROM=str(shared))
        assert out.returncode == 0 and out.stdout == "", name
        assert "gets its own torch" in out.stderr and (version or "(none)").split("+")[0] in out.stderr


def test_without_share_torch_from_nothing_is_shared():
    out = run("side_env_shared_site 2.14.1")
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""


def test_sharing_writes_one_path_file_into_the_new_environment(tmp_path):
    own_site = tmp_path / "own-site"
    own_site.mkdir()
    venv = shell_venv(tmp_path / "new", own_site)
    out = run(f'VENV="{venv}"; side_env_share "{tmp_path / "shared-site"}"; side_env_share ""')
    assert out.returncode == 0, out.stderr
    assert (own_site / "cellseg-shared-torch.pth").read_text() == f"{tmp_path / 'shared-site'}\n"
    assert [p.name for p in own_site.iterdir()] == ["cellseg-shared-torch.pth"]
