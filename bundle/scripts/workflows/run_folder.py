"""One run per folder: a new training run refuses a ``bundle_root`` that already holds one, unless told what to do.

``prepare_run_folder`` runs in ``train.json``'s pre-flight (:class:`scripts.workflows.TrainingPreflight`) before any
work:

- ``--resume True``: continue the run in the folder (its newest ``checkpoint_epoch=N.pt``);
- ``--overwrite True``: start over; the old ``models/`` and ``logs/`` are moved (not deleted) to
  ``<bundle_root>/archive/<UTC time>/``. The training pre-flight defers the move (``defer=True``) until the new run's
  first training step has succeeded (:class:`scripts.handlers.ArchivePreviousRun`): a run that fails before that, or
  is killed, leaves the old one in place (a MONAI Label server keeps serving its ``model.pt``);
- neither, and ``models/`` holds ``model.pt`` or a ``checkpoint_epoch=N.pt``: refused, in one line naming both.

The weights shipped with the bundle (``models/pretrained/``) are neither a run nor archived: training writes
``models/model.pt`` beside them and never touches them. In an extracted archive the shipped weights are
``models/model.pt`` (the Model Zoo layout, pinned by ``large_files.json``): a new run there is refused with a message
saying so (``monai.bundle.load``'s default ``workflow_type="train"`` gets the same refusal, since it runs
``train.json``'s pre-flight).

Event files left in ``logs/`` by a run that ended before writing any model are archived the same way (they would
otherwise be plotted with the new run). Temporary files left by a kill during a checkpoint write are deleted.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from scripts.checkpoint_files import TMP_SUFFIX, latest_checkpoint
from scripts.errors import RunFolderError
from scripts.networks.pinned import check_pinned_file

__all__ = ["SHIPPED", "PendingArchive", "checkpoint_to_resume", "prepare_run_folder", "run_files"]

logger = logging.getLogger(__name__)

#: Entries of ``models/`` that belong to the bundle, not to a run: the shipped weights (``models/pretrained/``) stay
#: where they are when a run is archived, and are never a reason to refuse a run.
SHIPPED = ("pretrained",)


def run_files(ckpt_dir: str | Path) -> list[Path]:
    """The files in ``ckpt_dir`` that make it hold a run: ``model.pt`` and ``checkpoint_epoch=N.pt``."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name == "model.pt" or p.name.startswith("checkpoint_epoch="))


class PendingArchive:
    """The previous run's files, to be moved to ``archive_root/<UTC time>/<folder name>/`` by :meth:`commit`.

    The files are listed when it is made, so files a new run writes into the same folders later stay where they are.
    """

    def __init__(self, folders: list[Path], archive_root: Path) -> None:
        self.archive_root = archive_root
        self.files = [
            (folder, path)
            for folder in folders
            if folder.is_dir()
            for path in sorted(folder.iterdir())
            if path.name not in SHIPPED
        ]
        self.target: Path | None = None

    def commit(self) -> Path:
        """Move the listed files (once); returns the archive folder."""
        if self.target is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            target, n = self.archive_root / stamp, 1
            while target.exists():
                n += 1
                target = self.archive_root / f"{stamp}_{n}"
            for folder, path in self.files:
                (target / folder.name).mkdir(parents=True, exist_ok=True)
                if path.exists():
                    shutil.move(str(path), str(target / folder.name / path.name))
            self.target = target
            logger.warning(
                "Moved the previous run's %s to %s.",
                " and ".join(sorted({f.name + "/" for f, _ in self.files})),
                target,
            )
        return self.target


def prepare_run_folder(
    ckpt_dir: str,
    log_dir: str,
    resume: bool = False,
    overwrite: bool = False,
    archive_dir: str | None = None,
    defer: bool = False,
) -> str | PendingArchive | None:
    """Make ``ckpt_dir``/``log_dir`` ready for one run, or refuse.

    Args:
        ckpt_dir: the run's ``models/`` folder.
        log_dir: the run's ``logs/`` folder (TensorBoard events, curves).
        resume: continue the run already there.
        overwrite: start over, moving the old ``models/`` and ``logs/`` to ``archive_dir/<UTC time>/``.
        archive_dir: where old runs go (default: ``<parent of ckpt_dir>/archive``).
        defer: do not move the old run yet: return a :class:`PendingArchive` whose ``commit()`` moves it.

    Returns:
        The archive folder used (``defer``: the :class:`PendingArchive`), or ``None`` when there is nothing to move.

    Raises:
        RunFolderError: a run is there and neither ``resume`` nor ``overwrite`` is set; both are set; or ``resume``
            is set and there is no resumable checkpoint.
    """
    ckpt, logs = Path(ckpt_dir), Path(log_dir)
    archive_root = Path(archive_dir) if archive_dir else ckpt.parent / "archive"
    if resume and overwrite:
        raise RunFolderError("--resume True and --overwrite True contradict each other; choose one.")
    if ckpt.is_dir():
        for tmp in ckpt.glob(f".*{TMP_SUFFIX}"):  # a checkpoint write killed half-way; the previous file is intact
            logger.warning("Removing %s, left by an interrupted checkpoint write.", tmp)
            tmp.unlink(missing_ok=True)
    if resume:
        latest_checkpoint(str(ckpt))  # raises, naming --overwrite, when there is nothing to resume
        return None
    found = run_files(ckpt)
    events = sorted(logs.glob("events.out.tfevents.*")) if logs.is_dir() else []
    if found and not overwrite:
        if [p.name for p in found] == ["model.pt"] and check_pinned_file(found[0]) == "match":
            raise RunFolderError(
                f"{found[0]} is the model this bundle ships (large_files.json pins it), not a training run: to use "
                "it, run configs/inference.json or monai.bundle.load(..., workflow_type='inference') (train.json "
                "builds a new, untrained network); to train, pass --bundle_root <another folder>, or --overwrite True "
                f"(moves it to {archive_root}/)."
            )
        raise RunFolderError(
            f"{ckpt} already holds a training run ({', '.join(p.name for p in found[:3])}); continue it with "
            f"--resume True, or start over with --overwrite True (moves the old models/ and logs/ to {archive_root}/)."
        )
    if not found and not events:
        return None
    pending = PendingArchive([ckpt, logs] if found else [logs], archive_root)
    if defer:
        logger.info(
            "The previous run in %s moves to %s/ once this run's first training step has succeeded.",
            ckpt.parent,
            archive_root,
        )
        return pending
    return str(pending.commit())


def checkpoint_to_resume(ckpt_dir: str, resume: bool) -> str | None:
    """The checkpoint a run continues from: with ``resume``, the newest ``checkpoint_epoch=N.pt`` in ``ckpt_dir``
    (:func:`scripts.checkpoint_files.latest_checkpoint`, which raises when there is none); else ``None``."""
    return latest_checkpoint(ckpt_dir) if resume else None
