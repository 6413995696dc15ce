"""Volumes on Dask (issue 24): OME-Zarr / zarr / HDF5 read lazily, OME-Zarr written, the blockwise resumable runner.

One synthetic OME-Zarr volume (6 sections of 96 x 96, chunks of 1 x 48 x 48) and a tiny X-Net whose ``model.pt``
the test saves. The reference is the bundle's single-process inference (inference.json's workflow) of each section
saved as its own PNG; the Dask runner must give the same label maps and probabilities, bit for bit:

- through volume.json, on a local cluster of 2 workers;
- after ``kill -9`` of a worker and then of the driver in the middle of blocks (``python -m monai.bundle run volume``
  with 2 process workers and a network slowed down to 0.4 s a pass), resumed: every block is marked done exactly
  once, and the blocks that were being written when the kills came were written again in full;
- block by block with a store that records what is read: each block reads its own chunks and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from bundle_runner import CONFIGS, REPO
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

from scripts.data import CLASS_NAMES
from scripts.data.io import write_png
from scripts.data.synthetic import make_sample
from scripts.inferers import OverlapTileInferer
from scripts.networks import ModelInfo, XNet, network_from_checkpoint
from scripts.volumes import (BlockLedger, SectionPredictor, VolumeError, VolumeJob, default_output, open_volume,
                             read_record, state_folder, write_ome_zarr)

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")

FEATURES = [4, 8, 16]
SECTIONS, SIZE, CHUNK = 6, 96, 48
SCALE = (0.05, 0.01, 0.01)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The volume, the model, and the single-process reference (labels (z, y, x), probabilities (c, z, y, x))."""
    root = tmp_path_factory.mktemp("volume")
    torch.manual_seed(0)
    net = XNet(2, 1, len(CLASS_NAMES), FEATURES, batch_norm=True, skip="both").eval()
    torch.save({"model": net.state_dict(), "model_info": ModelInfo(net, CLASS_NAMES, 255, [64, 64]).state_dict()},
               root / "model.pt")
    volume = np.stack([make_sample(SIZE, i)[0] for i in range(SECTIONS)])
    write_ome_zarr(root / "vol.zarr", volume, chunks=(1, CHUNK, CHUNK), scale=SCALE, units=("micrometer",) * 3)
    for i, section in enumerate(volume):
        write_png(root / "sections" / f"s{i}.png", section)
    # the bundle's inference workflow, one 2-D file per section (no pictures: the feature-map pass would change the
    # batch-norm statistics between files, issue 15)
    _single_process(root, root / "sections", root / "single")
    labels = np.stack([np.asarray(Image.open(root / "single" / f"s{i}_seg.png")) for i in range(SECTIONS)])
    probs = np.stack([tifffile.imread(root / "single" / f"s{i}_prob.tif") for i in range(SECTIONS)], axis=1)
    return {"root": root, "volume": volume, "labels": labels, "probs": probs, "model": root / "model.pt"}


def _single_process(root: Path, folder: Path, output: Path) -> None:
    """The bundle's inference workflow on a folder of 2-D files (in this process, as ``monai.bundle run`` does)."""
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), workflow_type="infer",
                              bundle_root=str(root), input=str(folder), output_dir=str(output),
                              ckpt_path=str(root / "model.pt"), features=FEATURES, pictures=False,
                              feature_maps=False, progress=False)
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _parser(case, output, **overrides) -> ConfigParser:
    parser = ConfigParser(ConfigParser.load_config_files([str(CONFIGS / "inference.json"), str(CONFIGS / "volume.json")]))
    settings = {"bundle_root": str(case["root"]), "ckpt_path": str(case["model"]), "features": FEATURES,
                "input": str(case["root"] / "vol.zarr"), "output": str(output), "save_probabilities": True,
                "chunk_size": CHUNK, "workers": 2, "processes": False, "progress_interval": 0, **overrides}
    for key, value in settings.items():
        parser[key] = value
    return parser


def _run_config(case, output, **overrides) -> dict:
    parser = _parser(case, output, **overrides)
    parser.get_parsed_content("volume_preflight").run()
    return parser.get_parsed_content("volume_runner").run()


def _read(output) -> tuple[np.ndarray, np.ndarray | None]:
    group = zarr.open_group(store=str(output), mode="r")
    return group["0"][:], group["probabilities/0"][:] if "probabilities" in group else None


def _predictor(case, probability_dtype="uint8") -> SectionPredictor:
    net = network_from_checkpoint(str(case["model"])).eval()
    return SectionPredictor(net, OverlapTileInferer(sw_batch_size=4, mode="reflect"), probability_dtype=probability_dtype)


def _job(case, output, **kw) -> VolumeJob:
    kw = {"class_names": CLASS_NAMES, "save_probabilities": True, "chunk_size": CHUNK, "model": case["model"], **kw}
    return VolumeJob(kw.pop("input", case["root"] / "vol.zarr"), output, **kw)


# ------------------------------------------------------------------------------------------------ the runner
def test_dask_runner_on_2_workers_equals_single_process_inference(case, tmp_path, caplog):
    output = tmp_path / "out.ome.zarr"
    with caplog.at_level(logging.INFO, logger="scripts.volumes"):
        summary = _run_config(case, output)
    progress = [r.getMessage() for r in caplog.records if "block(s) done" in r.getMessage()]
    assert len(progress) == SECTIONS and progress[-1].startswith("volume: 6/6 block(s) done (100%)"), progress
    labels, probs = _read(output)
    np.testing.assert_array_equal(labels, case["labels"])
    np.testing.assert_array_equal(probs, case["probs"])
    assert summary["workers"] == 2 and summary["predicted"] == SECTIONS and summary["failed"] == 0
    # OME-Zarr 0.4 metadata: the input's pixel size and units; the probabilities named by class
    attrs = zarr.open_group(store=str(output), mode="r").attrs.asdict()
    scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert attrs["multiscales"][0]["version"] == "0.4" and scale == list(SCALE)
    assert [a.get("unit") for a in attrs["multiscales"][0]["axes"]] == ["micrometer"] * 3
    prob_attrs = zarr.open_group(store=str(output / "probabilities"), mode="r").attrs.asdict()
    assert [c["label"] for c in prob_attrs["omero"]["channels"]] == list(CLASS_NAMES)
    ledger = BlockLedger(state_folder(output))
    assert ledger.done() == set(range(SECTIONS))
    assert sorted(b for e, b in ledger.events() if e == "done") == list(range(SECTIONS))
    # the same command again: everything is done, nothing is written
    assert _run_config(case, output)["predicted"] == 0
    assert len([e for e in BlockLedger(state_folder(output)).events() if e[0] == "start"]) == SECTIONS


def _log_lines(path: Path) -> list[tuple[str, int, int]]:
    """``(event, block, pid)`` of the blocks.log lines written so far."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] in ("start", "done") and parts[-1].startswith("pid="):
            rows.append((parts[1], int(parts[2]), int(parts[-1][4:])))
    return rows


def _wait_for(condition, proc, output: Path, timeout=180.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found is not None:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the kill:\n{output.read_text()[-4000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for the run:\n{output.read_text()[-4000:]}")


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (Linux ``/proc``)."""
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


def _wait_for_lock(path: Path, timeout: float = 30.0) -> None:
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > end:
                    raise AssertionError(f"{path} is still locked {timeout} s after the driver's death") from None
                time.sleep(0.05)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def test_kill_9_of_a_worker_then_of_the_driver_mid_block_resumes_to_the_same_output(case, tmp_path):
    output = tmp_path / "killed.ome.zarr"
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps({"network_def": {
        "_target_": "slow_network.SlowNetwork", "delay": 0.4,
        "module": {"_target_": "scripts.networks.network_from_checkpoint", "path": "@ckpt_path", "default": "@networks#xnet"}}}))
    files = json.dumps([str(CONFIGS / "inference.json"), str(CONFIGS / "volume.json"), str(slow)])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "volume", "--config_file", files, "--bundle_root", str(case["root"]),
           "--input", str(case["root"] / "vol.zarr"), "--output", str(output), "--ckpt_path", str(case["model"]),
           "--features", repr(FEATURES), "--save_probabilities", "True", "--chunk_size", str(CHUNK),
           "--workers", "2", "--processes", "True", "--progress_interval", "0"]
    # fork: the workers start from the driver's imports in a second (spawn, the default, imports torch again)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "bundle"), str(REPO / "tests")]),
               OMP_NUM_THREADS="1", DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD="fork")
    log = state_folder(output) / "blocks.log"
    with open(tmp_path / "driver.log", "w") as out:
        driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    seen = 0

    def fresh_start(min_done=0):
        """The newest ``start`` line of a worker process written since the last look (once ``min_done`` blocks are
        done): that block has just begun and needs >= 0.8 s (two passes of the slow network)."""
        nonlocal seen
        rows = _log_lines(log)
        new, seen = rows[seen:], len(rows)
        starts = [r for r in new if r[0] == "start" and r[2] != driver.pid]
        return starts[-1] if starts and sum(r[0] == "done" for r in rows) >= min_done else None

    try:
        _, worker_block, worker_pid = _wait_for(fresh_start, driver, tmp_path / "driver.log")
        os.kill(worker_pid, signal.SIGKILL)
        _, driver_block, _ = _wait_for(lambda: fresh_start(min_done=2), driver, tmp_path / "driver.log")
        workers = _descendants(driver.pid)  # the nannies' worker processes (forked: they share the run's lock)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    workers |= {pid for _, _, pid in _log_lines(log)} - {driver.pid}
    end = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a worker outlived its driver"
    _wait_for_lock(state_folder(output) / ".run.lock")  # forked workers share it until they have exited
    done_before = {b for e, b, _ in _log_lines(log) if e == "done"}
    assert driver_block not in done_before and len(done_before) >= 2
    assert not (state_folder(output) / "summary.json").exists()  # the run did not finish

    # resumed with the same settings (2 thread workers, the plain network): only the unmarked blocks
    summary = _run_config(case, output)
    assert summary["predicted"] == SECTIONS - len(done_before)
    labels, probs = _read(output)
    np.testing.assert_array_equal(labels, case["labels"])
    np.testing.assert_array_equal(probs, case["probs"])
    rows = _log_lines(log)
    done = [b for e, b, _ in rows if e == "done"]
    assert sorted(done) == list(range(SECTIONS)), "a block was marked twice, or not at all"
    starts = [b for e, b, _ in rows if e == "start"]
    assert starts.count(worker_block) >= 2 and starts.count(driver_block) >= 2, rows  # interrupted: written again
    for block in done_before - {worker_block}:  # marked before the driver's kill: never written again
        assert starts.count(block) == 1, (block, rows)


def test_a_failing_block_is_reported_the_others_finish_on_a_given_scheduler(case, tmp_path):
    """``--scheduler <address>`` (here a local cluster started by the test): section 3 holds values the intensity
    rule ``model`` refuses; its block fails with the reason, every other block is written and marked."""
    from distributed import LocalCluster

    volume = case["volume"].astype(np.uint16)
    volume[3, 0, 0] = 300  # above intensity_max 255: refused by "model" (section 0 passes the pre-flight)
    image = write_ome_zarr(tmp_path / "bad.zarr", volume, chunks=(1, SIZE, SIZE))
    output = tmp_path / "bad.ome.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(VolumeError, match=r"(?s)1 of 6 block\(s\) failed .* block 3 \(sections 3..3\): .*300"):
            _run_config(case, output, input=str(image), intensity_rule="model", scheduler=cluster.scheduler_address)
    assert BlockLedger(state_folder(output)).done() == set(range(SECTIONS)) - {3}
    labels, _ = _read(output)
    keep = [0, 1, 2, 4, 5]
    np.testing.assert_array_equal(labels[keep], case["labels"][keep])  # 8-bit values in uint16: the same scaling
    assert not labels[3].any()


# ------------------------------------------------------------------------------------------------ in-process
class _CountingStore(zarr.storage.LocalStore):
    """A read-only local store that records every key read."""

    def __init__(self, root):
        super().__init__(root, read_only=True)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await super().get(key, prototype, byte_range)


def test_each_block_reads_only_its_own_chunks(case, tmp_path):
    job = _job(case, tmp_path / "lazy.ome.zarr").prepare()
    store = _CountingStore(str(case["root"] / "vol.zarr"))
    job.source._array = zarr.open_array(store=store, path="0", mode="r")
    predictor = _predictor(case)
    per_side = SIZE // CHUNK
    for block in job.pending:
        store.keys.clear()
        job.run_block(block, predictor)
        chunks = [k for k in store.keys if not k.rsplit("/", 1)[-1].startswith((".z", "zarr.json"))]
        assert sorted(chunks) == sorted(f"0/{block}/{i}/{j}" for i in range(per_side) for j in range(per_side))
    labels, probs = _read(tmp_path / "lazy.ome.zarr")
    np.testing.assert_array_equal(labels, case["labels"])
    np.testing.assert_array_equal(probs, case["probs"])


def test_hdf5_input_and_a_label_image_next_to_an_ome_zarr_0_5_input(case, tmp_path):
    h5 = tmp_path / "vol.h5"
    with h5py.File(h5, "w") as f:
        ds = f.create_dataset("raw", data=case["volume"], chunks=(2, CHUNK, CHUNK))
        ds.attrs["element_size_um"] = SCALE
        f.create_dataset("other", data=np.zeros((4, 4), np.uint8))
    source = open_volume(h5)
    assert (source.kind, source.key, source.shape, source.chunk_sections, source.scale) == (
        "hdf5", "raw", (SECTIONS, SIZE, SIZE), 2, SCALE)
    job = _job(case, tmp_path / "from_h5.ome.zarr", input=h5, save_probabilities=False).prepare()
    assert job.block_sections == 2 and job.pending == [0, 1, 2]  # the dataset's chunks along z
    predictor = _predictor(case, probability_dtype=None)
    for block in job.pending:
        job.run_block(block, predictor)
    labels, probs = _read(tmp_path / "from_h5.ome.zarr")
    np.testing.assert_array_equal(labels, case["labels"])
    assert probs is None

    image = write_ome_zarr(tmp_path / "vol5.zarr", case["volume"], chunks=(1, CHUNK, CHUNK), version="0.5")
    job = _job(case, image / "labels" / "cells", input=image, save_probabilities=False).prepare()
    assert job.ome_zarr_version == "0.5"
    for block in job.pending:
        job.run_block(block, predictor)
    group = zarr.open_group(store=str(image / "labels" / "cells"), mode="r")
    assert group.metadata.zarr_format == 3
    np.testing.assert_array_equal(group["0"][:], case["labels"])
    ome = group.attrs.asdict()["ome"]
    assert ome["version"] == "0.5" and ome["image-label"]["source"] == {"image": "../../"}
    assert [p["class"] for p in ome["image-label"]["properties"]] == list(CLASS_NAMES)
    assert zarr.open_group(store=str(image / "labels"), mode="r").attrs.asdict()["ome"]["labels"] == ["cells"]
    assert state_folder(image / "labels" / "cells") == tmp_path / "vol5.zarr.labels-cells.blocks"


def test_tiff_and_nifti_stacks_run_on_dask_with_their_pixel_size_and_spacing(case, tmp_path):
    """A multi-page ImageJ TIFF, an OME-TIFF and a 3-D NIfTI are volumes too: read page by page, the same labels as
    the OME-Zarr (and so as the single-process inference), pixel size and section spacing in the output."""
    nib = pytest.importorskip("nibabel")
    imagej = tmp_path / "stack.tif"
    tifffile.imwrite(imagej, case["volume"], imagej=True, resolution=(100.0, 100.0),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 0.05})
    ome = tmp_path / "stack.ome.tif"
    tifffile.imwrite(ome, case["volume"], metadata={"axes": "ZYX", "PhysicalSizeX": 10.0, "PhysicalSizeXUnit": "nm",
                                                     "PhysicalSizeY": 10.0, "PhysicalSizeYUnit": "nm",
                                                     "PhysicalSizeZ": 50.0, "PhysicalSizeZUnit": "nm"})
    nifti = tmp_path / "stack.nii.gz"
    image = nib.Nifti1Image(np.ascontiguousarray(case["volume"].transpose(2, 1, 0)), np.diag([0.01, 0.01, 0.05, 1]))
    image.header.set_xyzt_units("micron")
    nib.save(image, nifti)
    predictor = _predictor(case, probability_dtype=None)
    for path, kind in ((imagej, "imagej"), (ome, "ome"), (nifti, "nifti")):
        source = open_volume(path)
        assert (source.kind, source.shape, source.chunk_sections) == (kind, (SECTIONS, SIZE, SIZE), 1)
        assert source.scale == pytest.approx(SCALE) and source.units == ("micrometer",) * 3
        output = tmp_path / f"{kind}_seg.ome.zarr"
        job = _job(case, output, input=path, save_probabilities=False).prepare()
        assert job.pending == list(range(SECTIONS))
        for block in job.pending:
            job.run_block(block, predictor)
        np.testing.assert_array_equal(_read(output)[0], case["labels"])
        scale = zarr.open_group(store=str(output), mode="r").attrs.asdict()["multiscales"][0]["datasets"][0]
        assert scale["coordinateTransformations"][0]["scale"] == pytest.approx(list(SCALE))
    assert default_output(imagej, "out") == str(Path("out") / "stack_seg.ome.zarr")
    assert default_output(ome, "out") == str(Path("out") / "stack_seg.ome.zarr")
    with pytest.raises(VolumeError, match=r"1 channel\(s\) per section but the model takes 3"):
        open_volume(imagej, in_channels=3)
    # 3 sections saved as one planar RGB page (what tifffile.imwrite did by default): the fix is named
    tifffile.imwrite(tmp_path / "planar.tif", case["volume"][:3], photometric="rgb", planarconfig="separate")
    with pytest.raises(VolumeError, match=r"3 channel\(s\) per section .*save one page per section"):
        open_volume(tmp_path / "planar.tif")
    (tmp_path / "damaged.tif").write_bytes(b"not a tiff")
    with pytest.raises(VolumeError, match=r"damaged.tif: cannot be read as a stack \(TiffFileError"):
        open_volume(tmp_path / "damaged.tif")


def test_16_bit_sections_are_scaled_as_the_2d_inference_scales_each_file(case, tmp_path):
    """intensity_rule auto on 12-bit data in uint16: each section by its own percentiles, as each 16-bit file."""
    rng = np.random.default_rng(1)
    volume = (case["volume"][:3].astype(np.uint16) * 16 + rng.integers(0, 16, (3, SIZE, SIZE))).astype(np.uint16)
    volume[1] //= 2  # another exposure: another range
    for i, section in enumerate(volume):
        write_png(tmp_path / "png16" / f"s{i}.png", section)  # 16-bit PNGs (a TIFF would load ITK: seconds)
    shutil.copy(case["model"], tmp_path / "model.pt")
    _single_process(tmp_path, tmp_path / "png16", tmp_path / "single")
    image = write_ome_zarr(tmp_path / "vol16.zarr", volume, chunks=(1, SIZE, SIZE))
    job = _job(case, tmp_path / "out16.ome.zarr", input=image).prepare()
    predictor = _predictor(case)
    for block in job.pending:
        job.run_block(block, predictor)
    labels, probs = _read(tmp_path / "out16.ome.zarr")
    for i in range(3):
        np.testing.assert_array_equal(labels[i], np.asarray(Image.open(tmp_path / "single" / f"s{i}_seg.png")))
        np.testing.assert_array_equal(probs[:, i], tifffile.imread(tmp_path / "single" / f"s{i}_prob.tif"))
    report = json.loads((tmp_path / "single" / "inference_report.json").read_text())
    assert {f["intensity"]["rule"] for f in report["files"]} == {"percentile"}


def test_a_model_s_training_statistics_and_a_stack_s_one_range_as_the_single_process_routes(case, tmp_path):
    """A model that records its training images' statistics (as the shipped one): a 16-bit OME-Zarr gives each
    section the labels of that section as a 16-bit file, and a 16-bit TIFF stack the labels of ``run inference`` on
    that stack (one range for the whole stack, from a few of its sections)."""
    saved = torch.load(case["model"], weights_only=True)
    stats = {"percentiles": [0.5, 99.5], "range": [0.15, 0.85], "dtypes": ["uint8"], "images": 4}
    saved["model_info"]["intensity_statistics"] = stats
    torch.save(saved, tmp_path / "model.pt")
    rng = np.random.default_rng(2)
    volume = (case["volume"][:3].astype(np.uint16) * 16 + rng.integers(0, 16, (3, SIZE, SIZE))).astype(np.uint16)
    volume[1] //= 2  # another exposure: another range per section, one for the stack
    for i, section in enumerate(volume):
        write_png(tmp_path / "png16" / f"s{i}.png", section)
    (tmp_path / "stack").mkdir()
    tifffile.imwrite(tmp_path / "stack" / "vol16.tif", volume, imagej=True, metadata={"axes": "ZYX"})
    _single_process(tmp_path, tmp_path / "png16", tmp_path / "single")
    _single_process(tmp_path, tmp_path / "stack", tmp_path / "single_stack")
    report = json.loads((tmp_path / "single" / "inference_report.json").read_text())
    assert {f["intensity"]["rule"] for f in report["files"]} == {"matched"}
    per_file = np.stack([np.asarray(Image.open(tmp_path / "single" / f"s{i}_seg.png")) for i in range(3)])
    per_stack = tifffile.imread(tmp_path / "single_stack" / "vol16_seg.tif")
    case = {**case, "model": tmp_path / "model.pt"}
    predictor = _predictor(case)
    zarr_input = write_ome_zarr(tmp_path / "vol16.zarr", volume, chunks=(1, SIZE, SIZE))
    for name, source, reference in (("zarr", zarr_input, per_file), ("tiff", tmp_path / "stack" / "vol16.tif", per_stack)):
        output = tmp_path / f"{name}_out.ome.zarr"
        job = _job(case, output, input=source, intensity_statistics=stats).prepare()
        assert (job.value_range is None) == (name == "zarr")  # per section vs one range for the stack
        for block in job.pending:
            job.run_block(block, predictor)
        np.testing.assert_array_equal(_read(output)[0], reference)
    assert read_record(tmp_path / "tiff_out.ome.zarr")["value_range"] == job.value_range
    # an output scaled without the statistics (as before they were used) is not resumed with them
    with pytest.raises(VolumeError, match=r"other settings \(intensity_statistics\)"):
        _job(case, tmp_path / "zarr_out.ome.zarr", input=zarr_input).prepare()


def test_a_block_that_dies_mid_write_is_written_again_and_a_marked_one_never(case, tmp_path, monkeypatch):
    import scripts.volumes.job as job_module

    output = tmp_path / "crash.ome.zarr"
    job = _job(case, output).prepare()
    predictor = _predictor(case)
    real_write = job_module.write_block

    def dies_after_the_labels(out, start, labels, probs):
        real_write(out, start, labels, None)  # the label chunks are written, the probabilities not
        raise KeyboardInterrupt("killed mid-block")

    monkeypatch.setattr(job_module, "write_block", dies_after_the_labels)
    with pytest.raises(KeyboardInterrupt):
        job.run_block(3, predictor)
    writes = []
    monkeypatch.setattr(job_module, "write_block", lambda *a: writes.append(a[1]) or real_write(*a))
    job.release()
    resumed = _job(case, output).prepare()
    assert resumed.resumed and resumed.pending == list(range(SECTIONS))  # block 3 was not marked
    for block in resumed.pending:
        resumed.run_block(block, predictor)
    assert writes == list(range(SECTIONS))
    assert resumed.run_block(3, predictor)["skipped"] and writes == list(range(SECTIONS))  # marked: not again
    labels, probs = _read(output)
    np.testing.assert_array_equal(labels, case["labels"])
    np.testing.assert_array_equal(probs, case["probs"])


def test_default_workers_from_the_cores(monkeypatch):
    from scripts.volumes import default_workers

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_workers(cuda=False, cores=2) == (1, 1, False, 2)  # one worker, a thread of the driver
    assert default_workers(cuda=False, cores=16) == (4, 1, True, 4)  # 4 processes x 4 PyTorch threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_workers(cuda=False, cores=16) == (4, 1, True, 2)  # at most OMP_NUM_THREADS


def test_existing_outputs_are_resumed_refused_or_replaced(case, tmp_path):
    output = tmp_path / "out.ome.zarr"
    _job(case, output).prepare().release()
    run_id = read_record(output)["run_id"]
    assert _job(case, output).prepare().resumed and read_record(output)["run_id"] == run_id
    with pytest.raises(VolumeError, match=r"earlier run with other settings \(intensity_rule\); --overwrite True"):
        _job(case, output, intensity_rule="percentile").prepare()
    replaced = _job(case, output, intensity_rule="percentile", overwrite=True).prepare()
    assert not replaced.resumed and read_record(output)["run_id"] != run_id and len(replaced.pending) == SECTIONS
    (tmp_path / "folder").mkdir()
    with pytest.raises(VolumeError, match="exists and is not a zarr"):
        _job(case, tmp_path / "folder", overwrite=True).prepare()
    with pytest.raises(VolumeError, match="written into the input"):
        _job(case, case["root"] / "vol.zarr" / "out").prepare()
    with pytest.raises(VolumeError, match=r"not a volume \(a 2-D image .*or a stack file \(\.tif"):
        open_volume(case["root"] / "sections" / "s0.png")
    with pytest.raises(VolumeError, match="2 3-D datasets"):
        with h5py.File(tmp_path / "two.h5", "w") as f:
            f["a"], f["b"] = np.zeros((2, 8, 8)), np.zeros((2, 8, 8))
        open_volume(tmp_path / "two.h5")
    rgb = zarr.open_group(store=str(tmp_path / "rgb.zarr"), mode="w", zarr_format=2)
    rgb.create_array("0", shape=(3, 4, 32, 32), dtype="uint8")
    rgb.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in "czyx"], "datasets": [{"path": "0"}]}]
    with pytest.raises(VolumeError, match=r"3 channel\(s\) \(c axis\) but the model takes 1"):
        open_volume(tmp_path / "rgb.zarr")
    assert open_volume(tmp_path / "rgb.zarr", in_channels=3).shape == (4, 32, 32)
