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

Orientation: MONAI's ``LoadImage`` readers for PNG/TIFF (``PILReader``, ``ITKReader``) use ``reverse_indexing=True``
and hand the network arrays of shape (C, W, H); ``reverse_indexing=True`` (default, as in MONAI's ``PILWriter``)
swaps the two spatial axes back so that the pictures look like the image files. Use ``False`` for arrays that are
already (C, H, W) (e.g. loaded with ``NumpyReader`` or ``scripts.data.read_image``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from monai.data import decollate_batch
from monai.networks.utils import eval_mode
from monai.utils import min_version, optional_import

from scripts.data.classes import CLASS_NAMES, class_palette
from scripts.workflows.fault_tolerant import FAILED_KEY, root_cause
from scripts.data.io import file_stem, write_png
from scripts.workflows.output_names import OUTPUT_NAME_KEY
from scripts.workflows.inference_plan import picture_folder
from scripts.transforms.difficult_pixels import DifficultPixelRefine
from scripts.visualize.confidence import confidence_to_rgb, difficult_to_grey
from scripts.visualize.feature_maps import MeanFeatureMap, feature_map_to_rgb
from scripts.visualize.gallery import DEFAULT_COLUMNS, write_gallery
from scripts.visualize.overlay import grey_image, legend_image, overlay_labels

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["PictureWriter"]

logger = logging.getLogger(__name__)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


class PictureWriter:
    """Write per-image pictures and an HTML gallery for an inference run (module docstring: what and where).

    Attach to a MONAI ``SupervisedEvaluator`` (``val_handlers``) or call :meth:`write` directly. At every
    iteration it reads the decollated ``engine.state.output`` items (``engine.state.batch`` is used for keys the
    output lacks): ``image_key`` (C, *spatial) the network input, ``pred_key`` (C, *spatial) the network output
    *per class* -- logits with ``softmax=True``, probabilities with ``softmax=False`` (an arg-max map with one channel
    is accepted for the overlay alone) -- and optionally ``label_key`` (one channel of class indices, or one-hot).
    Postprocessing runs before handlers, so keep the per-class output under its own key before ``AsDiscreted``
    (e.g. ``CopyItemsd(keys="pred", names="logits")`` and ``pred_key="logits", softmax=True``). The file name comes
    from ``image.meta["filename_or_obj"]``. The gallery is written when the engine completes; rows are reset when
    it starts.

    Example (bundle config, in the evaluator's ``val_handlers``)::

        {"_target_": "scripts.visualize.PictureWriter", "output_dir": "$@output_dir + '/pictures'",
         "pred_key": "logits", "softmax": true, "feature_maps": true, "network": "@network",
         "inferer": "@inferer", "feature_module": "final_conv"}

    Args:
        output_dir: folder of the run's pictures (created).
        overlay: write ``overlay.png`` (and ``label.png`` when a label is known).
        confidence: write ``confidence.png``.
        difficult: write ``difficult.png``.
        refined: write ``refined.png``.
        feature_maps: write ``features.png``; needs ``network`` and ``feature_module`` and costs one more inference
            pass per image (through ``inferer`` when given). That pass never changes the network: it runs in eval mode
            under ``torch.no_grad`` (the network's mode is restored afterwards) and under the engine's autocast.
        gallery: write ``index.html`` and ``legend.png``.
        image_key, pred_key, label_key: keys in the engine's output (``label_key=None``: no ground truth).
        softmax: ``pred`` holds logits (apply softmax); ``False``: it holds probabilities.
        reverse_indexing: the arrays are (C, W, H) as MONAI's PIL/ITK readers give them; swap back to (H, W).
        refiner: the difficult-pixel refinement (the configs pass ``@refinement``: their class priorities and
            fallback); default ``DifficultPixelRefine()``, which marks difficult pixels (threshold = mean confidence)
            but refines none (no priority classes). It receives probabilities, so it must have ``softmax=False``.
        network: the model, for ``feature_maps``.
        inferer: how to run ``network`` on a whole image for ``feature_maps`` (e.g. the evaluator's inferer, called
            as ``inferer(image, wrapped_network)``); ``None`` calls the network on the whole image.
        feature_module: name(s) of the module(s) whose input is the last layer's feature maps (the final 1x1
            conv); see :class:`scripts.visualize.FeatureMapHook`.
        alpha: colour weight of the overlays, 0..1. Default 0.5.
        class_names: legend names, one per class. Default ``CLASS_NAMES``.
        class_colors: overlay colours, one RGB triple per class; ``None`` (default): ``class_palette(len(class_names))``
            (the bundle's ``CLASS_COLORS``, extended with generated hues for more than five classes).
        confidence_cmap: colormap of ``confidence.png``. Default 'inferno' (black = uniform 1/C, yellow = 1).
        feature_cmap: colormap of ``features.png``. Default 'jet' (blue -> red).
        title: the gallery's title.
        amp: run the feature-map pass under ``torch.autocast("cuda", **amp_kwargs)``. ``None`` (default): as the
            engine the writer is attached to does (its ``amp`` and ``amp_kwargs``), so the picture is computed like
            the prediction; ``False`` when called without an engine.
        amp_kwargs: keyword arguments of ``torch.autocast`` for ``amp=True`` (``None``: the engine's, or none).
        isolate_errors: when writing one image's pictures fails, log it, mark that output item as failed
            (``item["failed"] = reason``, which :class:`scripts.workflows.InferenceReport` records) and go on, instead
            of stopping the run. Items already marked failed are always skipped.

    Raises:
        ValueError: ``feature_maps`` without ``network``/``feature_module``, a refiner with ``softmax=True``, or
            ``class_colors`` of another length than ``class_names``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        overlay: bool = True,
        confidence: bool = True,
        difficult: bool = True,
        refined: bool = True,
        feature_maps: bool = False,
        gallery: bool = True,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str | None = "label",
        softmax: bool = False,
        reverse_indexing: bool = True,
        refiner: DifficultPixelRefine | None = None,
        network: torch.nn.Module | None = None,
        inferer: Callable[..., torch.Tensor] | None = None,
        feature_module: Sequence[str] | str | None = None,
        alpha: float = 0.5,
        class_names: Sequence[str] = CLASS_NAMES,
        class_colors: Sequence[Sequence[int]] | None = None,
        confidence_cmap: str = "inferno",
        feature_cmap: str = "jet",
        title: str = "Segmentation pictures",
        amp: bool | None = None,
        amp_kwargs: dict | None = None,
        isolate_errors: bool = False,
    ) -> None:
        if refiner is not None and refiner.softmax:
            raise ValueError("the PictureWriter passes probabilities to the refiner: give it softmax=False "
                             "(and set the writer's softmax=True when pred holds logits).")
        self.feature_net: MeanFeatureMap | None = None
        if feature_maps:
            if network is None or feature_module is None:
                raise ValueError("feature_maps=True needs the network and the feature_module name (the module whose "
                                 "input is the last layer's feature maps, e.g. the final 1x1 conv).")
            self.feature_net = MeanFeatureMap(network, feature_module)
        if class_colors is None:
            class_colors = class_palette(len(class_names))
        if len(class_names) != len(class_colors):
            raise ValueError(f"got {len(class_names)} class names but {len(class_colors)} colours.")
        self.output_dir = Path(output_dir)
        self.overlay, self.confidence, self.difficult, self.refined = overlay, confidence, difficult, refined
        self.gallery = gallery
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.softmax = softmax
        self.reverse_indexing = reverse_indexing
        self.refiner = refiner or DifficultPixelRefine()
        self.inferer = inferer
        self.alpha = alpha
        self.class_names, self.class_colors = tuple(class_names), tuple(class_colors)
        self.confidence_cmap, self.feature_cmap = confidence_cmap, feature_cmap
        self.title = title
        self.amp, self.amp_kwargs = amp, amp_kwargs
        self._engine_amp: tuple[bool, dict] = (False, {})
        self.isolate_errors = isolate_errors
        self.rows: list[tuple[str, dict[str, str]]] = []

    # ------------------------------------------------------------------ Ignite
    def attach(self, engine: Engine) -> None:
        """Write pictures at every ``ITERATION_COMPLETED``, the gallery at ``COMPLETED``; reset at ``STARTED``."""
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if self.gallery:
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self, _engine: Engine | None = None) -> None:
        """Forget the rows of a previous run; take the autocast settings of the engine (see ``amp``)."""
        self.rows = []
        if _engine is not None:
            self._engine_amp = (bool(getattr(_engine, "amp", False)), dict(getattr(_engine, "amp_kwargs", None) or {}))

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
            image, pred = get(self.image_key), get(self.pred_key)
            if image is None or pred is None:
                raise KeyError(f"PictureWriter needs '{self.image_key}' and '{self.pred_key}' in the engine's output.")
            meta = getattr(image, "meta", {}) or {}
            name = meta.get("filename_or_obj")
            try:
                self.write(image, pred, get(self.label_key), name=name, folder=meta.get(OUTPUT_NAME_KEY))
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
    def _spatial(self, x: np.ndarray) -> np.ndarray:
        """(C, d0, d1) MONAI layout -> (C, H, W) file orientation."""
        if x.ndim != 3:
            raise ValueError(f"expected a channel-first 2D array (C, H, W), got shape {x.shape}.")
        return np.swapaxes(x, 1, 2) if self.reverse_indexing else x

    def _unique_name(self, name: str | os.PathLike | None, folder: str | None = None) -> str:
        if folder:  # a name that is unique already (the inference pre-flight's output name)
            return picture_folder(folder)
        base = picture_folder(file_stem(name)) if name else f"image_{len(self.rows):04d}"
        taken = {n for n, _ in self.rows}
        unique, k = base, 1
        while unique in taken:
            unique, k = f"{base}_{k}", k + 1
        return unique

    def write(
        self,
        image: Any,
        pred: Any,
        label: Any | None = None,
        name: str | os.PathLike | None = None,
        folder: str | None = None,
    ) -> dict[str, str]:
        """Write the enabled pictures of one image.

        Args:
            image: (C, *spatial) network input (tensor or array), in MONAI layout (see ``reverse_indexing``).
            pred: (C_out, *spatial) per-class logits/probabilities (see ``softmax``), or a (1, *spatial) label map
                when only the overlay is wanted.
            label: optional ground truth, (1, *spatial) class indices or (C_out, *spatial) one-hot.
            name: the image's file name; its stem names the picture folder (``image_NNNN`` when ``None``), made
                unique among this run's folders (``_1``, ``_2``, ...).
            folder: the picture folder's name, taken as it is (non-file-name characters replaced by ``_``); the
                inference passes its unique output name here. A folder written before is replaced.

        Returns:
            ``{picture kind: path relative to output_dir}``; also recorded for the gallery.

        Raises:
            ValueError: shapes that disagree, or a one-channel ``pred`` with confidence/difficult/refined enabled.
        """
        img = self._spatial(_numpy(image))
        out = self._spatial(_numpy(pred))
        if out.shape[1:] != img.shape[1:]:
            raise ValueError(f"image {img.shape} and prediction {out.shape} must have the same spatial size.")
        folder = self._unique_name(name, folder)
        self.rows = [row for row in self.rows if row[0] != folder]
        pictures: dict[str, str] = {}

        def save(kind: str, array: np.ndarray) -> None:
            rel = f"{folder}/{kind}.png"
            write_png(self.output_dir / rel, array)
            pictures[kind] = rel

        save("input", grey_image(img))
        if out.shape[0] > 1:
            prob = out.astype(np.float64)
            if self.softmax:
                prob = np.exp(prob - prob.max(axis=0, keepdims=True))
                prob /= prob.sum(axis=0, keepdims=True)
            labels = prob.argmax(axis=0)
        elif self.confidence or self.difficult or self.refined:
            raise ValueError(
                f"'{self.pred_key}' has one channel (an arg-max label map?): confidence, difficult pixels and "
                "refinement need the per-class output; keep it under its own key before AsDiscreted, or disable them."
            )
        else:
            labels = np.rint(out[0]).astype(np.int64)
        if self.overlay:
            save("overlay", overlay_labels(img, labels, self.class_colors, self.alpha))
            if label is not None:
                lab = self._spatial(_numpy(label))
                lab = lab.argmax(axis=0) if lab.shape[0] > 1 else np.rint(lab[0]).astype(np.int64)
                save("label", overlay_labels(img, lab, self.class_colors, self.alpha))
        if self.confidence or self.difficult or self.refined:
            refined, conf, diff = self.refiner(prob, return_maps=True)
            if self.confidence:
                save("confidence", confidence_to_rgb(conf[0], num_classes=prob.shape[0], cmap=self.confidence_cmap))
            if self.difficult:
                save("difficult", difficult_to_grey(diff[0]))
            if self.refined:
                save("refined", overlay_labels(img, refined[0].astype(np.int64), self.class_colors, self.alpha))
        if self.feature_net is not None:
            save("features", feature_map_to_rgb(self._spatial(self._features(image))[0], self.feature_cmap))
        self.rows.append((folder, pictures))
        return pictures

    def _features(self, image: Any) -> np.ndarray:
        """(1, *spatial) channel-mean feature map of the whole image, in MONAI layout.

        An extra forward pass: in eval mode (BatchNorm uses its running statistics and does not update them, dropout
        is off) under ``torch.no_grad``, with the network's previous mode restored afterwards, and under the same
        autocast as the engine's own pass (``amp``).
        """
        net = self.feature_net
        device = next(net.module.parameters()).device
        x = torch.as_tensor(_numpy(image), dtype=torch.float32, device=device)[None]
        amp = self._engine_amp[0] if self.amp is None else self.amp
        amp_kwargs = self._engine_amp[1] if self.amp_kwargs is None else self.amp_kwargs
        with eval_mode(net.module), torch.autocast("cuda", enabled=amp, **amp_kwargs):
            fm = self.inferer(x, net) if self.inferer is not None else net(x)
        return _numpy(fm)[0]

    def folder_rows(self) -> list[tuple[str, dict[str, str]]]:
        """Gallery rows of every picture folder in ``output_dir`` (this run's and earlier runs'), sorted by name."""
        rows = dict(self.rows)
        if self.output_dir.is_dir():
            for sub in self.output_dir.iterdir():
                if sub.is_dir() and sub.name not in rows:
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
