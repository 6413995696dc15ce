"""Inference outputs are never lost without a word (issue 28): a killed run's files are redone, not kept as done.

One folder of four images -- ``a b.png``, ``a?b.png``, ``a_b.png`` (three names that plain file-name characters
would merge) and ``im05.png`` -- predicted by a tiny X-Net through ``monai.bundle run``, each run in its own process,
some of them killed at a chosen instant by a fault installed before the run:

1. a fresh run gets SIGTERM right after ``pictures/.../input.png`` of ``im05`` is written;
2. a plain rerun redoes ``im05`` (complete pictures, no leftovers) and keeps the three others;
3. an ``--overwrite True`` run dies (``os._exit(137)``, as kill -9: no clean-up) after half of ``im05``'s label map
   is written;
4. a plain rerun redoes ``im05``: its label map is complete and the same as run 2's;
5. another model in ``models/model.pt``: a plain rerun redoes every file and the report names the new model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from bundle_runner import CONFIGS, REPO
from PIL import Image

pytestmark = pytest.mark.slow

FEATURES = [4, 8, 16]
NAMES = ["a b", "a?b", "a_b", "im05"]

#: Code run before the workflow in the run's process: a fault at one instant of ``im05``'s outputs.
FAULTS = {
    "sigterm_mid_pictures": """
import os, signal
import scripts.visualize.writer as writer
_write_png = writer.write_png
def write_png(path, array):
    out = _write_png(path, array)
    if os.path.basename(str(path)) == "input.png" and "im05" in str(path):
        os.kill(os.getpid(), signal.SIGTERM)
    return out
writer.write_png = write_png
""",
    "kill_mid_label_map": """
import io, os
import PIL.Image
_save = PIL.Image.Image.save
def save(self, fp, *args, **kwargs):
    if "im05_seg" in os.path.basename(str(fp)):
        buf = io.BytesIO()
        _save(self, buf, format="PNG")
        with open(fp, "wb") as f:
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        os._exit(137)
    return _save(self, fp, *args, **kwargs)
PIL.Image.Image.save = save
""",
}

RUN = """
import json, sys
{fault}
from monai.bundle import run
run(config_file=sys.argv[1], **json.loads(sys.argv[2]))
"""


def _model(path, seed: int) -> str:
    """Save the config's network (random weights from ``seed``) as ``path``; return its sha256."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["features"] = FEATURES
    parser["ckpt_path"] = None
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(overrides: dict, fault: str | None = None) -> subprocess.CompletedProcess:
    code = RUN.format(fault=FAULTS[fault] if fault else "")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.run([sys.executable, "-c", code, str(CONFIGS / "inference.json"), json.dumps(overrides)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _state(out) -> dict:
    """What a run left: the report's status per output name, the label maps' bytes, the picture folders."""
    report = json.loads((out / "inference_report.json").read_text())
    pictures = out / "pictures"
    return {
        "report": report,
        "status": {f["output_name"]: f["status"] for f in report["files"]},
        "seg": {n: (out / f"{n}_seg.png").read_bytes() for n in NAMES if (out / f"{n}_seg.png").exists()},
        "prob": {n: tifffile.imread(out / f"{n}_prob.tif") for n in NAMES if (out / f"{n}_prob.tif").exists()},
        "folders": {p.name: sorted(q.name for q in p.iterdir()) for p in pictures.iterdir() if p.is_dir()}
        if pictures.is_dir() else {},
        "gallery": re.findall(r'<td class="name">([^<]+)</td>', (pictures / "index.html").read_text())
        if (pictures / "index.html").exists() else [],
        # hidden files left behind, but the run lock (scripts.locks: kept on purpose, reused by the next run)
        "hidden": sorted(p.name for p in [*out.iterdir(), *(pictures.iterdir() if pictures.is_dir() else [])]
                         if p.name.startswith(".") and p.name != ".run.lock"),
    }


def _complete_png(data: bytes) -> bool:
    import io

    try:
        Image.open(io.BytesIO(data)).load()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """The five runs above; per run its exit status and state, and the models' sha256."""
    root = tmp_path_factory.mktemp("interrupted")
    rng = np.random.default_rng(0)
    (root / "in").mkdir()
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(root / "in" / f"{name}.png")
    models = [_model(root / "models" / "model.pt", seed=0)]
    out = root / "out"
    overrides = {"bundle_root": str(root), "features": FEATURES, "input": str(root / "in"), "output_dir": str(out),
                 "feature_maps": False, "progress": False}
    runs = {}
    for key, extra, fault in [("sigterm", {}, "sigterm_mid_pictures"), ("rerun_pictures", {}, None),
                              ("kill9", {"overwrite": True}, "kill_mid_label_map"), ("rerun_label", {}, None)]:
        proc = _run({**overrides, **extra}, fault)
        runs[key] = (proc.returncode, _state(out), (proc.stdout + proc.stderr)[-3000:])
    models.append(_model(root / "models" / "model.pt", seed=1))
    proc = _run(overrides)
    runs["other_model"] = (proc.returncode, _state(out), (proc.stdout + proc.stderr)[-3000:])
    return runs, models


def test_sigterm_mid_pictures_leaves_no_partial_folder_and_the_file_is_redone(history):
    runs, _ = history
    rc, state, log = runs["sigterm"]
    assert rc == -15, log  # killed by the SIGTERM
    assert state["status"]["im05"] == "pending"
    assert "im05" not in state["folders"]  # never a folder with only input.png under its name
    rc, state, log = runs["rerun_pictures"]
    assert rc == 0, log
    assert state["status"]["im05"] == "ok", state["status"]  # redone, not skipped
    assert state["folders"]["im05"] == ["confidence.png", "difficult.png", "input.png", "overlay.png",
                                        "refined.png"]
    assert state["hidden"] == []  # the killed run's temporary folder is removed


def test_kill_mid_label_map_keeps_the_old_map_and_the_file_is_redone(history):
    runs, _ = history
    before = runs["rerun_pictures"][1]["seg"]["im05"]
    rc, state, log = runs["kill9"]
    assert rc == 137, log
    assert state["status"]["im05"] == "pending"
    assert state["seg"]["im05"] == before  # the old map, complete: the half-written one has a temporary name
    rc, state, log = runs["rerun_label"]
    assert rc == 0, log
    assert state["status"]["im05"] == "ok", state["status"]
    assert {n: state["status"][n] for n in NAMES[:3]} == dict.fromkeys(NAMES[:3], "skipped")  # done in the kill9 run
    assert _complete_png(state["seg"]["im05"]) and state["seg"]["im05"] == before  # same model: the same map
    assert state["hidden"] == []


def test_another_model_redoes_every_file_and_the_report_names_it(history):
    runs, models = history
    old, (rc, state, log) = runs["rerun_label"][1], runs["other_model"]
    assert rc == 0, log
    assert state["status"] == dict.fromkeys(NAMES, "ok")
    assert state["report"]["model_sha256"] == models[1] != models[0]
    assert {f["model_sha256"] for f in state["report"]["files"]} == {models[1]}
    assert all(not np.array_equal(state["prob"][n], old["prob"][n]) for n in NAMES)
    assert "predicted by another model" in log


def test_names_that_share_a_plain_file_name_get_their_own_pictures(history):
    rc, state, log = history[0]["rerun_pictures"]
    assert rc == 0, log
    assert sorted(state["seg"]) == sorted(NAMES)
    folders = sorted(f for f in state["folders"] if "input.png" in state["folders"][f])
    assert len(folders) == 4, folders  # one picture folder per label map
    assert state["gallery"] == folders  # and one gallery entry per input


# ------------------------------------------------------------------------------------------------ in-process
def test_atomic_writes_and_leftovers(tmp_path):
    from scripts.atomic import atomic_folder, atomic_path, remove_leftovers

    target = tmp_path / "x_seg.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".png")
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x_seg.png"]
    folder = tmp_path / "pictures" / "x"
    folder.mkdir(parents=True)
    (folder / "stale.png").write_bytes(b"old")
    with atomic_folder(folder) as tmp:
        (tmp / "input.png").write_bytes(b"new")
    assert sorted(p.name for p in folder.iterdir()) == ["input.png"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["x"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = [f".x_seg.png.{dead.stdout.strip()}.partial.png", f".a.{dead.stdout.strip()}.partial",
            f".index.html.{dead.stdout.strip()}.tmp"]
    alive = f".y_seg.png.{os.getppid()}.partial.png"  # a running process's file is left alone
    for name in [*left, alive, ".hidden_by_the_user.png"]:
        (tmp_path / name).mkdir() if name.endswith(".partial") else (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p in remove_leftovers(tmp_path)) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".hidden_by_the_user.png", alive, "pictures",
                                                                 "x_seg.png"])
