"""Data loading that fails loudly, naming the file: no exception is lost in a loader thread.

- :class:`ThreadDataLoader`: MONAI's ``ThreadDataLoader`` whose background thread hands any exception to the
  training thread (MONAI's lets the thread die and the epoch end early, so training runs zero iterations and exits 0).
- :func:`collate_naming_files`: MONAI's ``list_data_collate``; when the items of a batch cannot be stacked, the error
  names each item's file and shape.
- :class:`NamingCompose`: MONAI's ``Compose``; when a transform fails, the error names the item's file.

All three raise :class:`~scripts.errors.DataLoadingError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.data import ThreadDataLoader as _MonaiThreadDataLoader
from monai.data import list_data_collate
from monai.data.thread_buffer import ThreadBuffer
from monai.transforms import Compose
from scripts.errors import DataLoadingError, UserError

__all__ = ["NamingCompose", "ThreadDataLoader", "collate_naming_files", "item_name"]


def item_name(item: Any, key: str = "image") -> str:
    """The file an item was loaded from (a path string, or a ``MetaTensor``'s ``filename_or_obj``), or ``"?"``."""
    if isinstance(item, (list, tuple)) and item:
        item = item[0]
    if not isinstance(item, dict):
        return "?"
    value = item.get(key)
    if isinstance(value, str):
        return value
    meta = getattr(value, "meta", None) or {}
    name = meta.get("filename_or_obj", "?")
    return str(name[0] if isinstance(name, (list, tuple)) and name else name)


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _flatten(batch: Sequence) -> list:
    out: list = []
    for item in batch:
        out.extend(_flatten(item) if isinstance(item, (list, tuple)) else [item])
    return out


def collate_naming_files(batch: Sequence) -> Any:
    """``monai.data.list_data_collate``, raising :class:`DataLoadingError` naming every item's file and shape."""
    try:
        return list_data_collate(batch)
    except Exception as e:  # noqa: BLE001 - any collate failure: say which items
        items = _flatten(batch)
        shapes = ", ".join(
            f"{item_name(i)} image {tuple(getattr(i.get('image'), 'shape', ()))}" for i in items if isinstance(i, dict)
        )
        raise DataLoadingError(
            f"the items of a batch cannot be stacked ({shapes}): {_root_cause(e)}. Each image must load as "
            "(in_channels, H, W) at patch_size; run the integrity check (python -m scripts.data.prepare check ...) "
            "and re-save the odd file as a grey or RGB (H, W, 3) PNG."
        ) from e


class NamingCompose(Compose):
    """``monai.transforms.Compose`` whose failures raise :class:`DataLoadingError` naming the item's file
    (MONAI's message says which transform failed, not on which image). Same arguments as ``Compose``."""

    def __call__(self, input_, *args: Any, **kwargs: Any):
        try:
            return super().__call__(input_, *args, **kwargs)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - any transform failure: name the file
            cause = _root_cause(e)
            raise DataLoadingError(
                f"{item_name(input_)}: loading/transforming this item failed ({type(cause).__name__}: {cause}). Check "
                "the file (python -m scripts.data.prepare check ...), replace it, or remove it from the datalist."
            ) from e


class _RaisingBuffer(ThreadBuffer):
    """``ThreadBuffer`` that re-raises, in the consuming thread, an exception of the producing thread."""

    def enqueue_values(self) -> None:
        try:
            super().enqueue_values()
        except BaseException as e:  # noqa: B036 - handed over to the consumer, which raises it
            self.error = e

    def __iter__(self):
        self.error = None
        yield from super().__iter__()
        if self.error is not None:
            error, self.error = self.error, None
            if isinstance(error, UserError):
                raise error
            raise DataLoadingError(f"the data loader failed: {type(error).__name__}: {error}") from error


class ThreadDataLoader(_MonaiThreadDataLoader):
    """MONAI ``ThreadDataLoader`` (same arguments) whose loading errors reach the training loop.

    The default ``collate_fn`` is :func:`collate_naming_files`.
    """

    def __init__(self, dataset: Any, **kwargs: Any) -> None:
        kwargs.setdefault("collate_fn", collate_naming_files)
        super().__init__(dataset, **kwargs)

    def __iter__(self):
        buffer = _RaisingBuffer(super(_MonaiThreadDataLoader, self).__iter__(), self.buffer_size, self.buffer_timeout)
        for value in buffer:
            for _ in range(self.repeats):
                yield value
