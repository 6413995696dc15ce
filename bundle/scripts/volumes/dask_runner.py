"""Blockwise, resumable volume inference on Dask (``dask.distributed``): one task per block of sections.

The driver (:class:`DaskVolumeRunner`) starts a ``LocalCluster`` -- or connects to a running scheduler
(``--scheduler tcp://host:8786``, a real cluster whose workers have this bundle installed and see the input and
output paths) --, sends the network and the inferer to every worker once (``Client.scatter``), submits one task per
block the job has still to do (:meth:`scripts.volumes.VolumeJob.run_block`) and logs the progress as blocks finish.
A task reads its block lazily, predicts every section with the bundle's own 2-D inference
(:class:`scripts.volumes.SectionPredictor`), writes the block's chunks and then its done-marker, so that a run killed
at any moment (driver or worker, ``kill -9`` included) resumes with the same command and recomputes only the blocks
that have no marker (:mod:`scripts.volumes.blocks`). A worker that dies is replaced by its nanny and its block is
retried (Dask's ``allowed-failures``); a block that fails (a section the intensity rule refuses, an unreadable chunk)
is reported and the others go on; the run then ends with one message listing them.

Workers (``LocalCluster``, unless ``workers``/``threads_per_worker``/``processes`` are given):

- GPUs: one worker process per GPU (``cuda:<worker index>``), one task at a time each;
- CPU: ``cores // 4`` worker processes (at least 1; one worker runs in this process, as threads), one task at a
  time each, PyTorch using ``cores / workers`` threads per worker (at most ``OMP_NUM_THREADS`` when it is set).

Each executing thread has its own copy of the network and inferer, unpickled from the bytes sent once (the
inferer switches the weights' memory layout during a call, so a shared network is not safe to run from two
threads). With automatic tiles (no
``memory_budget_mb``), tasks sharing a host's memory on the CPU divide the inferer's default budget between them.
Process workers start with ``spawn``: a Python program that runs this runner itself (not through
``python -m monai.bundle``) needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import resource
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from scripts.atomic import atomic_path
from scripts.backends import set_backends
from scripts.checks import check_positive_int

from .job import VolumeJob
from .predict import SectionPredictor
from .sources import VolumeError

__all__ = ["DaskVolumeRunner", "WorkerSettings", "default_workers"]

logger = logging.getLogger(__name__)

#: Network and inferer copies per (run token, executing thread) in a worker process.
_PREDICTORS: dict[tuple[str, int], SectionPredictor] = {}
#: Run tokens whose process-wide set-up (threads, backends) this process has done.
_SET_UP: set[str] = set()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class WorkerSettings:
    """What every task needs besides the job and the network: sent with each task (small)."""

    token: str
    device_type: str
    amp: bool
    intensity_rule: str
    intensity_max: float
    probability_dtype: str | None
    torch_threads: int | None
    deterministic: bool
    allow_tf32: bool
    budget_share: int
    driver_pid: int


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(cuda: bool, cores: int | None = None) -> tuple[int, int, bool, int | None]:
    """``(workers, threads_per_worker, processes, torch threads per worker)`` of the default ``LocalCluster``
    (module docstring)."""
    if cuda:
        return torch.cuda.device_count(), 1, True, None
    cores = cores or _cores()
    workers = max(1, cores // 4)
    return workers, 1, workers > 1, _torch_threads(cores, workers)


def _torch_threads(cores: int, tasks: int) -> int:
    threads = max(1, cores // max(1, tasks))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(limit)) if limit.isdigit() and int(limit) > 0 else threads


def _worker_name() -> tuple[str | None, Any]:
    try:
        from distributed import get_worker

        worker = get_worker()
        return worker.address, worker.name
    except (ImportError, ValueError):
        return None, None


def _predictor(shared: bytes, settings: WorkerSettings) -> SectionPredictor:
    """This thread's predictor for this run: its own copy of the network and inferer (unpickled from ``shared``),
    on this worker's device."""
    key = (settings.token, threading.get_ident())
    with _LOCK:
        if settings.token not in _SET_UP and os.getpid() != settings.driver_pid:
            if settings.torch_threads:
                torch.set_num_threads(settings.torch_threads)
            set_backends(seed=0, deterministic=settings.deterministic, allow_tf32=settings.allow_tf32)
            _SET_UP.add(settings.token)
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            network, inferer = pickle.loads(shared)
            device = torch.device("cpu")
            if settings.device_type == "cuda":
                address, name = _worker_name()
                if not torch.cuda.is_available():
                    raise VolumeError(
                        f"the run asks for a GPU (--device cuda) but worker {address} has none; give "
                        "--device cpu, or start the workers on GPU nodes."
                    )
                index = int(name) % torch.cuda.device_count() if isinstance(name, int) else 0
                device = torch.device("cuda", index)
            if (
                settings.budget_share > 1
                and device.type == "cpu"
                and hasattr(inferer, "memory_budget_mb")
                and inferer.memory_budget_mb is None
                and getattr(inferer, "roi_size", None) is None
            ):
                from scripts.inferers import default_memory_budget_mb

                inferer.memory_budget_mb = default_memory_budget_mb("cpu") / settings.budget_share
            predictor = SectionPredictor(
                network.to(device).eval(),
                inferer,
                settings.intensity_rule,
                settings.intensity_max,
                device,
                settings.amp,
                settings.probability_dtype,
            )
            _PREDICTORS[key] = predictor
    return predictor


def run_block_task(job: VolumeJob, block: int, shared: bytes, settings: WorkerSettings) -> dict:
    """The Dask task: one block of ``job`` on this worker."""
    address, _ = _worker_name()
    result = job.run_block(block, _predictor(shared, settings), worker=address)
    return {**result, "worker": address, "pid": os.getpid()}


def warm_up() -> int:
    """Import what a task needs (this module, the bundle's networks and transforms) in a worker, so that the
    start-up is not counted as the first block's time; returns the worker's pid."""
    import scripts.networks  # noqa: F401
    import scripts.volumes  # noqa: F401

    return os.getpid()


def peak_memory_mib() -> float:
    """This process's peak resident memory (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if os.uname().sysname != "Darwin" else peak / 2**20


def _release_predictors(token: str) -> None:
    with _LOCK:
        for key in [k for k in _PREDICTORS if k[0] == token]:
            del _PREDICTORS[key]


class DaskVolumeRunner:
    """Run a prepared :class:`~scripts.volumes.VolumeJob` on Dask (see the module docstring).

    Args:
        job: the job, prepared (``VolumeJob.prepare``, volume.json's pre-flight).
        network: the model (CPU; each worker copies it to its device).
        inferer: the config's inferer.
        device: the config's device; a CUDA device puts each worker on its own GPU.
        amp: autocast on GPUs, as inference.json's ``amp``.
        deterministic, allow_tf32: :func:`scripts.backends.set_backends` in every worker process.
        scheduler: a Dask scheduler address (``tcp://host:8786``); ``None``: a ``LocalCluster``.
        workers, threads_per_worker, processes: the ``LocalCluster`` (``None``: see the module docstring).
        progress_interval: seconds between progress lines (and one when the last block finishes).
        summary: write ``summary.json`` (rates, peak memory per worker) into the job's state folder.
    """

    def __init__(
        self,
        job: VolumeJob,
        network: torch.nn.Module,
        inferer: Any,
        device: torch.device | str = "cpu",
        amp: bool = False,
        deterministic: bool = True,
        allow_tf32: bool = True,
        scheduler: str | None = None,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool | None = None,
        progress_interval: float = 10.0,
        summary: bool = True,
    ) -> None:
        self.job, self.network, self.inferer = job, network, inferer
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.deterministic, self.allow_tf32 = deterministic, allow_tf32
        self.scheduler = scheduler or None
        self.workers = check_positive_int("workers", workers, allow_none=True)
        self.threads_per_worker = check_positive_int("threads_per_worker", threads_per_worker, allow_none=True)
        if processes is not None and not isinstance(processes, bool):
            raise VolumeError(f"processes must be true, false or null, got {processes!r}.")
        self.processes = processes
        self.progress_interval = float(progress_interval)
        self.summary = summary

    # ------------------------------------------------------------------ cluster
    def cluster_settings(self) -> tuple[int, int, bool, int | None]:
        """``(workers, threads_per_worker, processes, torch threads per worker)`` of the ``LocalCluster``."""
        cuda = self.device.type == "cuda" and torch.cuda.is_available()
        workers, threads, processes, torch_threads = default_workers(cuda)
        workers = self.workers or workers
        threads = self.threads_per_worker or threads
        processes = self.processes if self.processes is not None else (cuda or workers > 1)
        if not cuda:
            torch_threads = _torch_threads(_cores(), workers * threads)
        return workers, threads, processes, torch_threads

    def _client(self) -> tuple[Any, Any, int | None]:
        from distributed import Client, LocalCluster

        if self.scheduler:
            try:
                client = Client(self.scheduler, timeout="30s")
            except OSError as e:
                raise VolumeError(
                    f"cannot reach the Dask scheduler {self.scheduler} ({e}); start it (`dask scheduler`) and its "
                    "workers, or leave --scheduler null for a local cluster."
                ) from None
            client.wait_for_workers(1, timeout=300)
            return client, None, None
        workers, threads, processes, torch_threads = self.cluster_settings()
        if torch_threads and not processes:
            torch.set_num_threads(torch_threads)  # the workers are threads of this process (restored after the run)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=processes,
            dashboard_address=None,
            memory_limit=0,
            silence_logs=logging.WARNING,
        )
        logger.info(
            "volume: local Dask cluster of %d %s worker(s) x %d thread(s), PyTorch %s thread(s) each, on %s",
            workers,
            "process" if processes else "thread",
            threads,
            torch_threads or "default",
            self.device.type,
        )
        return Client(cluster), cluster, torch_threads

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        """Predict every block not done yet; return the summary (also logged, and in ``summary.json``).

        Raises:
            VolumeError: some blocks failed (each named; the others are written and marked): rerun to retry them.
        """
        job = self.job
        total = len(job.ranges)
        if not job.pending:
            logger.info("volume: all %d block(s) of %s are done already; nothing to predict.", total, job.output)
            job.release()
            return {"blocks": total, "predicted": 0}
        from distributed import as_completed

        t_start = time.perf_counter()
        logging.getLogger("distributed").setLevel(logging.WARNING)  # Dask's own INFO lines would drown the progress
        threads_before = torch.get_num_threads()
        client, cluster, torch_threads = self._client()
        failed: list[str] = []
        done_sections = done_blocks = 0
        try:
            client.run(warm_up)
            from distributed.comm import get_address_host

            info = client.nthreads()  # {worker address: threads}
            hosts: dict[str, int] = {}
            for address, nthreads in info.items():
                hosts[get_address_host(address)] = hosts.get(get_address_host(address), 0) + int(nthreads)
            settings = WorkerSettings(
                token=uuid.uuid4().hex,
                device_type=self.device.type,
                amp=self.amp,
                intensity_rule=job.intensity_rule,
                intensity_max=job.intensity_max,
                probability_dtype=job.probability_dtype if job.save_probabilities else None,
                torch_threads=torch_threads,
                deterministic=self.deterministic,
                allow_tf32=self.allow_tf32,
                budget_share=max(hosts.values(), default=1),
                driver_pid=os.getpid(),
            )
            # pickled here, not by Dask (whose generic nn.Module serialiser loses the modules' hook dictionaries)
            payload = pickle.dumps((self.network.cpu().eval(), self.inferer), protocol=pickle.HIGHEST_PROTOCOL)
            shared = client.scatter(payload, broadcast=True, hash=False)
            t_ready = time.perf_counter()
            logger.info(
                "volume: %d worker(s) ready in %.1f s; predicting %d block(s) (%d sections)",
                len(info),
                t_ready - t_start,
                len(job.pending),
                sum(job.ranges[b][1] - job.ranges[b][0] for b in job.pending),
            )
            futures = [
                client.submit(run_block_task, job, b, shared, settings, key=f"block-{b}-{settings.token}", pure=False)
                for b in job.pending
            ]
            last_log = time.perf_counter()
            already = total - len(job.pending)
            for future in as_completed(futures):
                block = int(future.key.split("-")[1])
                start, stop = job.ranges[block]
                if future.status == "error":
                    error = future.exception()
                    failed.append(f"block {block} (sections {start}..{stop - 1}): {error}")
                    logger.error("volume: block %d (sections %d..%d) failed: %s", block, start, stop - 1, error)
                    continue
                result = future.result()
                done_blocks += 1
                done_sections += result["sections"]
                now = time.perf_counter()
                if now - last_log >= self.progress_interval or done_blocks + len(failed) == len(futures):
                    rate = done_sections / max(now - t_ready, 1e-9)
                    left = sum(job.ranges[b][1] - job.ranges[b][0] for b in job.pending) - done_sections
                    logger.info(
                        "volume: %d/%d block(s) done (%.0f%%), %d section(s) in %.1f s: %.2f sections/s%s",
                        already + done_blocks,
                        total,
                        100 * (already + done_blocks) / total,
                        done_sections,
                        now - t_ready,
                        rate,
                        f", about {left / rate:.0f} s left" if left > 0 and rate else "",
                    )
                    last_log = now
                future.release()
            peaks = client.run(peak_memory_mib)
            client.run(_release_predictors, settings.token)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
            torch.set_num_threads(threads_before)
        t_end = time.perf_counter()
        summary = {
            "blocks": total,
            "predicted": done_blocks,
            "failed": len(failed),
            "sections": done_sections,
            "seconds": round(t_end - t_start, 3),
            "seconds_predicting": round(t_end - t_ready, 3),
            "sections_per_second": round(done_sections / max(t_end - t_ready, 1e-9), 4),
            "workers": len(peaks),
            "peak_memory_mib": {k: round(v, 1) for k, v in peaks.items()},
            "driver_peak_memory_mib": round(peak_memory_mib(), 1),
        }
        logger.info(
            "volume: %d block(s) predicted in %.1f s (%.2f sections/s); peak memory per worker: %s MiB",
            done_blocks,
            summary["seconds"],
            summary["sections_per_second"],
            ", ".join(f"{v:.0f}" for v in peaks.values()),
        )
        if self.summary:
            with atomic_path(job.ledger.folder / "summary.json") as tmp:
                tmp.write_text(json.dumps(summary, indent=1) + "\n")
        job.release()
        if failed:
            raise VolumeError(
                f"{len(failed)} of {len(futures)} block(s) failed and are not written (the {done_blocks} others are "
                "done and marked); fix the cause and run the same command again to predict only these:\n  - "
                + "\n  - ".join(failed[:20])
                + (f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else "")
            )
        return summary
