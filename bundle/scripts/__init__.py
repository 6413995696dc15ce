"""Microscopy cell-image segmentation bundle: the bundle's small Python library.

Sub-packages, one concept each:

- ``scripts.networks``: X-Net, U-Net (same/valid), Double U-Net, Ensemble U-Net.
- ``scripts.losses``: IoU, kappa, class-weighted softmax CE, U-Net border-weighted CE, multi-output loss.
- ``scripts.transforms``: U-Net border weight maps, difficult-pixel refinement.
- ``scripts.data``: synthetic EM-like data, dataset preparation (Drosophila ssTEM, generic folders), integrity checks.
- ``scripts.inferers``: overlap-tile (mirror padded) inference.
- ``scripts.metrics`` / ``scripts.handlers``: confusion-matrix metrics and the Ignite handlers that report them.
- ``scripts.errors`` / ``scripts.settings``: user errors shown as one message; checks of the training settings.
- ``scripts.visualize``: overlays, confidence maps, feature maps, training curves, HTML gallery.
"""

from pathlib import Path

#: Root folder of the bundle (the folder holding ``configs/``, ``scripts/``, ``models/``, ``docs/``).
BUNDLE_ROOT = str(Path(__file__).resolve().parent.parent)

from .errors import ConfigError, UserError, install_excepthook  # noqa: E402
from .settings import check_training_settings  # noqa: E402

install_excepthook()
