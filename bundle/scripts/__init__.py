"""Microscopy cell-image segmentation bundle: the bundle's small Python library.

Sub-packages, one concept each:

- ``scripts.networks``: X-Net, U-Net (same/valid), Double U-Net, Ensemble U-Net.
- ``scripts.losses``: IoU, kappa, class-weighted softmax CE, U-Net border-weighted CE, multi-output loss.
- ``scripts.transforms``: U-Net border weight maps, difficult-pixel refinement.
- ``scripts.data``: synthetic EM-like data, dataset preparation (Drosophila ssTEM, generic folders), image I/O,
  integrity checks, loading.
- ``scripts.inferers``: overlap-tile (mirror padded) inference.
- ``scripts.metrics`` / ``scripts.handlers``: confusion-matrix metrics and the Ignite handlers of the workflows.
- ``scripts.workflows``: the workflows' pre-flights, run folder, DDP set-up, and the inference run's plan, output
  names, fault tolerance and report.
- ``scripts.backends`` / ``scripts.checkpoint_files``: seeds, cuDNN/TF32 switches, network placement; checkpoint
  files (atomic writes, the newest resumable one).
- ``scripts.schedules``: learning-rate schedules that know their length (resume with other ``--epochs``, budgets).
- ``scripts.atomic``: crash-safe inference outputs (a temporary name beside the target, renamed into place).
- ``scripts.errors`` / ``scripts.settings``: user errors shown as one message; checks of the training settings.
- ``scripts.cli`` / ``scripts.overrides`` / ``scripts.locks``: every workflow's first step (``scripts.start_run``:
  the error hook, mistyped command-line overrides refused); one run per folder (an exclusive lock).
- ``scripts.visualize``: overlays, confidence maps, feature maps, training curves, HTML gallery.
- ``scripts.measure``: answers per object (counts, areas, perimeters, densities per µm²) from label maps.
"""

import json
from pathlib import Path

#: Root folder of the bundle (the folder holding ``configs/``, ``scripts/``, ``models/``, ``docs/``).
BUNDLE_ROOT = str(Path(__file__).resolve().parent.parent)


def _bundle_version() -> str:
    """The bundle's version: ``version`` in ``configs/metadata.json``, the one source of truth (pyproject.toml reads
    it through this attribute); the installed distribution's version when the configs are not beside the package."""
    try:
        return str(json.loads((Path(BUNDLE_ROOT) / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("cellseg-xnet-bundle")
        except PackageNotFoundError:
            return "0+unknown"


#: The bundle's version (``configs/metadata.json``'s ``version``).
__version__ = _bundle_version()

from .cli import start_run  # noqa: E402  (standard library only)
from .errors import ConfigError, UserError  # noqa: E402


def __getattr__(name: str):
    # imported lazily so that reading ``__version__`` (pyproject.toml does, at build time) needs no MONAI
    if name == "check_training_settings":
        from .settings import check_training_settings

        return check_training_settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
