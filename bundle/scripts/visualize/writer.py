"""Per-image pictures of an inference run, as an Ignite handler usable from MONAI bundle configs.

For each image, in ``output_dir/<image file stem>/`` (PNG, each exactly the image's H x W, in the image file's
orientation):

- ``input.png``: the network's input, grey, rescaled to its own min..max;
- ``label.png``: ground truth blended over the image (when a label is known);
- ``overlay.png``: the prediction (arg-max) blended over the image (see ``scripts.visualize.overlay``);
- ``confidence.png``: the confidence ``max_c p(c|x)``, colour-mapped (see ``scripts.visualize.confidence``);
- ``difficult.png``: difficult pixels (confidence below the image mean) white, the others black;
- ``refined.png``: the difficult-pixel refinement (Matsuzuki & Hotta) blended over the image;
- ``features.png``: the X-Net paper's mean-over-channels feature map, blue (low) -> red (high);

plus ``output_dir/legend.png`` (class colours and names; the overlays themselves carry no legend so that they
keep the image's size) and ``output_dir/index.html``, a gallery linking everything with relative links (every picture
folder in ``output_dir``, also those of earlier runs).

Each picture is written when its array is in the evaluator's output; the writer computes nothing but colours. The
difficult-pixel maps come from the postprocessing (:class:`scripts.transforms.DifficultPixelRefined`), the feature
map from the evaluator's own forward pass (:class:`scripts.visualize.FeatureMapCapture`).

Orientation: MONAI's ``LoadImage`` readers for PNG/TIFF (``PILReader``, ``ITKReader``) use ``reverse_indexing=True``
and hand the network arrays of shape (C, W, H); ``reverse_indexing=True`` (default, as in MONAI's ``PILWriter``)
swaps the two spatial axes back so that the pictures look like the image files. Use ``False`` for arrays that are
already (C, H, W) (e.g. loaded with ``NumpyReader`` or ``scripts.data.read_image``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch
from monai.utils import min_version, optional_import
from scripts.atomic import atomic_folder
from scripts.data.classes import CLASS_NAMES, class_palette
from scripts.data.io import file_stem, write_png
from scripts.visualize.confidence import confidence_to_rgb, difficult_to_grey
from scripts.visualize.feature_maps import feature_map_to_rgb
from scripts.visualize.gallery import DEFAULT_COLUMNS, write_gallery
from scripts.visualize.overlay import grey_image, legend_image, overlay_labels
from scripts.workflows.fault_tolerant import FAILED_KEY, root_cause
from scripts.workflows.inference_plan import picture_folder
from scripts.workflows.output_names import OUTPUT_NAME_KEY, PICTURE_KEY

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["PictureWriter"]

logger = logging.getLogger(__name__)


class PictureWriter:
    """Write per-image pictures and an HTML gallery for an inference run (module docstring: what and where).

    Attach to a MONAI ``SupervisedEvaluator`` (``val_handlers``) or call :meth:`write` directly. At every
    iteration it reads the decollated ``engine.state.output`` items, after the postprocessing
    (``engine.state.batch`` is used for keys the output lacks), in MONAI layout (channel first):

    - ``image_key`` (C, *spatial): the network input (required);
    - ``pred_key``: the prediction, a label map ((1, *spatial) or (*spatial), e.g. after ``AsDiscreted``) or the
      per-class output (C, *spatial), whose arg-max is shown;
    - ``label_key``: the ground truth, (1, *spatial) class indices or (C, *spatial) one-hot;
    - ``confidence_key``, ``difficult_key``, ``refined_key`` (1, *spatial): the confidence map, the difficult-pixel
      mask and the refined label map, e.g. from ``DifficultPixelRefined(keys="pred", refined_keys="refined",
      confidence_keys="confidence", difficult_keys="difficult")`` in the postprocessing;
    - ``features_key`` (1, *spatial): the channel-mean feature map (:class:`scripts.visualize.FeatureMapCapture`).

    A picture whose key is ``None``, or missing from an item, is not written. The file name comes from
    ``image.meta["filename_or_obj"]``; the folder from ``picture_key`` when the item has it (a section of a stack:
    ``<name>_z<k>``, or empty: no pictures of that section), else from ``image.meta["output_name"]``. The gallery
    is written when the engine completes; rows are reset when it starts.

    Example (bundle config, in the evaluator's ``val_handlers``)::

        {"_target_": "scripts.visualize.PictureWriter", "output_dir": "$@output_dir + '/pictures'"}

    Args:
        output_dir: folder of the run's pictures (created).
        image_key, pred_key, label_key, confidence_key, difficult_key, refined_key, features_key: keys in the
            engine's output (see above).
        gallery: write ``index.html`` and ``legend.png``.
        reverse_indexing: the arrays are (C, W, H) as MONAI's PIL/ITK readers give them; swap back to (H, W).
        alpha: colour weight of the overlays, 0..1. Default 0.5.
        class_names: legend names, one per class; their number also sets the confidence scale (``1 / C`` = black).
            Default ``CLASS_NAMES``.
        class_colors: overlay colours, one RGB triple per class; ``None`` (default): ``class_palette(len(class_names))``
            (the bundle's ``CLASS_COLORS``, extended with generated hues for more than five classes).
        confidence_cmap: colormap of ``confidence.png``. Default 'inferno' (black = uniform 1/C, yellow = 1).
        feature_cmap: colormap of ``features.png``. Default 'jet' (blue -> red).
        title: the gallery's title.
        source: what the run segments (a folder, file or datalist): its name is added to the title.
        picture_key: the item key of a picture folder's name (see above); ``None``: not read.
        isolate_errors: when writing one image's pictures fails, log it, mark that output item as failed
            (``item["failed"] = reason``, which :class:`scripts.workflows.InferenceReport` records) and go on, instead
            of stopping the run. Items already marked failed are always skipped.

    Raises:
        ValueError: ``class_colors`` of another length than ``class_names``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        image_key: str = "image",
        pred_key: str | None = "pred",
        label_key: str | None = "label",
        confidence_key: str | None = "confidence",
        difficult_key: str | None = "difficult",
        refined_key: str | None = "refined",
        features_key: str | None = "features",
        gallery: bool = True,
        reverse_indexing: bool = True,
        alpha: float = 0.5,
        class_names: Sequence[str] = CLASS_NAMES,
        class_colors: Sequence[Sequence[int]] | None = None,
        confidence_cmap: str = "inferno",
        feature_cmap: str = "jet",
        title: str = "Segmentation pictures",
        source: str | os.PathLike | None = None,
        isolate_errors: bool = False,
        picture_key: str | None = PICTURE_KEY,
    ) -> None:
        if class_colors is None:
            class_colors = class_palette(len(class_names))
        if len(class_names) != len(class_colors):
            raise ValueError(f"got {len(class_names)} class names but {len(class_colors)} colours.")
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.keys = {
            "pred": pred_key,
            "label": label_key,
            "confidence": confidence_key,
            "difficult": difficult_key,
            "refined": refined_key,
            "features": features_key,
        }
        self.gallery = gallery
        self.reverse_indexing = reverse_indexing
        self.alpha = alpha
        self.class_names, self.class_colors = tuple(class_names), tuple(class_colors)
        self.confidence_cmap, self.feature_cmap = confidence_cmap, feature_cmap
        self.title = f"{title}: {os.path.basename(str(source))}" if source is not None else title
        self.isolate_errors = isolate_errors
        self.picture_key = picture_key
        self.rows: list[tuple[str, dict[str, str]]] = []

    # ------------------------------------------------------------------ Ignite
    def attach(self, engine: Engine) -> None:
        """Write pictures at every ``ITERATION_COMPLETED``, the gallery at ``COMPLETED``; reset at ``STARTED``."""
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if self.gallery:
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self, _engine: Engine | None = None) -> None:
        """Forget the rows of a previous run."""
        self.rows = []

    def iteration_completed(self, engine: Engine) -> None:
        """Write the pictures of every image of the iteration's batch."""
        outputs = engine.state.output
        batch = engine.state.batch
        outputs = decollate_batch(outputs) if isinstance(outputs, dict) else list(outputs)
        batch = decollate_batch(batch) if isinstance(batch, dict) else list(batch or [])
        for i, item in enumerate(outputs):
            extra = batch[i] if i < len(batch) else {}

            def get(key, item=item, extra=extra):
                value = item.get(key) if key is not None else None
                return extra.get(key) if value is None and key is not None else value

            if isinstance(item, dict) and FAILED_KEY in item:  # a file that failed earlier (InferenceReport)
                continue
            image = get(self.image_key)
            if image is None:
                raise KeyError(f"PictureWriter needs '{self.image_key}' in the engine's output.")
            meta = getattr(image, "meta", {}) or {}
            name = meta.get("filename_or_obj")
            picture = get(self.picture_key) if self.picture_key else None
            if picture is not None and not str(picture):  # a section of a stack without pictures
                continue
            arrays = {kind: get(key) for kind, key in self.keys.items()}
            try:
                self.write(image, name=name, folder=str(picture) if picture else meta.get(OUTPUT_NAME_KEY), **arrays)
            except Exception as e:
                if not self.isolate_errors or not isinstance(item, dict):
                    raise
                reason = f"{name}: pictures failed ({root_cause(e)})"
                logger.error("%s; going on with the next file", reason)
                item[FAILED_KEY] = reason

    def completed(self, _engine: Engine | None = None) -> Path:
        """Write the legend and the gallery; return the gallery's path."""
        return self.write_gallery()

    # ------------------------------------------------------------------ pictures
    def _spatial(self, x: Any) -> np.ndarray:
        """(C, d0, d1) MONAI layout (or (d0, d1): one channel) -> (C, H, W) file orientation, as a numpy array."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().float().numpy()
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"expected a channel-first 2D array (C, H, W), got shape {x.shape}.")
        return np.swapaxes(x, 1, 2) if self.reverse_indexing else x

    def _unique_name(self, name: str | os.PathLike | None, folder: str | None = None) -> str:
        if folder:  # a name that is unique already (the inference pre-flight's output name)
            return picture_folder(folder)
        base = f"image_{len(self.rows):04d}"
        if name:  # the stem as a plain file name, never a hidden one (the gallery skips those: temporary folders)
            base = re.sub(r"[^A-Za-z0-9._-]+", "_", file_stem(name)).lstrip(".") or base
        taken = {n for n, _ in self.rows}
        unique, k = base, 1
        while unique in taken:
            unique, k = f"{base}_{k}", k + 1
        return unique

    def write(
        self,
        image: Any,
        pred: Any | None = None,
        label: Any | None = None,
        name: str | os.PathLike | None = None,
        folder: str | None = None,
        confidence: Any | None = None,
        difficult: Any | None = None,
        refined: Any | None = None,
        features: Any | None = None,
    ) -> dict[str, str]:
        """Write the pictures of one image: ``input.png`` and one picture per array given.

        Args:
            image: (C, *spatial) network input (tensor or array), in MONAI layout (see ``reverse_indexing``).
            pred: the prediction: a (1, *spatial) or (*spatial) label map, or (C_out, *spatial) per-class output.
            label: ground truth, (1, *spatial) class indices or (C_out, *spatial) one-hot.
            name: the image's file name; its stem names the picture folder (``image_NNNN`` when ``None``), made
                unique among this run's folders (``_1``, ``_2``, ...).
            folder: the picture folder's name, taken as it is (:func:`scripts.workflows.picture_folder`: characters
                other than letters, digits, ``._-~`` percent-encoded); the inference passes its unique output name
                here. A folder written before is replaced as a whole: the pictures are written into a temporary
                folder renamed into place (:mod:`scripts.atomic`), so a killed run leaves all of them or none.
            confidence: (1, *spatial) confidence map ``max_c p(c|x)``.
            difficult: (1, *spatial) difficult-pixel mask.
            refined: (1, *spatial) refined label map.
            features: (1, *spatial) channel-mean feature map.

        Returns:
            ``{picture kind: path relative to output_dir}``; also recorded for the gallery.

        Raises:
            ValueError: an array whose spatial size differs from the image's.
        """
        img = self._spatial(image)
        arrays = {
            "pred": pred,
            "label": label,
            "confidence": confidence,
            "difficult": difficult,
            "refined": refined,
            "features": features,
        }
        arrays = {kind: self._spatial(a) for kind, a in arrays.items() if a is not None}
        for kind, a in arrays.items():
            if a.shape[1:] != img.shape[1:]:
                raise ValueError(f"image {img.shape} and {kind} {a.shape} must have the same spatial size.")
        folder = self._unique_name(name, folder)
        self.rows = [row for row in self.rows if row[0] != folder]
        with atomic_folder(self.output_dir / folder) as tmp:  # all pictures or none (a killed run)
            pictures = self._write_pictures(tmp, folder, img, arrays)
        self.rows.append((folder, pictures))
        return pictures

    def _write_pictures(self, tmp: Path, folder: str, img: np.ndarray, arrays: dict) -> dict[str, str]:
        """Write one image's pictures into ``tmp`` (renamed to ``folder`` afterwards); return their paths."""
        pictures: dict[str, str] = {}

        def save(kind: str, array: np.ndarray) -> None:
            write_png(tmp / f"{kind}.png", array)
            pictures[kind] = f"{folder}/{kind}.png"

        def labels(a: np.ndarray) -> np.ndarray:
            return a.argmax(axis=0) if a.shape[0] > 1 else np.rint(a[0]).astype(np.int64)

        save("input", grey_image(img))
        if "pred" in arrays:
            save("overlay", overlay_labels(img, labels(arrays["pred"]), self.class_colors, self.alpha))
        if "label" in arrays:
            save("label", overlay_labels(img, labels(arrays["label"]), self.class_colors, self.alpha))
        if "confidence" in arrays:
            save(
                "confidence",
                confidence_to_rgb(
                    arrays["confidence"][0], num_classes=len(self.class_names), cmap=self.confidence_cmap
                ),
            )
        if "difficult" in arrays:
            save("difficult", difficult_to_grey(arrays["difficult"][0]))
        if "refined" in arrays:
            save("refined", overlay_labels(img, labels(arrays["refined"]), self.class_colors, self.alpha))
        if "features" in arrays:
            save("features", feature_map_to_rgb(arrays["features"][0], self.feature_cmap))
        return pictures

    def folder_rows(self) -> list[tuple[str, dict[str, str]]]:
        """Gallery rows of every picture folder in ``output_dir`` (this run's and earlier runs'), sorted by name."""
        rows = dict(self.rows)
        if self.output_dir.is_dir():
            for sub in self.output_dir.iterdir():
                if sub.is_dir() and sub.name not in rows and not sub.name.startswith("."):  # not a temporary one
                    found = {k: f"{sub.name}/{k}.png" for k, _ in DEFAULT_COLUMNS if (sub / f"{k}.png").is_file()}
                    if found:
                        rows[sub.name] = found
        return sorted(rows.items())

    def write_gallery(self) -> Path:
        """Write ``legend.png`` and ``index.html`` listing every picture folder in ``output_dir`` (also those of
        earlier runs into the same folder); return the HTML path."""
        legend = write_png(self.output_dir / "legend.png", legend_image(self.class_names, self.class_colors))
        rows = self.folder_rows()
        path = write_gallery(self.output_dir, rows, DEFAULT_COLUMNS, self.title, legend=legend)
        logger.info("PictureWriter: %d image(s) (%d from this run), gallery %s", len(rows), len(self.rows), path)
        return path
