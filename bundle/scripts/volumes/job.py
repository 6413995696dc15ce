"""A volume inference job: the input, the output and its blocks, planned once by the driver, run block by block by
the workers.

:meth:`VolumeJob.prepare` (the driver, before the model loads) opens the input lazily (:func:`open_volume`), checks
the first section against the intensity rule (a stack file: decides its one intensity range from a few of its
sections, as the single-process stack route does), takes the output's lock, and decides what to do with an existing
output:

- none: it is created (:func:`scripts.volumes.ome_zarr.create_output`, under a temporary name renamed into place);
- one an earlier run of the same job left (the same input, model sha256 and settings, stored in the output):
  resumed -- only the blocks without a done-marker are predicted (:mod:`scripts.volumes.blocks`);
- any other (another model, input or setting, or not this bundle's): refused in one line, unless ``overwrite``,
  which replaces it (only a zarr output is ever deleted).

:meth:`VolumeJob.run_block` (a worker) reads one block of sections, predicts each (:class:`SectionPredictor`),
writes the block's chunks, then marks it done. The job pickles small (paths and settings), so that Dask sends it to
every task.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.atomic import atomic_folder, remove_leftovers
from scripts.checks import check_positive_int
from scripts.data.intensity import check_intensity_rule, header_suffices, intensity_scaling
from scripts.locks import lock_folder
from scripts.networks.pinned import file_sha256
from scripts.transforms.save_probabilities import PROBABILITY_DTYPES

from .blocks import BlockLedger, block_ranges, state_folder
from .ome_zarr import NGFF_VERSIONS, create_output, label_image_parent, list_label, read_record, write_block
from .predict import section_value_range
from .sources import HDF5_EXTENSIONS, STACK_KINDS, VolumeError, VolumeSource, is_zarr, open_volume

__all__ = ["VolumeJob", "default_output"]

logger = logging.getLogger(__name__)

#: The default block's largest size (sections), for inputs chunked deeper along ``z`` (a block then reads part of
#: its chunks; zarr decodes one chunk at a time).
MAX_DEFAULT_BLOCK = 64

#: Record keys that must match for an output to be resumed (the run id and the bundle version need not).
_SETTINGS = (
    "input",
    "volume_key",
    "shape",
    "dtype",
    "model_sha256",
    "intensity_rule",
    "intensity_max",
    "intensity_statistics",
    "value_range",
    "class_names",
    "probability_dtype",
    "block_sections",
    "chunk_size",
    "ome_zarr_version",
)


def default_output(input: str | os.PathLike, output_dir: str | os.PathLike) -> str:
    """``<output_dir>/<input name without .zarr/.ome.zarr/.h5/.tif...>_seg.ome.zarr``, volume.json's default."""
    name = Path(str(input).rstrip("/")).name
    for ext in (".ome.zarr", ".zarr", *HDF5_EXTENSIONS, ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return str(Path(output_dir) / f"{name}_seg.ome.zarr")


class VolumeJob:
    """The plan of a volume inference run (see the module docstring).

    Args:
        input: the volume (:func:`scripts.volumes.open_volume`).
        output: the OME-Zarr to write; ``<image>/labels/<name>`` writes a label image of the OME-Zarr input.
        volume_key: the array inside the input (HDF5 dataset, zarr array path, OME-Zarr level); default: the only
            volume, or an OME-Zarr's full resolution.
        in_channels, class_names, intensity_rule, intensity_max: inference.json's settings.
        intensity_statistics: the model's training statistics (inference.json's ``intensity_statistics``): the
            ``"auto"`` rule maps other bit depths onto them, as for a 2-D file.
        save_probabilities: also write the class probabilities (``<output>/probabilities``).
        probability_dtype: their storage (``uint8``, ``uint16``, ``float32``).
        block_sections: sections per block (one Dask task, one done-marker); default: the input's chunk size along
            ``z`` (each input chunk is then read once), at most 64.
        chunk_size: the output's chunk size along ``y`` and ``x``.
        ome_zarr_version: ``"0.4"`` or ``"0.5"``; default: the input's (an OME-Zarr), else 0.4.
        overwrite: replace an output that is not this job's to resume.
        model: the model file (its sha256 is recorded; ``None``: untrained weights).
    """

    def __init__(
        self,
        input: str | os.PathLike,
        output: str | os.PathLike,
        volume_key: str | None = None,
        in_channels: int = 1,
        class_names: Sequence[str] = (),
        intensity_rule: str = "auto",
        intensity_max: float = 255,
        intensity_statistics: dict | None = None,
        save_probabilities: bool = False,
        probability_dtype: str = "uint8",
        block_sections: int | None = None,
        chunk_size: int = 1024,
        ome_zarr_version: str | None = None,
        overwrite: bool = False,
        model: str | os.PathLike | None = None,
    ) -> None:
        self.input = str(Path(input).absolute())
        self.output = str(Path(output).absolute())
        self.volume_key = volume_key
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.class_names = [str(c) for c in class_names]
        self.intensity_rule = check_intensity_rule(intensity_rule)
        self.intensity_max = float(intensity_max)
        self.intensity_statistics = intensity_statistics if self.intensity_rule == "auto" else None
        self.value_range: list[float] | None = None
        self.save_probabilities = bool(save_probabilities)
        if probability_dtype not in PROBABILITY_DTYPES:
            raise VolumeError(
                f"probability_dtype must be one of {', '.join(PROBABILITY_DTYPES)}, got {probability_dtype!r}."
            )
        self.probability_dtype = probability_dtype
        self.block_sections = check_positive_int("block_sections", block_sections, allow_none=True)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        if ome_zarr_version is not None and str(ome_zarr_version) not in NGFF_VERSIONS:
            raise VolumeError(
                f"ome_zarr_version must be one of {', '.join(NGFF_VERSIONS)} or null, got {ome_zarr_version!r}."
            )
        self.ome_zarr_version = None if ome_zarr_version is None else str(ome_zarr_version)
        self.overwrite = bool(overwrite)
        self.model = None if model is None else str(model)
        self.source: VolumeSource | None = None
        self.ledger = BlockLedger(state_folder(self.output))
        self.ranges: list[tuple[int, int]] = []
        self.pending: list[int] = []
        self.run_id: str | None = None
        self.resumed = False
        self._lock: Any = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_lock"] = None  # the driver's
        return state

    # ------------------------------------------------------------------ driver
    def prepare(self) -> VolumeJob:
        """Check the input, lock and create (or resume) the output, plan the blocks (module docstring).

        Raises:
            VolumeError: the input cannot be used, its first section is refused by the intensity rule, the output
                is the input or another run's (without ``overwrite``), or it is not a zarr.
            RunFolderError: another run writes this output.
        """
        source = open_volume(self.input, self.volume_key, self.in_channels)
        self.source = source
        self.value_range = self._stack_range(source)
        first = source.read(0, 1)[0]
        try:
            if self.value_range is None:
                section_value_range(first, self.intensity_rule, self.intensity_max, self.intensity_statistics)
        except ValueError as e:
            raise VolumeError(f"{source.describe()}: section 0: {e}") from None
        self._check_output_place(source)
        block = self.block_sections or min(source.chunk_sections, MAX_DEFAULT_BLOCK)
        version = self.ome_zarr_version or (source.ngff_version if source.ngff_version in NGFF_VERSIONS else "0.4")
        self.block_sections, self.ome_zarr_version = block, version
        self.ranges = block_ranges(source.shape[0], block)
        self.ledger.folder.mkdir(parents=True, exist_ok=True)
        self._lock = lock_folder(self.ledger.folder, purpose="volume inference")
        record = {
            "input": self.input,
            "volume_key": source.key,
            "shape": list(source.shape),
            "dtype": source.dtype,
            "model_sha256": file_sha256(self.model) if self.model and os.path.isfile(self.model) else None,
            "intensity_rule": self.intensity_rule,
            "intensity_max": self.intensity_max,
            "intensity_statistics": self.intensity_statistics,
            "value_range": self.value_range,
            "class_names": self.class_names,
            "probability_dtype": self.probability_dtype if self.save_probabilities else None,
            "block_sections": block,
            "chunk_size": self.chunk_size,
            "ome_zarr_version": version,
        }
        self._open_output(record, source)
        done = self.ledger.done()
        self.pending = [i for i in range(len(self.ranges)) if i not in done]
        return self

    def _stack_range(self, source: VolumeSource) -> list[float] | None:
        """A stack file's one intensity range, decided as the single-process stack route decides it (the pixel type,
        else up to 8 evenly spaced sections: :func:`scripts.data.stacks.sample_pixels`); ``None`` for other inputs
        (each section scaled as a 2-D file) and for the ``"percentile"`` rule (each section's own)."""
        if source.kind not in STACK_KINDS or self.intensity_rule == "percentile":
            return None
        rule, peak, stats = self.intensity_rule, self.intensity_max, self.intensity_statistics
        try:
            if header_suffices(source.dtype, rule, peak, stats):
                scaling = intensity_scaling(None, rule, peak, source.dtype, stats)
            else:
                from scripts.data.stacks import sample_pixels

                scaling = intensity_scaling(sample_pixels(source.path), rule, peak, source.dtype, stats)
        except ValueError as e:
            raise VolumeError(f"{source.describe()}: {e}") from None
        return [float(scaling.low), float(scaling.high)]

    def _check_output_place(self, source: VolumeSource) -> None:
        """The output is not the input nor inside it, except as a label image of an OME-Zarr input."""
        out, image = Path(self.output), Path(self.input)
        if out.parent.name == "labels" and out.parent.parent == image:
            if source.kind != "ome-zarr":
                raise VolumeError(f"{out}: a label image needs an OME-Zarr input; {image} is {source.kind}.")
            return
        if out == image or image in out.parents:
            raise VolumeError(
                f"{out}: the output would be written into the input {image}; give another --output (a label image "
                "of an OME-Zarr input: --output <input>/labels/<name>)."
            )

    def _open_output(self, record: dict, source: VolumeSource) -> None:
        out = Path(self.output)
        earlier = read_record(out)
        if earlier is not None and all(earlier.get(k) == record[k] for k in _SETTINGS) and not self.overwrite:
            self.run_id, self.resumed = str(earlier.get("run_id")), True
            if self.ledger.run_id() != self.run_id:  # markers of another output (or none): nothing is known done
                self.ledger.reset(self.run_id)
            return
        if out.exists():
            if not is_zarr(out):
                raise VolumeError(f"{out} exists and is not a zarr; give another --output (it is never deleted).")
            if not self.overwrite:
                differ = [k for k in _SETTINGS if earlier is not None and earlier.get(k) != record[k]]
                why = (
                    f"an earlier run with other settings ({', '.join(differ)})"
                    if differ
                    else "a zarr this bundle did not write"
                )
                raise VolumeError(
                    f"{out} holds {why}; --overwrite True replaces it, or give another --output (the same command "
                    "and settings resume an interrupted run)."
                )
        remove_leftovers(out.parent)  # a killed run's half-made output (a temporary name)
        self.run_id, self.resumed = uuid.uuid4().hex, False
        record = {**record, "run_id": self.run_id, "bundle_version": _bundle_version()}
        self.ledger.reset(self.run_id)  # before the output exists: an old marker never counts for the new output
        image = label_image_parent(out)
        with atomic_folder(out) as tmp:  # never a half-made output: it appears whole, with its record
            create_output(
                tmp,
                source.shape,
                record["block_sections"],
                self.chunk_size,
                record["ome_zarr_version"],
                self.class_names,
                record,
                source.scale,
                source.units,
                self.probability_dtype if self.save_probabilities else None,
                name=out.name,
                label_image=image is not None,
                translation=source.translation,
            )
        if image is not None:
            list_label(image, out.name)

    def log(self) -> VolumeJob:
        """Log the plan: the input, the output, the blocks to predict."""
        source = self.source
        n = len(self.ranges)
        logger.info(
            "volume: %s; output %s (OME-Zarr %s%s%s); %d block(s) of %d section(s): %d done by an earlier run, %d to "
            "predict; intensity_rule=%s",
            source.describe() if source else self.input,
            self.output,
            self.ome_zarr_version,
            ", a label image of the input" if label_image_parent(self.output) else "",
            ", with probabilities" if self.save_probabilities else "",
            n,
            self.block_sections,
            n - len(self.pending),
            len(self.pending),
            self.intensity_rule,
        )
        return self

    def release(self) -> None:
        """Release the output's lock (the end of the run)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def clear_state(self) -> None:
        """Remove the state folder (markers, log) -- for an output that is finished and will not be resumed."""
        shutil.rmtree(self.ledger.folder, ignore_errors=True)

    # ------------------------------------------------------------------ worker
    def run_block(self, block: int, predictor: Any, worker: str | None = None) -> dict:
        """Predict and write one block, then mark it done; a block already marked is not written again.

        Returns:
            ``{"block", "sections", "seconds", "skipped"}``.
        """
        start, stop = self.ranges[block]
        if self.ledger.is_done(block):
            return {"block": block, "sections": 0, "seconds": 0.0, "skipped": True}
        t0 = time.perf_counter()
        self.ledger.log("start", block, f"{start}-{stop}")
        sections = self.source.read(start, stop)  # type: ignore[union-attr]
        try:
            labels, probs = predictor.predict_block(list(sections), self.value_range, self.intensity_statistics)
        except ValueError as e:  # e.g. the intensity rule refuses a section
            raise VolumeError(f"{self.input}: sections {start}..{stop - 1}: {e}") from None
        del sections
        write_block(self.output, start, labels, probs)
        seconds = time.perf_counter() - t0
        self.ledger.mark(block, start, stop, seconds, worker)
        return {"block": block, "sections": stop - start, "seconds": seconds, "skipped": False}


def _bundle_version() -> str:
    import scripts

    return scripts.__version__
