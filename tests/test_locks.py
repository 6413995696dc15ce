"""One run per folder under concurrency: a second process is refused while the first holds the folder, and a
killed holder (kill -9) leaves nothing to clear."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bundle_runner import REPO

HOLD = """
import sys, time
sys.path.insert(0, {bundle!r})
from scripts.locks import lock_folder
lock_folder(sys.argv[1], purpose="training")
print("locked", flush=True)
time.sleep(60)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(bundle=str(REPO / "bundle")), str(folder)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holder_frees_the_folder(tmp_path):
    from scripts.errors import RunFolderError
    from scripts.locks import FolderLock

    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunFolderError) as err:
            FolderLock(tmp_path).acquire()
        message = str(err.value)
        assert f"is in use by another training (pid {holder.pid} on " in message and "--bundle_root" in message
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    lock = FolderLock(tmp_path).acquire()  # nothing to clear after kill -9
    assert lock.held
    lock.release()


def test_the_lock_is_reentrant_within_a_process_and_released_on_request(tmp_path):
    from scripts.locks import FolderLock, lock_folder

    first = lock_folder(tmp_path)
    assert lock_folder(tmp_path) is first
    first.release()
    again = FolderLock(tmp_path).acquire()
    assert again.held
    again.release()


def test_another_lock_object_of_the_holding_process_shares_the_lock(tmp_path):
    """A second lock object of the process that holds the folder (v0.9.0 dry run: a second in-process
    ``monai.bundle.load(..., workflow_type="inference")`` refused "in use by another inference" naming its own pid)
    shares it; another process is still refused while the first object holds it."""
    from scripts.errors import RunFolderError
    from scripts.locks import FolderLock

    first = FolderLock(tmp_path).acquire()
    second = FolderLock(tmp_path).acquire()
    assert first.held and second.held
    second.release()
    proc = subprocess.run([sys.executable, "-c", HOLD.format(bundle=str(REPO / "bundle")), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "RunFolderError" in proc.stderr and f"pid {os.getpid()} on " in proc.stderr
    first.release()
    holder = _holder(tmp_path)  # released: another process takes it, and this one is refused again
    try:
        with pytest.raises(RunFolderError, match=f"pid {holder.pid} on "):
            FolderLock(tmp_path).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)


@pytest.mark.parametrize("workflow", ["training", "inference"])
def test_a_workflow_into_a_folder_another_process_holds_is_refused_before_writing(tmp_path, workflow):
    """The real workflow (``python -m monai.bundle run``) meets a folder another process holds: exit 1, the holder
    named as the last line, nothing written into it (training: not even the synthetic data)."""
    from bundle_runner import TINY, config_arg, run_bundle

    root = tmp_path / "run"
    root.mkdir()
    if workflow == "training":
        locked, config = root, config_arg("train.json")
        overrides = {**TINY, "bundle_root": str(root), "data_root": str(tmp_path / "data")}
    else:
        locked, config = root / "outputs", config_arg("inference.json")
        overrides = {**{k: v for k, v in TINY.items() if not k.startswith(("epochs", "batch", "val_", "cache",
                                                                             "show"))},
                     "bundle_root": str(root), "data_root": str(tmp_path / "data"), "output_dir": str(locked),
                     "progress": False, "ckpt_path": str(REPO / "bundle" / "models" / "pretrained" / "model.pt")}
    holder = _holder(locked)
    try:
        proc = run_bundle(config, workflow, overrides, check=False, timeout=240)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"is in use by another training (pid {holder.pid} on" in last, proc.stderr[-3000:]
    assert not (root / "models").exists() and sorted(p.name for p in locked.iterdir()) == [".run.lock"]
    if workflow == "training":  # locked before the datalist is read (or the synthetic data made)
        assert not (tmp_path / "data").exists()


def test_an_output_dir_that_is_a_file_is_refused_in_one_line(tmp_path):
    from scripts.errors import RunFolderError
    from scripts.locks import FolderLock

    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(RunFolderError, match=r"out: cannot write the run's files there .*--output_dir"):
        FolderLock(tmp_path / "out").acquire()
