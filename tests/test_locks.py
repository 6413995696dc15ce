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
