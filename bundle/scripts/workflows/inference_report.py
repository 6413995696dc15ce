"""Fault isolation and the per-file report of an inference run (``<output_dir>/inference_report.json``).

:class:`InferenceReport` plays two parts in inference.json:

- the evaluator's ``iteration_update``: it runs MONAI's own iteration (load -> network -> postprocessing) for one
  file and, when that raises (unreadable pixels, wrong channels, out of memory, a write error), records the file as
  failed with the reason and lets the run go on with the next file;
- an Ignite handler (``val_handlers``): it times each file and writes the report after every file, so a run that is
  stopped leaves a report of what is done; a restarted run skips the finished files (see
  :class:`scripts.workflows.InferencePlan`).

``finish()`` (the last expression of inference.json's ``run``) writes the final report, logs a summary, and raises
:class:`InferenceFailed` when any input failed (in the pre-flight or during the run), after every other file was
finished: ``python -m monai.bundle run inference ...`` then exits with status 1.

A stack is one input predicted as one item per section: its record stays ``"pending"`` until its last section is
written (its outputs are renamed into place then), collects the seconds of all its sections, and fails as a whole when
one section fails: its open output stacks are dropped (:func:`scripts.data.stack_writers.abort_sections`) and its
remaining sections are skipped without being predicted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from scripts.data.datalist import write_json
from scripts.data.stack_writers import abort_sections
from scripts.data.stacks import SECTION_KEY

from .fault_tolerant import FAILED_KEY, root_cause
from .inference_plan import REPORT_NAME, InferencePlan
from .output_names import OUTPUT_NAME_KEY

__all__ = ["InferenceFailed", "InferenceReport"]

logger = logging.getLogger(__name__)


class InferenceFailed(RuntimeError):
    """Raised at the end of an inference run in which some inputs failed; the others were all processed."""


def _names(batch: Any) -> list[str]:
    """Output names of a collated batch (a dict of lists) or of decollated items (a list of dicts)."""
    if isinstance(batch, Mapping):
        names = batch.get(OUTPUT_NAME_KEY)
        return [str(n) for n in names] if isinstance(names, (list, tuple)) else [] if names is None else [str(names)]
    if isinstance(batch, Sequence):
        return [str(item[OUTPUT_NAME_KEY]) for item in batch if isinstance(item, Mapping) and OUTPUT_NAME_KEY in item]
    return []


def _sections(batch: Any, count: int) -> list[int | None]:
    """Section indices of a collated batch's items (``None`` for a 2D image), ``count`` of them."""
    values = batch.get(SECTION_KEY) if isinstance(batch, Mapping) else None
    if values is None:
        return [None] * count
    values = values.tolist() if hasattr(values, "tolist") else values
    values = values if isinstance(values, (list, tuple)) else [values]
    return [None if v is None else int(v) for v in values] + [None] * (count - len(values))


class InferenceReport:
    """Per-file fault isolation (``iteration_update``) and report (handler) of an inference run.

    Example (inference.json: the report is the last handler, after those that may mark a file as failed)::

        "handlers": [..., {"_target_": "scripts.workflows.InferenceReport", "plan": "@inference_plan"}],
        "inference_report": "@handlers#6",  # its place in the list
        "evaluator": {"_target_": "SupervisedEvaluator", ..., "val_handlers": "@handlers",
                      "iteration_update": "@inference_report"},
        "run": ["$@evaluator.run()", "$@inference_report.finish()"]

    With nothing to predict (every input refused or finished) the evaluator has no iteration (MONAI skips its run,
    with a warning) and ``finish()`` still writes the report.

    Report (JSON, written atomically): ``output_dir``, ``intensity_rule``, ``overwrite``, ``model_sha256`` (the
    model file's, ``null`` without one), ``started``/``finished`` (UTC), ``counts`` (inputs per status), ``files``:
    per input ``input``, ``output_name``, ``status`` (``"ok"``, ``"skipped"``: done by an earlier run, ``"failed"``,
    or ``"pending"`` while the run goes on -- and for good when it is killed), ``stage`` (``"pre-flight"`` or
    ``"run"``), ``reason``, ``seconds`` (prediction and writing; loading overlaps the network), ``outputs`` (paths
    relative to ``output_dir``), ``intensity`` (``rule`` applied and value ``range`` mapped to 0..1), ``size``,
    ``channels``, ``dtype``, ``sections`` (1 for a 2D image), ``model_sha256`` (the model that made its outputs);
    and ``earlier_files``: the records
    of inputs of earlier runs into the folder that this run does not have (so that they stay done).

    Args:
        plan: the pre-flight's plan (:class:`scripts.workflows.InferencePlan`).
        filename: the report's file name in the plan's ``output_dir``.
    """

    def __init__(self, plan: InferencePlan, filename: str = REPORT_NAME) -> None:
        self.plan = plan
        self.path = Path(plan.output_dir) / filename
        self.records = {r[OUTPUT_NAME_KEY]: r for r in plan.records}
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._current: list[str] = []
        self._sections: list[int | None] = []
        self._t0 = 0.0

    # ------------------------------------------------------------------ iteration_update
    def _fail(self, names: Sequence[str], reason: str, batch: Any) -> list[dict]:
        for name in names:
            record = self.records.get(name)
            if record is not None:
                record.update(status="failed", stage="run", reason=reason)
                if (record.get("sections") or 1) > 1:
                    abort_sections(record["input"])
        return [{FAILED_KEY: reason, OUTPUT_NAME_KEY: n} for n in names] or [{FAILED_KEY: reason}]

    def __call__(self, engine: Engine, batchdata: Any) -> Any:
        """One iteration: MONAI's ``engine._iteration`` for this batch, or a failure record when it raises or when the
        batch is an item :class:`scripts.workflows.FaultTolerantDataset` could not load."""
        names = _names(batchdata)
        self._current, self._sections = names, _sections(batchdata, len(names))
        failed_stacks = [
            n
            for n, k in zip(names, self._sections)
            if k is not None and self.records.get(n, {}).get("status") == "failed"
        ]
        if failed_stacks:  # a later section of a stack that failed: nothing to predict
            engine.state.batch = engine.state.output = [
                {FAILED_KEY: self.records[n]["reason"], OUTPUT_NAME_KEY: n} for n in names
            ]
            return engine.state.output
        if isinstance(batchdata, Mapping) and FAILED_KEY in batchdata:
            reasons = batchdata[FAILED_KEY]
            reason = str(reasons[0] if isinstance(reasons, (list, tuple)) else reasons)
            engine.state.batch = engine.state.output = self._fail(names, reason, batchdata)
            return engine.state.output
        try:
            return engine._iteration(engine, batchdata)
        except Exception as e:  # noqa: BLE001 - this file fails, the run goes on
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            files = ", ".join(names) or "?"
            shown = ", ".join(str(self.records[n]["input"]) for n in names if n in self.records) or files
            reason = f"{shown}: failed during prediction or writing ({root_cause(e)})"
            logger.error("%s; skipped, going on with the next file", reason)
            logger.debug("traceback of %s", files, exc_info=True)
            engine.state.batch = engine.state.output = self._fail(names, reason, batchdata)
            return engine.state.output

    # ------------------------------------------------------------------ handler
    def attach(self, engine: Engine) -> None:
        """Time each file and write the report after each one; write it once when the run starts."""
        engine.add_event_handler(Events.STARTED, lambda _e: self.write())
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _iteration_started(self, _engine: Engine) -> None:
        self._t0 = time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        seconds = time.perf_counter() - self._t0
        outputs = engine.state.output
        items = outputs if isinstance(outputs, list) else [outputs]
        failed = {
            str(item.get(OUTPUT_NAME_KEY)): str(item[FAILED_KEY])
            for item in items
            if isinstance(item, Mapping) and FAILED_KEY in item
        }
        for name, section in zip(self._current, self._sections):
            record = self.records.get(name)
            if record is None:
                continue
            earlier = (record.get("seconds") or 0.0) if section else 0.0  # the stack's sections before this one
            record["seconds"] = round(earlier + seconds / max(len(self._current), 1), 3)
            if name in failed:
                if record["status"] != "failed" and section is not None:
                    abort_sections(record["input"])
                record.update(status="failed", stage=record.get("stage") or "run", reason=failed[name])
            elif record["status"] == "pending" and (section is None or section == (record.get("sections") or 1) - 1):
                record.update(status="ok", stage="run")
        self.write()

    # ------------------------------------------------------------------ report
    def counts(self) -> dict[str, int]:
        """Inputs per status."""
        statuses = [r["status"] for r in self.plan.records]
        return {s: statuses.count(s) for s in ("ok", "skipped", "failed", "pending")}

    def write(self, finished: bool = False) -> Path:
        """Write the report (atomically) and return its path."""
        return write_json(
            self.path,
            {
                "output_dir": self.plan.output_dir,
                "intensity_rule": self.plan.intensity_rule,
                "overwrite": self.plan.overwrite,
                "model_sha256": self.plan.model_sha256,
                "started": self.started,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds") if finished else None,
                "counts": self.counts(),
                "files": self.plan.records,
                "earlier_files": self.plan.earlier,
            },
        )

    def finish(self) -> dict[str, int]:
        """Write the final report, log the summary, and raise :class:`InferenceFailed` if any input failed.

        Returns:
            The counts per status (when nothing failed).

        Raises:
            InferenceFailed: listing each failed input and its reason.
        """
        abort_sections()  # stacks the run did not finish (stopped early): no partial file stays
        for record in self.plan.records:  # an input the run never reached (stopped early)
            if record["status"] == "pending":
                record.update(status="failed", stage="run", reason=f"{record['input']}: not processed")
        path = self.write(finished=True)
        counts = self.counts()
        logger.info(
            "inference: %d ok, %d skipped (outputs existed), %d failed, of %d input(s); report %s",
            counts["ok"],
            counts["skipped"],
            counts["failed"],
            len(self.plan.records),
            path,
        )
        failed = [r for r in self.plan.records if r["status"] == "failed"]
        if failed:
            lines = [f"  - [{r['stage']}] {r['reason']}" for r in failed[:20]]
            if len(failed) > 20:
                lines.append(f"  ... and {len(failed) - 20} more (see the report)")
            raise InferenceFailed(
                f"{len(failed)} of {len(self.plan.records)} input(s) failed; every other file was processed "
                f"(report: {path}):\n" + "\n".join(lines)
            )
        return counts
