"""One version: ``configs/metadata.json``'s ``version`` is the bundle's version, and pyproject.toml reads it from
there (``dynamic = ["version"]`` through ``scripts.__version__``) instead of keeping a second copy."""

from __future__ import annotations

import json
import tomllib
from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest

import scripts
from bundle_runner import CONFIGS, REPO


def test_pyproject_reads_the_version_from_metadata():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml must not hold a second version"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "scripts.__version__"}
    assert scripts.__version__ == json.loads((CONFIGS / "metadata.json").read_text())["version"]


def test_installed_distribution_has_the_bundle_version():
    """The installed project (``pip install -e .``) reports metadata.json's version (when it is this checkout)."""
    try:
        dist = importlib_metadata.distribution("cellseg-xnet-bundle")
    except importlib_metadata.PackageNotFoundError:
        pytest.skip("the project is not pip-installed here")
    direct = dist.read_text("direct_url.json")
    url = json.loads(direct).get("url", "") if direct else ""
    if not url.startswith("file://") or Path(url[7:]).resolve() != REPO.resolve():
        pytest.skip(f"the installed project is another checkout ({url or 'not editable'})")
    assert dist.version == json.loads((CONFIGS / "metadata.json").read_text())["version"]
