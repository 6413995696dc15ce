"""Answers per object (issue 23 §3): the measure step on hand-drawn objects with known counts, areas, perimeters and
centroids; the object CSV, the instance map, the folder summary; pixel sizes from file metadata; re-runs that skip,
re-measure changed maps and never replace other settings' measurements silently; one run through
``['inference.json', 'measure.json']`` with a tiny model, then ``run measuring`` on its outputs; the documented
commands' settings.
"""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from bundle_runner import BUNDLE, CONFIGS
from PIL import Image

from scripts.data import read_image, read_pixel_size, write_png
from scripts.data.pixel_size import PixelSize
from scripts.errors import ConfigError, user_error_in
from scripts.measure import ALL_IMAGES, OBJECT_COLUMNS, SUMMARY_COLUMNS, measure_objects, summary_rows, write_csv
from scripts.measure import write_instance_map
from scripts.transforms import SaveProbabilityMaps, read_probability_map
from scripts.workflows import FolderMeasurement, MeasurementFailed
from scripts.workflows.measurement import MeasurementError, pixel_size_setting, resolve_classes

NAMES = ["intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse"]
MITO, SYN = 3, 4
FEATURES = [4, 8, 16]


def _scene():
    """A 64 x 96 label map, hand-drawn: mitochondria = a 10 x 10 square (rows 10..19, cols 30..39) and a disc of
    radius 10 centred at (40, 70); synapses = a 4 x 4 square at (2..5, 2..5), a 6 x 6 one at (50..55, 5..10) and
    two pixels touching at a corner, (30, 10) and (31, 11). The rest is intracellular with a membrane row at 60."""
    labels = np.zeros((64, 96), np.uint8)
    labels[60] = 1
    labels[10:20, 30:40] = MITO
    yy, xx = np.mgrid[:64, :96]
    disc = (yy - 40) ** 2 + (xx - 70) ** 2 < 10 ** 2  # skimage.draw.disk: no one-pixel tips
    labels[disc] = MITO
    labels[2:6, 2:6] = SYN
    labels[50:56, 5:11] = SYN
    labels[30, 10] = labels[31, 11] = SYN
    confidence = np.full(labels.shape, 0.5, np.float32)
    confidence[10:20, 30:35], confidence[10:20, 35:40] = 0.6, 1.0  # the square's mean: 0.8
    confidence[disc] = 0.9
    return labels, confidence, int(disc.sum())


def test_hand_drawn_objects_are_counted_and_measured_exactly():
    labels, confidence, disc_area = _scene()
    assert abs(disc_area - math.pi * 100) < 0.03 * math.pi * 100  # the disc is a disc
    table = measure_objects(labels, {MITO: "mitochondria", SYN: "synapse"}, confidence, PixelSize(4.6, 4.6, "test"))
    rows = table.rows
    assert [r["class"] for r in rows] == ["mitochondria"] * 2 + ["synapse"] * 3  # the diagonal pair is one (8-conn.)
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    square, disc, small, pair, big = rows  # raster order of each class's first pixel
    assert square["area_px"] == 100 and disc["area_px"] == disc_area
    assert (small["area_px"], pair["area_px"], big["area_px"]) == (16, 2, 36)
    assert (square["centroid_y"], square["centroid_x"]) == (14.5, 34.5)
    assert (disc["centroid_y"], disc["centroid_x"]) == (40.0, 70.0)
    assert (big["centroid_y"], big["centroid_x"]) == (52.5, 7.5) and (pair["centroid_y"], pair["centroid_x"]) == (30.5, 10.5)
    # perimeter: the line through the border pixels' centres (scikit-image), 4 (s - 1) for an s x s square
    assert (square["perimeter_px"], small["perimeter_px"], big["perimeter_px"]) == (36, 12, 20)
    assert abs(disc["perimeter_px"] - 2 * math.pi * 10) < 0.03 * 2 * math.pi * 10
    assert square["area_um2"] == pytest.approx(100 * 0.0046 ** 2) and big["area_um2"] == pytest.approx(36 * 0.0046 ** 2)
    assert square["perimeter_um"] == pytest.approx(36 * 0.0046)
    assert square["mean_confidence"] == pytest.approx(0.8) and disc["mean_confidence"] == pytest.approx(0.9)
    assert small["mean_confidence"] == pytest.approx(0.5)
    # the instance map: each object's id on exactly its pixels, 0 elsewhere
    inst = table.instances
    assert inst.shape == labels.shape and set(np.unique(inst)) == {0, 1, 2, 3, 4, 5}
    for r in rows:
        assert (inst == r["id"]).sum() == r["area_px"] and np.all(labels[inst == r["id"]] == r["class_index"])
    assert np.array_equal(inst > 0, np.isin(labels, [MITO, SYN]))
    assert table.per_class == {
        "mitochondria": {"count": 2, "area_px": 100 + disc_area, "confidence_sum": pytest.approx(80 + 0.9 * disc_area)},
        "synapse": {"count": 3, "area_px": 54, "confidence_sum": pytest.approx(27.0)}}


def test_connectivity_anisotropic_pixels_and_no_confidence():
    labels, _, _ = _scene()
    table = measure_objects(labels, {SYN: "synapse"}, None, PixelSize(4.0, 5.0, "test"), connectivity=4)
    assert [r["area_px"] for r in table.rows] == [16, 1, 1, 36]  # the corner-touching pair: two objects
    assert table.rows[0]["area_um2"] == pytest.approx(16 * 4.0 * 5.0 * 1e-6)
    assert all(r["perimeter_um"] is None and r["mean_confidence"] is None for r in table.rows)  # not square pixels
    kept = measure_objects(labels, {SYN: "synapse"}, min_area_px=20)  # the 16 px square and the pair are left out
    assert [(r["id"], r["area_px"], r["centroid_y"]) for r in kept.rows] == [(1, 36, 52.5)]
    assert set(np.unique(kept.instances)) == {0, 1} and (kept.instances == 1).sum() == 36
    assert kept.per_class["synapse"] == {"count": 1, "area_px": 36, "confidence_sum": None}
    none = measure_objects(labels, {2: "glia_extracellular"})
    assert none.rows == [] and none.per_class["glia_extracellular"]["count"] == 0 and not none.instances.any()


def test_object_csv_and_instance_map_files(tmp_path):
    labels, confidence, _ = _scene()
    table = measure_objects(labels, {MITO: "mitochondria"}, confidence)  # no pixel size: empty µm cells
    path = write_csv(tmp_path / "a_objects.csv", OBJECT_COLUMNS, table.rows)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(OBJECT_COLUMNS) == ["id", "class", "class_index", "area_px", "area_um2", "perimeter_px",
                                               "perimeter_um", "centroid_y", "centroid_x", "mean_confidence"]
    assert rows[1] == ["1", "mitochondria", "3", "100", "", "36", "", "14.5", "34.5", "0.8"]
    size = PixelSize(4.6, 4.6, "test")
    tif = write_instance_map(tmp_path / "a_instances.tif", table.instances, size)
    back = tifffile.imread(tif)
    assert back.dtype == np.uint16 and np.array_equal(back, table.instances)
    assert read_pixel_size(tif) == PixelSize(4.6, 4.6, "TIFF resolution")  # Fiji reads the same tags
    many = np.arange(70_000, dtype=np.uint32).reshape(280, 250)
    assert tifffile.imread(write_instance_map(tmp_path / "m.tif", many)).dtype == np.uint32
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left


def test_summary_counts_fractions_and_density():
    a = {"output_name": "a", "image_area_px": 1000, "pixel_size_nm": [10.0, 10.0],
         "per_class": {"mitochondria": {"count": 4, "area_px": 250, "confidence_sum": 200.0}}}
    b = {"output_name": "b", "image_area_px": 3000, "pixel_size_nm": [10.0, 10.0],
         "per_class": {"mitochondria": {"count": 2, "area_px": 150, "confidence_sum": 60.0}}}
    rows = summary_rows([a, b], ["mitochondria", "synapse"])
    assert [(r["image"], r["class"], r["count"], r["area_px"]) for r in rows] == [
        ("a", "mitochondria", 4, 250), ("a", "synapse", 0, 0), ("b", "mitochondria", 2, 150), ("b", "synapse", 0, 0),
        (ALL_IMAGES, "mitochondria", 6, 400), (ALL_IMAGES, "synapse", 0, 0)]
    assert all(r["pixel_size_nm"] == "10" for r in rows) and rows[-1]["mean_confidence"] is None
    ra, total = rows[0], rows[4]
    # 1000 px of 10 x 10 nm = 0.1 µm²: 4 objects -> 40 per µm²
    assert ra["area_fraction"] == 0.25 and ra["image_area_um2"] == pytest.approx(0.1)
    assert ra["count_per_um2"] == pytest.approx(40) and ra["area_um2"] == pytest.approx(0.025)
    assert ra["mean_confidence"] == pytest.approx(0.8) and ra["pixel_size_nm"] == "10"
    assert total["area_fraction"] == 0.1 and total["count_per_um2"] == pytest.approx(6 / 0.4)
    assert total["mean_confidence"] == pytest.approx(260 / 400)
    unknown = summary_rows([a, {**b, "pixel_size_nm": None}], ["mitochondria"])  # one image's pixel size unknown
    assert unknown[1]["count_per_um2"] is None and unknown[2]["count_per_um2"] is None
    assert unknown[2]["area_fraction"] == 0.1 and unknown[2]["pixel_size_nm"] is None
    assert set(rows[0]) == set(SUMMARY_COLUMNS)


def test_pixel_size_from_file_metadata(tmp_path):
    img = np.zeros((8, 12), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", img, resolution=(1e7 / 4.6, 1e7 / 5.0), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "ij.tif", img, imagej=True, resolution=(1 / 0.0046, 1 / 0.0046), metadata={"unit": "um"})
    tifffile.imwrite(tmp_path / "ome.tif", img, ome=True, metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    tifffile.imwrite(tmp_path / "plain.tif", img)
    tifffile.imwrite(tmp_path / "print.tif", img, resolution=(72, 72), resolutionunit="INCH")
    Image.fromarray(img).save(tmp_path / "phys.png", dpi=(25.4e6 / 8.0, 25.4e6 / 8.0))  # 8 nm, as pHYs px per metre
    Image.fromarray(img).save(tmp_path / "screen.png", dpi=(72, 72))
    Image.fromarray(img).save(tmp_path / "none.png")
    nii = nib.Nifti1Image(img.T.astype(np.uint8), np.eye(4))  # stored (x, y)
    nii.header.set_zooms((0.0046, 0.005))
    nii.header.set_xyzt_units("micron")
    nib.save(nii, tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(img.T.astype(np.uint8), np.eye(4)), tmp_path / "unknown.nii.gz")
    assert read_pixel_size(tmp_path / "cm.tif") == PixelSize(5.0, 4.6, "TIFF resolution")  # (height, width)
    assert read_pixel_size(tmp_path / "ij.tif") == PixelSize(4.6, 4.6, "ImageJ TIFF")
    assert read_pixel_size(tmp_path / "ome.tif") == PixelSize(250.0, 250.0, "OME-TIFF")
    assert read_pixel_size(tmp_path / "phys.png") == PixelSize(8.0, 8.0, "PNG pHYs")
    assert read_pixel_size(tmp_path / "a.nii.gz") == PixelSize(5.0, 4.6, "NIfTI")
    for name in ("plain.tif", "print.tif", "screen.png", "none.png", "unknown.nii.gz", "missing.tif"):
        assert read_pixel_size(tmp_path / name) is None, name  # no unit, or 72 dpi (a print setting)


def test_settings_are_checked_with_a_hint():
    assert resolve_classes(None, NAMES) == dict(enumerate(NAMES))
    assert resolve_classes(["synapse", 3, "synapse"], NAMES) == {4: "synapse", 3: "mitochondria"}
    assert resolve_classes("membrane", NAMES) == {1: "membrane"}
    with pytest.raises(ConfigError, match=r"'mitochondrion' is not a class .* Did you mean 'mitochondria'\?"):
        resolve_classes(["mitochondrion"], NAMES)
    for bad in (7, [], True):
        with pytest.raises(ConfigError):
            resolve_classes(bad, NAMES)
    assert pixel_size_setting(4.6) == PixelSize(4.6, 4.6, "--pixel_size_nm")
    assert pixel_size_setting([4, 5]) == PixelSize(4.0, 5.0, "--pixel_size_nm")
    for bad in (0, -1, "4.6", [4.6], float("nan"), True):
        with pytest.raises(ConfigError, match="--pixel_size_nm must be"):
            pixel_size_setting(bad)


# ---------------------------------------------------------------------- a folder, as inference writes it
def _output_folder(root, labels, confidence, names=("a",), class_names=NAMES):
    """``<name>_seg.png``, ``<name>_prob.tif`` and ``inference_report.json`` as ``run inference`` writes them; the
    inputs are TIFFs with a 4.6 nm pixel size in their metadata."""
    out = root / "out"
    prob = np.zeros((len(class_names), *labels.shape), np.float32)
    for c in range(len(class_names)):
        prob[c] = np.where(labels == c, confidence, (1 - confidence) / (len(class_names) - 1))
    files = []
    for name in names:
        image = root / "in" / f"{name}.tif"
        image.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(image, np.zeros(labels.shape, np.uint8), resolution=(1e7 / 4.6, 1e7 / 4.6),
                         resolutionunit="CENTIMETER")
        write_png(out / f"{name}_seg.png", labels)
        SaveProbabilityMaps(str(out), list(class_names), transposed=False)(prob, name=name)
        files.append({"input": str(image), "output_name": name, "status": "ok",
                      "outputs": [f"{name}_seg.png", f"{name}_prob.tif"]})
    (out / "inference_report.json").write_text(json.dumps({"files": files, "earlier_files": []}))
    return out


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_measurement_skips_remeasures_and_refuses_other_settings(tmp_path):
    labels, confidence, disc_area = _scene()
    out = _output_folder(tmp_path, labels, confidence, names=("a", "b"))
    first = FolderMeasurement(out, NAMES, ["mitochondria", "synapse"]).run()
    assert first.finish() == {"ok": 2, "skipped": 0, "failed": 0}
    m = out / "measurements"
    rows = _read_csv(m / "a_objects.csv")
    assert [(r["id"], r["class"], r["area_px"]) for r in rows] == [  # the default min area (10 px) drops the pair
        ("1", "mitochondria", "100"), ("2", "mitochondria", str(disc_area)), ("3", "synapse", "16"), ("4", "synapse", "36")]
    assert rows[0]["area_um2"] == f"{100 * 0.0046 ** 2:.6g}"  # the pixel size of the input file's metadata
    assert float(rows[0]["mean_confidence"]) == pytest.approx(0.8, abs=1 / 255)  # from the uint8 probability map
    objects = np.isin(labels, [MITO, SYN])
    objects[30, 10] = objects[31, 11] = False  # the pair
    assert np.array_equal(tifffile.imread(m / "a_instances.tif") > 0, objects)
    summary = _read_csv(m / "summary.csv")
    assert [(r["image"], r["class"], r["count"]) for r in summary] == [
        ("a", "mitochondria", "2"), ("a", "synapse", "2"), ("b", "mitochondria", "2"), ("b", "synapse", "2"),
        (ALL_IMAGES, "mitochondria", "4"), (ALL_IMAGES, "synapse", "4")]
    um2 = 64 * 96 * 0.0046 ** 2
    assert float(summary[0]["count_per_um2"]) == pytest.approx(2 / um2, rel=1e-5)
    assert float(summary[1]["area_fraction"]) == pytest.approx(52 / (64 * 96), rel=1e-5)
    report = json.loads((m / "measure_report.json").read_text())
    assert report["files"][0]["pixel_size_source"] == "TIFF resolution" and report["finished"]

    # again: nothing changed, nothing measured; then "b" predicted again (another map): only "b" is measured
    before = (m / "a_objects.csv").stat().st_mtime_ns
    assert FolderMeasurement(out, NAMES, ["mitochondria", "synapse"]).run().counts() == {"ok": 0, "skipped": 2, "failed": 0}
    changed = labels.copy()
    changed[2:6, 2:6] = 0
    write_png(out / "b_seg.png", changed)
    assert FolderMeasurement(out, NAMES, ["mitochondria", "synapse"]).run().counts() == {"ok": 1, "skipped": 1, "failed": 0}
    assert (m / "a_objects.csv").stat().st_mtime_ns == before and len(_read_csv(m / "b_objects.csv")) == 3
    assert [r["count"] for r in _read_csv(m / "summary.csv")][-1] == "3"  # the summary has every image

    # other settings are refused before anything is written, unless --overwrite
    for other in ({"classes": ["mitochondria"]}, {"pixel_size_nm": 5.0}, {"connectivity": 4}, {"min_area_px": 0}):
        settings = {"classes": ["mitochondria", "synapse"], **other}
        with pytest.raises(ConfigError, match="other settings.*--overwrite True replaces them"):
            FolderMeasurement(out, NAMES, **settings).check()
    assert (m / "a_objects.csv").stat().st_mtime_ns == before
    again = FolderMeasurement(out, NAMES, ["mitochondria"], pixel_size_nm=5.0, overwrite=True).run()
    assert again.counts() == {"ok": 2, "skipped": 0, "failed": 0}
    assert _read_csv(m / "a_objects.csv")[0]["area_um2"] == f"{100 * 0.005 ** 2:.6g}"


def test_folder_measurement_errors(tmp_path):
    labels, confidence, _ = _scene()
    for bad in ({"min_area_px": -1}, {"min_area_px": 2.5}, {"connectivity": 6}):
        with pytest.raises(ConfigError, match="--measure_(min_area_px|connectivity) must be"):
            FolderMeasurement(tmp_path / "empty", NAMES, **bad).check()
    with pytest.raises(MeasurementError, match="no readable inference_report.json"):
        FolderMeasurement(tmp_path / "empty", NAMES).run()
    out = _output_folder(tmp_path, labels, confidence, class_names=["background", "a", "b", "c", "d"])
    with pytest.raises(MeasurementError, match=r"a_prob.tif: holds the classes \['background'"):
        FolderMeasurement(out, NAMES, ["synapse"]).run()
    (out / "a_prob.tif").unlink()
    write_png(out / "a_seg.png", labels[:, :50])  # a label map without its probability map: no confidence
    (out / "inference_report.json").write_text(json.dumps({"files": [
        {"input": "gone.tif", "output_name": "a", "status": "ok", "outputs": ["a_seg.png"]},
        {"input": "x.tif", "output_name": "x", "status": "ok", "outputs": ["x_seg.png"]},
        {"input": "y.tif", "output_name": "y", "status": "failed", "outputs": ["y_seg.png"]}]}))
    run = FolderMeasurement(out, NAMES, ["synapse"]).run()
    assert run.counts() == {"ok": 1, "skipped": 0, "failed": 1}  # the failed input is not measured
    assert _read_csv(out / "measurements" / "a_objects.csv")[0]["mean_confidence"] == ""
    with pytest.raises(MeasurementFailed, match=r"(?s)1 of 2 image\(s\) could not be measured.*x.tif \(x\): "
                       r"cannot be measured: .*x_seg.png: the label map is missing"):
        run.finish()


# ---------------------------------------------------------------------- through the configs
def test_inference_with_measure_json_then_measuring_the_outputs(tmp_path):
    """``run inference`` with ``['inference.json', 'measure.json']`` on a tiny model, then ``run measuring`` on its
    outputs, through ``monai.bundle.create_workflow`` -- what ``python -m monai.bundle run`` does -- in-process (as
    tests/test_experiments.py), so that it costs no interpreter start-up."""
    from monai.bundle import create_workflow

    from scripts.networks import XNet

    torch.manual_seed(0)
    (tmp_path / "models").mkdir()  # inference.json's network (networks#xnet) at the tiny width, no model_info
    torch.save(XNet(spatial_dims=2, in_channels=1, out_channels=5, features=FEATURES, batch_norm=True).state_dict(),
               tmp_path / "models" / "model.pt")
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", rng.integers(0, 256, (48, 64), dtype=np.uint8),
                     resolution=(1e7 / 5.0, 1e7 / 5.0), resolutionunit="CENTIMETER")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "in" / "b.png")
    out = tmp_path / "out"
    files = [str(CONFIGS / "inference.json"), str(CONFIGS / "measure.json")]
    settings = {"bundle_root": str(tmp_path), "features": FEATURES, "input": str(tmp_path / "in"),
                "output_dir": str(out), "pictures": False, "progress": False}

    def run(run_id, **overrides):
        workflow = create_workflow(config_file=files, run_id=run_id, **{**settings, **overrides})
        workflow.run()
        workflow.finalize()
        return workflow

    run("inference", measure=["membrane", "mitochondria"])
    m = out / "measurements"
    for name, size in (("a", PixelSize(5.0, 5.0, "")), ("b", None)):
        conf = read_probability_map(out / f"{name}_prob.tif").max(0)
        expected = measure_objects(read_image(out / f"{name}_seg.png"), {1: "membrane", 3: "mitochondria"}, conf, size,
                                   min_area_px=10)  # measure.json's default
        rows = _read_csv(m / f"{name}_objects.csv")
        assert len(rows) == len(expected.rows) > 0 and [int(r["area_px"]) for r in rows] == [
            r["area_px"] for r in expected.rows], name
        assert (rows[0]["area_um2"] != "") == (size is not None), name  # a.tif records 5 nm pixels, b.png nothing
        assert np.array_equal(tifffile.imread(m / f"{name}_instances.tif"), expected.instances), name
    summary = _read_csv(m / "summary.csv")
    assert [r["image"] for r in summary] == ["a", "a", "b", "b", ALL_IMAGES, ALL_IMAGES]
    counts = {(r["image"], r["class"]): int(r["count"]) for r in summary}
    assert counts[(ALL_IMAGES, "membrane")] == sum(
        1 for n in "ab" for r in _read_csv(m / f"{n}_objects.csv") if r["class"] == "membrane")
    assert json.loads((out / "inference_report.json").read_text())["counts"]["ok"] == 2

    # `run measuring` on those outputs: no model, no prediction; other classes only with --overwrite
    (tmp_path / "models" / "model.pt").unlink()
    with pytest.raises(RuntimeError) as refused:  # MONAI's "Failed to evaluate", from the ConfigError
        run("measuring", measure=["synapse"])
    assert "other settings" in str(user_error_in(refused.value))
    run("measuring", measure=["synapse"], pixel_size_nm=4.6, overwrite=True)
    report = json.loads((m / "measure_report.json").read_text())
    assert report["settings"]["classes"] == ["synapse"] and report["counts"] == {"ok": 2, "skipped": 0, "failed": 0}
    assert all(f["pixel_size_source"] == "--pixel_size_nm" for f in report["files"])
    assert sorted(p.name for p in out.glob("*_seg.png")) == ["a_seg.png", "b_seg.png"]


def test_documented_commands_name_settings_of_the_composed_configs():
    """Every ``--key`` of docs/measure.md's commands is a setting of inference.json + measure.json (what
    ``scripts.start_run`` checks before a run), and the page documents both run ids."""
    import shlex

    from monai.bundle import ConfigParser
    from test_docs_commands import fenced_commands

    from scripts.overrides import cli_overrides, unknown_overrides

    commands = [c for _, c in fenced_commands(BUNDLE / "docs" / "measure.md")]
    assert [shlex.split(c)[4] for c in commands] == ["inference", "measuring"]
    config = ConfigParser.load_config_files([str(CONFIGS / "inference.json"), str(CONFIGS / "measure.json")])
    for c in commands:
        overrides = cli_overrides(shlex.split(c)[5:])
        assert overrides["config_file"] == "['bundle/configs/inference.json','bundle/configs/measure.json']"
        assert not unknown_overrides(overrides, config), c
