"""A MONAI ``Dataset`` whose items fail one by one: a file that cannot be loaded becomes a marked item, not a crash.

Used by inference.json: a truncated or otherwise undecodable image (which passes the pre-flight's header check) is
returned as ``{"image": <path>, "output_name": ..., "failed": "<path>: <reason>"}``; the run's
:class:`scripts.workflows.InferenceReport` (the evaluator's ``iteration_update``) skips such items, records them and
carries on with the next file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Callable

from monai.data import Dataset
from scripts.data.stacks import SECTION_KEY, STACK_SUFFIX

from .output_names import OUTPUT_NAME_KEY

__all__ = ["FAILED_KEY", "FaultTolerantDataset", "root_cause"]

logger = logging.getLogger(__name__)

#: Key of the failure reason in a marked item (and in the engine output of a skipped iteration).
FAILED_KEY = "failed"


def root_cause(error: BaseException) -> str:
    """``"Type: message"`` of the innermost cause of ``error`` (MONAI wraps transform errors in ``RuntimeError``
    chains whose outer messages name the transform, not the problem)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ if error.__cause__ is not None else error.__context__  # type: ignore[assignment]
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class FaultTolerantDataset(Dataset):
    """``monai.data.Dataset`` that turns an item whose transform fails into ``{image_key: path, output_name: ...,
    FAILED_KEY: reason}`` (only strings, so it collates), and copies the item's ``output_name`` into the loaded
    image's metadata (where ``SaveImaged``'s :func:`scripts.workflows.output_name_formatter`,
    :class:`scripts.transforms.SaveProbabilityMapsd` and :class:`scripts.visualize.PictureWriter` read it).

    Args:
        data: the items, e.g. the run's :class:`scripts.workflows.InferencePlan` (a sequence of its items).
        transform: the preprocessing.
        image_key: key of the image path / loaded image.
    """

    def __init__(self, data: Sequence, transform: Callable | None = None, image_key: str = "image") -> None:
        super().__init__(data=data, transform=transform)
        self.image_key = image_key

    def _transform(self, index: int) -> Any:
        item = self.data[index]
        try:
            out = super()._transform(index)
        except Exception as e:  # noqa: BLE001 - any failure of this one file is reported, the run goes on
            item = item if isinstance(item, dict) else {}
            path = str(item.get(self.image_key, item.get(f"{self.image_key}{STACK_SUFFIX}", f"item {index}")))
            where = f"{path} (section {item[SECTION_KEY]})" if SECTION_KEY in item else path
            reason = root_cause(e)
            logger.error("%s: cannot be loaded, skipped (%s)", where, reason)
            failed = {
                self.image_key: path,
                FAILED_KEY: f"{where}: cannot be loaded, the file is probably corrupt or truncated; re-copy or "
                f"re-export it ({reason})",
            }
            for key in (OUTPUT_NAME_KEY, SECTION_KEY):
                if key in item:
                    failed[key] = item[key] if key == SECTION_KEY else str(item[key])
            return failed
        if isinstance(item, dict) and OUTPUT_NAME_KEY in item and isinstance(out, dict):
            meta = getattr(out.get(self.image_key), "meta", None)
            if meta is not None:
                meta[OUTPUT_NAME_KEY] = str(item[OUTPUT_NAME_KEY])
        return out
