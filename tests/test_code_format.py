"""The bundle passes the MONAI Model Zoo's code checks with the zoo's settings (``pyproject.toml``'s ``[tool.black]``
and ``[tool.isort]``, ``.flake8``): isort, black (``--skip-magic-trailing-comma`` from the settings, as the zoo's
``runtests.sh`` runs it), flake8 with its plugins on ``bundle/``'s Python files, and the zoo's JSON hook
(``pretty-format-json --no-sort-keys --indent=4``) on every tracked JSON file of ``bundle/``. The tools come with the
``test`` extra; the test is skipped, naming them, where they are not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from bundle_runner import REPO

TOOLS = ("black", "isort", "flake8", "bugbear", "flake8_comprehensions", "pep8ext_naming", "pre_commit_hooks")
missing = [t for t in TOOLS if importlib.util.find_spec(t) is None]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"needs the test extra's code checkers (missing: {missing})")


def _tracked(pattern: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", pattern], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git work tree: the tracked files are unknown")
    return out.stdout.split()


@pytest.mark.parametrize(
    "check",
    [
        ["-m", "isort", "--check", "--diff"],
        ["-m", "black", "--check", "--diff"],
        ["-m", "flake8", "--count", "--statistics"],
        ["-m", "pre_commit_hooks.pretty_format_json", "--no-sort-keys", "--indent=4"],
    ],
    ids=["isort", "black", "flake8", "pretty-format-json"],
)
def test_bundle_passes_the_model_zoo_code_checks(check):
    files = _tracked("bundle/*.json") if "pretty_format_json" in check[1] else _tracked("bundle/*.py")
    assert len(files) > 10
    proc = subprocess.run([sys.executable, *check, *files], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(check[:2])} (fix: isort / black bundle/, or by hand):\n" + (
        proc.stdout + proc.stderr
    )[-4000:]
