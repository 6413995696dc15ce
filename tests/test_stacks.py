"""Stacks and volumes in and out (issue 24, section 1): multi-page TIFF, ImageJ, OME-TIFF and 3-D NIfTI inputs are
segmented section by section with the 2D model and written back as stacks of the same layout, calibration carried;
stacks are told from multi-channel images by the file's structure; interrupted stacks are redone, finished ones
skipped; pictures for a subset of sections; and a stack + label stack trains through ``prepare folders``.

One inference run over a folder of tiny stacks (3-5 sections of 64 x 80) with a tiny X-Net whose ``model.pt`` the
test saves, through MONAI's bundle ``run`` in its own process, killed (``os._exit(137)``, as kill -9) in the middle of
the last stack; then a plain rerun of the same folder; then a 1-iteration training on a prepared stack; the rest
in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from bundle_runner import BUNDLE, CONFIGS, REPO, TINY, config_arg, run_bundle
from PIL import Image

from scripts.data import read_header, read_image
from scripts.data.pixel_size import read_pixel_size
from scripts.data.stack_writers import abort_sections, open_writers, write_section
from scripts.data.stacks import open_stack
from scripts.errors import ConfigError
from scripts.transforms import read_probability_map
from scripts.workflows import InferencePlan

FEATURES = [4, 8, 16]
RNG = np.random.default_rng(0)
STACK = RNG.integers(0, 256, (5, 64, 80), dtype=np.uint8)
AFFINE = np.diag([0.5, 0.6, 2.0, 1.0])


def _make_inputs(src):
    src.mkdir(parents=True)
    # an ImageJ hyperstack of 5 sections, 4 nm pixels, 50 nm apart
    tifffile.imwrite(src / "ij.tif", STACK, imagej=True, resolution=(250, 250),
                     metadata={"axes": "ZYX", "spacing": 0.05, "unit": "um"})
    # 4 grey pages without ImageJ/OME metadata (tifffile's own), resolution in pixels per cm: a stack, not RGBA
    tifffile.imwrite(src / "pages.tif", STACK[:4], photometric="minisblack", resolution=(2.5e5, 2e5),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(src / "ome.ome.tif", STACK[:3], ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.004, "PhysicalSizeY": 0.005, "PhysicalSizeZ": 0.05})
    volume = nib.Nifti1Image(np.ascontiguousarray(STACK[:3].transpose(2, 1, 0)), AFFINE)  # (x, y, z)
    volume.header.set_xyzt_units("micron")
    nib.save(volume, str(src / "vol.nii.gz"))
    tifffile.imwrite(src / "sec2.tif", STACK[2])  # section 2 as a 2D file
    tifffile.imwrite(src / "rgba.tif", RNG.integers(0, 256, (64, 64, 4), dtype=np.uint8))  # one RGBA page
    # tifffile stores a (4, H, W) array as one page of 4 planar samples (RGB + alpha): legal, but often meant as 4
    # sections
    tifffile.imwrite(src / "planar.tif", STACK[:4], photometric="rgb", planarconfig="separate",
                     extrasamples=["unassalpha"])


def _network():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["features"] = FEATURES
    parser["ckpt_path"] = None
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def")


#: The run, in its own process; with ``kill``: it dies (no clean-up, as kill -9) while writing section 1 of the
#: NIfTI label stack, the last input's.
RUN = """
import json, os, sys
if sys.argv[3] == "kill":
    from scripts.data import stack_writers
    _write = stack_writers.NiftiStackWriter._write
    def _write_and_die(self, section):
        _write(self, section)
        if self.written == 1:
            os._exit(137)
    stack_writers.NiftiStackWriter._write = _write_and_die
from monai.bundle import run
run(config_file=sys.argv[1], **json.loads(sys.argv[2]))
"""


def _run(overrides: dict, kill: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.run([sys.executable, "-c", RUN, str(CONFIGS / "inference.json"), json.dumps(overrides),
                           "kill" if kill else "-"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _hidden(out) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".run.lock")


def _files(out):
    return {f["output_name"]: f for f in json.loads((out / "inference_report.json").read_text())["files"]}


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stacks")
    _make_inputs(root / "in")
    (root / "models").mkdir()
    torch.save(_network().state_dict(), root / "models" / "model.pt")
    # feature_maps off: the feature-map pass changes the batch-norm statistics used for the next file (issue 15)
    out = root / "out"
    overrides = {"bundle_root": str(root), "features": FEATURES, "input": str(root / "in"),
                 "output_dir": str(out), "feature_maps": False, "picture_sections": [0, -1]}
    killed = _run(overrides, kill=True)
    after_kill = {"files": _files(out), "hidden": _hidden(out), "outputs": sorted(p.name for p in out.iterdir()),
                  "mtimes": {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}}
    rerun = _run(overrides)
    return root, after_kill, killed, rerun


def test_stacks_are_written_in_their_layout_with_the_calibration(stack_run):
    root, _, _, proc = stack_run
    out = root / "out"
    files = _files(out)
    done = {n for n, f in files.items() if f["status"] in ("ok", "skipped")}
    assert done == {"ij", "pages", "ome", "vol", "sec2"}, proc.stderr[-3000:]
    assert [files[n]["sections"] for n in ("ij", "pages", "ome", "vol", "sec2")] == [5, 4, 3, 3, 1]
    with tifffile.TiffFile(out / "ij_seg.tif") as tif:
        assert tif.series[0].shape == (5, 64, 80) and tif.series[0].axes == "ZYX" and tif.series[0].dtype == np.uint8
        assert tif.imagej_metadata["spacing"] == 0.05 and tif.imagej_metadata["unit"] == "um"
        assert tif.pages[0].tags["XResolution"].value == (250, 1) and len(tif.pages) == 5
    with tifffile.TiffFile(out / "pages_seg.tif") as tif:
        assert tif.series[0].shape == (4, 64, 80)
        tags = tif.pages[0].tags
        assert (tags["XResolution"].value, tags["YResolution"].value, tags["ResolutionUnit"].value) == (
            (250000, 1), (200000, 1), 3)
    with tifffile.TiffFile(out / "ome_seg.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape == (3, 64, 80) and tif.series[0].axes == "ZYX"
        xml = tif.ome_metadata
        assert all(f'PhysicalSize{a}="{v}"' in xml for a, v in (("X", 0.004), ("Y", 0.005), ("Z", 0.05)))
    with tifffile.TiffFile(out / "ij_prob.tif") as tif:  # probabilities as a stack: (Z, C, H, W)
        assert tif.series[0].shape == (5, 5, 64, 80) and tif.series[0].axes == "ZCYX"
        assert tif.imagej_metadata["spacing"] == 0.05
        assert tif.imagej_metadata["Labels"][:2] == ["intracellular", "membrane"]
    assert read_pixel_size(root / "in" / "ome.ome.tif").as_setting() == [5.0, 4.0]  # an .ome.tif, for the measure step
    prob = read_probability_map(out / "ij_prob.tif")
    assert prob.shape == (5, 5, 64, 80) and np.allclose(prob.sum(1), 1, atol=0.02)
    assert not _hidden(out), "no temporary file left"


def test_each_section_is_predicted_as_its_own_2d_file(stack_run):
    out = stack_run[0] / "out"
    seg2d = np.asarray(Image.open(out / "sec2_seg.png"))
    prob2d = read_probability_map(out / "sec2_prob.tif")
    assert len(np.unique(seg2d)) > 1, "a prediction that could differ"
    np.testing.assert_array_equal(tifffile.imread(out / "ij_seg.tif")[2], seg2d)
    np.testing.assert_array_equal(tifffile.imread(out / "ome_seg.ome.tif")[2], seg2d)
    np.testing.assert_array_equal(tifffile.imread(out / "pages_seg.tif")[2], seg2d)
    np.testing.assert_array_equal(read_probability_map(out / "ij_prob.tif")[2], prob2d)
    volume = nib.load(str(out / "vol_seg.nii.gz"))  # NIfTI in, NIfTI out: (x, y, z), the input's geometry
    assert volume.shape == (80, 64, 3) and volume.get_data_dtype() == np.uint8
    np.testing.assert_allclose(volume.affine, AFFINE)
    assert volume.header.get_xyzt_units()[0] == "micron"
    np.testing.assert_array_equal(np.asarray(volume.dataobj)[:, :, 2].T, seg2d)
    with tifffile.TiffFile(out / "vol_prob.tif") as tif:
        assert tif.imagej_metadata["spacing"] == 2.0 and tif.imagej_metadata["unit"] == "micron"


def test_rgba_image_and_four_pages_are_told_apart(stack_run):
    root, after_kill = stack_run[:2]
    files = after_kill["files"]  # the first run's records (the rerun skips the finished files unread)
    assert files["pages"]["status"] == "ok" and files["pages"]["channels"] == 1  # 4 grey pages: 4 sections
    rgba, planar = files["rgba"], files["planar"]
    assert rgba["status"] == planar["status"] == "failed" and rgba["sections"] == planar["sections"] == 1
    assert "4 channel(s) (RGB + alpha) but the model takes 1 (grey)" in rgba["reason"]
    assert "sections" not in rgba["reason"], "a real RGBA image gets no stack hint"
    assert "if these are 4 sections, not RGB + alpha planes" in planar["reason"]
    assert "photometric='minisblack'" in planar["reason"] and "\n" not in planar["reason"]
    # and the cheap look agrees, for the ambiguous layouts too
    src = root / "in"
    assert (read_header(src / "pages.tif").sections, read_header(src / "rgba.tif").channels) == (4, 4)
    tifffile.imwrite(src.parent / "tz.tif", np.zeros((2, 3, 16, 16, 1), np.uint8), photometric="minisblack",
                     metadata={"axes": "TZYXS"})
    assert "two axes of sections" in read_header(src.parent / "tz.tif").problem
    tifffile.imwrite(src.parent / "channels.tif", STACK[:4], imagej=True, metadata={"axes": "CYX"})
    header = read_header(src.parent / "channels.tif")
    assert (header.sections, header.channels) == (1, 4) and "mark them as slices" in header.hint
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2, 3), np.uint8), np.eye(4)), str(src.parent / "t.nii.gz"))
    assert "time points or components" in read_header(src.parent / "t.nii.gz").problem


def test_pictures_only_for_the_chosen_sections(stack_run):
    pictures = stack_run[0] / "out" / "pictures"
    folders = sorted(p.name for p in pictures.iterdir() if p.is_dir())
    assert folders == ["ij_z0", "ij_z4", "ome_z0", "ome_z2", "pages_z0", "pages_z3", "sec2", "vol_z0", "vol_z2"]
    assert (pictures / "ij_z4" / "overlay.png").is_file()
    outputs = _files(stack_run[0] / "out")["ij"]["outputs"]
    assert outputs[-2:] == ["pictures/ij_z0/input.png", "pictures/ij_z4/input.png"]


def test_a_killed_stack_is_redone_and_finished_ones_are_skipped(stack_run):
    root, after_kill, killed, rerun = stack_run
    out = root / "out"
    assert killed.returncode == 137, killed.stderr[-3000:]
    # killed while writing the NIfTI volume: it is pending, its outputs exist only as the dead run's partial files
    files = after_kill["files"]
    assert files["vol"]["status"] == "pending" and files["ij"]["status"] == "ok"
    assert not any(n.startswith("vol_") for n in after_kill["outputs"])
    assert any(n.startswith(".vol_seg.nii.gz.") for n in after_kill["hidden"])
    assert any(n.startswith(".vol_prob.tif.") for n in after_kill["hidden"])
    # the rerun redoes the volume alone, removes the partial files and keeps every finished output as it was
    files = _files(out)
    assert files["vol"]["status"] == "ok", rerun.stderr[-3000:]
    assert all(files[n]["status"] == "skipped" for n in ("ij", "pages", "ome", "sec2"))
    assert not _hidden(out)
    for name in ("ij_seg.tif", "ij_prob.tif", "ome_seg.ome.tif", "pages_seg.tif", "sec2_seg.png"):
        assert (out / name).stat().st_mtime_ns == after_kill["mtimes"][name], name
    assert "1 stack(s) of 3 section(s)" in rerun.stdout + rerun.stderr
    assert rerun.returncode == 1 and "2 of 7 input(s) failed" in rerun.stderr  # rgba.tif and planar.tif, as before


def test_stack_writer_shows_nothing_before_the_last_section(tmp_path):
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, STACK[:3], photometric="minisblack")
    target = tmp_path / "s_seg.tif"
    for k in range(2):
        assert write_section(target, src, k, STACK[k]) is None
    assert not target.exists() and len(open_writers()) == 1
    with pytest.raises(ValueError, match="an earlier section failed"):  # out of order: the stack is dropped
        write_section(target, src, 1, STACK[1])  # section 2 was next
    assert not open_writers() and not list(tmp_path.glob(".s_seg*"))
    for k in range(3):
        write_section(target, src, k, STACK[k])
    np.testing.assert_array_equal(tifffile.imread(target), STACK[:3])
    write_section(target, src, 0, STACK[0])
    assert abort_sections(src) == [target] and not list(tmp_path.glob(".s_seg*"))
    np.testing.assert_array_equal(tifffile.imread(target), STACK[:3])  # the finished stack stays


def test_plan_of_a_stack(tmp_path):
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, STACK, photometric="minisblack")
    tifffile.imwrite(tmp_path / "l.tif", (STACK > 128).astype(np.uint8), photometric="minisblack")
    plan = InferencePlan([{"image": str(src), "label": str(tmp_path / "l.tif")}], tmp_path / "out").prepare()
    assert len(plan) == 5 and [i["section"] for i in plan] == list(range(5))
    assert all(i["image_stack"] == str(src) and i["label_stack"] == str(tmp_path / "l.tif") for i in plan)
    assert not any("image" in i or "label" in i for i in plan)
    assert [i["picture_name"] for i in plan] == ["", "", "s_z2", "", ""], "default: the middle section"
    assert plan.records[0]["outputs"] == ["s_seg.tif", "s_prob.tif", "pictures/s_z2/input.png"]
    everything = InferencePlan([{"image": str(src)}], tmp_path / "o2", picture_sections="all").prepare()
    assert [i["picture_name"] for i in everything] == [f"s_z{k}" for k in range(5)]
    with pytest.raises(ConfigError, match="picture_sections must be"):
        InferencePlan([{"image": str(src)}], tmp_path / "o3", picture_sections="middle").prepare()
    deep = tmp_path / "deep.tif"  # 12-bit data: one intensity range for the whole stack, from its sections' pixels
    tifffile.imwrite(deep, (STACK.astype(np.uint16) * 16), photometric="minisblack")
    plan = InferencePlan([{"image": str(deep)}], tmp_path / "o4").prepare()
    assert plan.records[0]["intensity"]["range"] and plan.records[0]["intensity"]["range"][1] > 255
    assert all(i["intensity_range"] == plan.records[0]["intensity"]["range"] for i in plan)
    with open_stack(src) as volume:  # one section read alone, in the file's orientation
        np.testing.assert_array_equal(volume.section(-1), STACK[-1])


def test_stack_and_label_stack_train_with_the_documented_commands(tmp_path):
    """docs/volumes.md's two commands for the EM challenge layout, as written, on a tiny stack (5 sections): the
    preparation splits by section, the training (1 iteration of a tiny network) ends with a model."""
    import shlex

    from test_docs_commands import fenced_commands

    from scripts.data.prepare import main
    from scripts.overrides import cli_overrides

    commands = [c for _, c in fenced_commands(BUNDLE / "docs" / "volumes.md")]
    prepare, train = [c for c in commands if "train-volume" in c or "em/" in c]
    labels = np.where(STACK > 100, 255, 0).astype(np.uint8)  # the EM challenge's coding: 255 cell, 0 membrane
    tifffile.imwrite(tmp_path / "train-volume.tif", STACK, photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", labels, photometric="minisblack")
    data = tmp_path / "em"
    args = shlex.split(prepare.replace("train-", f"{tmp_path}/train-").replace("bundle/data/em", str(data)))
    assert args[:4] == ["python", "-m", "scripts.data.prepare", "folders"] and main(args[3:]) == 0
    datalist = json.loads((data / "datalist.json").read_text())
    names = {k: [os.path.basename(i["image"]) for i in datalist[k]] for k in ("training", "validation", "testing")}
    # split by section in consecutive blocks, as the Drosophila folds: no section in two splits
    assert names == {"testing": ["train-volume_z0.png"], "validation": ["train-volume_z1.png"],
                     "training": [f"train-volume_z{k}.png" for k in (2, 3, 4)]}
    np.testing.assert_array_equal(read_image(data / "sections" / "images" / "train-volume_z3.png"), STACK[3])
    np.testing.assert_array_equal(read_image(data / "sections" / "labels" / "train-volume_z3.png"), labels[3] == 0)
    documented = cli_overrides(shlex.split(train.replace("bundle/data/em", str(data)))[5:])
    assert documented.pop("config_file") == "bundle/configs/train.json"
    overrides = {**TINY, **documented, "epochs": 1, "batch_size": 3, "val_batch_size": 1,
                 "bundle_root": str(tmp_path / "run")}
    run_bundle(config_arg("train.json"), "training", overrides)
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
