"""Inference on a realistic folder (issue 11): pre-flight, fault isolation, unique names, skip/overwrite, report.

One lab-like folder -- a good 8-bit PNG, ``x.png`` + ``x.tif`` (same stem), a 16-bit TIFF, an RGB image for a grey
model, a TIFF whose metadata calls its 3 RGB planes sections (ambiguous: refused) and a half-copied (truncated) PNG -- predicted with a tiny X-Net whose ``model.pt`` the
test saves, through ``python -m monai.bundle run inference`` as users run it. Then the same folder again (finished
files are skipped), then one file with ``--overwrite True`` (replaced; the gallery still lists every image), and an
empty folder. The pre-flight's rules are also tested in-process (fast).
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import tifffile
import torch
from bundle_runner import CONFIGS, config_arg, run_bundle
from PIL import Image

from scripts.data import read_header
from scripts.data.intensity import intensity_scaling
from scripts.workflows import InferencePlan, unique_output_names
from scripts.transforms import read_probability_map

FEATURES = [4, 8, 16]
GOOD = ["deep", "good", "x_png", "x_tif"]


def _network():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["features"] = FEATURES
    parser["ckpt_path"] = None  # the config's network, not a model in the repository's bundle (the shipped one)
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def")


def _make_folder(src):
    rng = np.random.default_rng(0)
    src.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (70, 48), dtype=np.uint8)).save(src / "good.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(src / "x.png")
    tifffile.imwrite(src / "x.tif", rng.integers(0, 256, (40, 56), dtype=np.uint8))
    tifffile.imwrite(src / "deep.tif", rng.integers(0, 4000, (64, 80), dtype=np.uint16))  # 12-bit data in uint16
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / "rgb.png")
    # tifffile stores a (3, H, W) array as one page of 3 planar RGB samples, whatever axes its metadata names
    tifffile.imwrite(src / "stack.tif", rng.integers(0, 256, (3, 32, 32), dtype=np.uint8), metadata={"axes": "ZYX"},
                     photometric="rgb")
    Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(src / "trunc.png")
    data = (src / "trunc.png").read_bytes()
    (src / "trunc.png").write_bytes(data[: len(data) // 2])  # half-copied: the header reads, the pixels do not


def _expected_prob(net, image: np.ndarray, low: float, high: float) -> np.ndarray:
    """The network's class probabilities (C, H, W) for ``image`` (H, W) scaled from low..high to 0..1 (computed in
    MONAI's (W, H) layout, as the bundle's loader gives it, and turned back)."""
    from scripts.inferers import OverlapTileInferer

    x = np.clip((image.astype(np.float32) - np.float32(low)) / np.float32(high - low), 0, 1).astype(np.float32)
    with torch.no_grad():
        logits = OverlapTileInferer()(torch.from_numpy(np.ascontiguousarray(x.T))[None, None], net.eval())
    return logits.softmax(1)[0].numpy().transpose(0, 2, 1)


def _assert_same_prediction(out, name, expected):
    """The saved uint8 probability map equals ``expected`` to its quantisation (plus float rounding across thread
    counts), and the label map is its arg-max wherever the two top classes are apart."""
    prob = read_probability_map(out / f"{name}_prob.tif")
    assert prob.shape == expected.shape and np.abs(prob - expected).max() <= 0.5 / 255 + 1e-4, name
    seg = np.asarray(Image.open(out / f"{name}_seg.png"))
    top2 = np.sort(expected, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-4
    assert clear.mean() > 0.5 and np.array_equal(seg[clear], expected.argmax(0)[clear]), name


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_inference")
    _make_folder(root / "in")
    net = _network()
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    # feature_maps off: the feature-map pass runs the network outside eval mode (issue 15), which would change the
    # batch-norm statistics used for the next file and so the comparison with a direct computation below
    overrides = {"bundle_root": str(root), "features": FEATURES, "input": str(root / "in"),
                 "output_dir": str(root / "out"), "feature_maps": False}
    proc = run_bundle(config_arg("inference.json"), None, overrides, check=False)
    return root, net, overrides, proc


def _report(root):
    report = json.loads((root / "out" / "inference_report.json").read_text())
    return report, {f["output_name"]: f for f in report["files"]}


def test_bad_files_are_reported_and_every_good_file_is_finished(folder_run):
    root, net, _, proc = folder_run
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]  # documented: some input failed
    assert "3 of 7 input(s) failed; every other file was processed" in log
    report, files = _report(root)
    assert report["counts"] == {"ok": 4, "skipped": 0, "failed": 3, "pending": 0}
    assert {n for n, f in files.items() if f["status"] == "ok"} == set(GOOD)
    # each bad file named, with its reason, at the stage that caught it
    assert files["rgb"]["stage"] == "pre-flight" and "3 channel(s)" in files["rgb"]["reason"]
    assert files["stack"]["stage"] == "pre-flight" and "one grey page per section" in files["stack"]["reason"]
    assert files["trunc"]["stage"] == "run" and "corrupt or truncated" in files["trunc"]["reason"]
    for name in ("rgb", "stack", "trunc"):
        assert files[name]["reason"].startswith(str(root / "in")), files[name]
        assert not list((root / "out").glob(f"{name}_*"))
    # one readable pre-flight message listing both refused files, before the model was loaded
    preflight = log.index("pre-flight: 2 input(s) will not be predicted")
    assert preflight < log.index("Restored all variables") and "rgb.png" in log[preflight:] and "stack.tif" in log[preflight:]


def test_same_stem_gets_distinct_names_and_8_bit_is_scaled_as_in_training(folder_run):
    root, net, _, _ = folder_run
    out = root / "out"
    for name in GOOD:
        for suffix in ("_seg.png", "_prob.tif"):
            assert (out / f"{name}{suffix}").is_file(), name + suffix
        assert (out / "pictures" / name / "overlay.png").is_file()
    assert not (out / "x_seg.png").exists()  # x.png and x.tif no longer write the same file
    _, files = _report(root)
    for name, file in (("good", "good.png"), ("x_png", "x.png"), ("x_tif", "x.tif")):
        assert files[name]["intensity"] == {"rule": "model", "range": [0.0, 255.0]}
        image = np.asarray(Image.open(root / "in" / file)) if file.endswith(".png") else tifffile.imread(root / "in" / file)
        _assert_same_prediction(out, name, _expected_prob(net, image, 0.0, 255.0))  # exactly today's /255 scaling
    prob = read_probability_map(out / "good_prob.tif")
    assert prob.shape == (5, 70, 48) and np.abs(prob.sum(0) - 1).max() <= 5 * 0.5 / 255 + 1e-6


def test_16_bit_image_is_scaled_by_its_percentiles_not_clipped(folder_run):
    root, net, _, proc = folder_run
    _, files = _report(root)
    deep = tifffile.imread(root / "in" / "deep.tif")
    low, high = np.percentile(deep, (0.5, 99.5))
    assert files["deep"]["intensity"]["rule"] == "percentile"
    np.testing.assert_allclose(files["deep"]["intensity"]["range"], [low, high])
    assert "scaled by their own 0.5/99.5 percentiles" in proc.stdout + proc.stderr
    _assert_same_prediction(root / "out", "deep", _expected_prob(net, deep, low, high))
    clipped = _expected_prob(net, deep, 0.0, 255.0)  # what the old clipping at 255 gave: a different prediction
    assert np.abs(clipped - read_probability_map(root / "out" / "deep_prob.tif")).max() > 0.05


def test_existing_outputs_are_skipped_then_replaced_with_overwrite(folder_run):
    root, _, overrides, _ = folder_run
    out = root / "out"
    before = {n: (out / f"{n}_seg.png").stat().st_mtime_ns for n in GOOD}
    time.sleep(0.05)
    proc = run_bundle(config_arg("inference.json"), None, overrides, check=False)
    assert proc.returncode == 1  # the bad files are still bad
    report, files = _report(root)
    assert report["counts"] == {"ok": 0, "skipped": 4, "failed": 3, "pending": 0}
    assert all(files[n]["status"] == "skipped" and "--overwrite True" in files[n]["reason"] for n in GOOD)
    assert before == {n: (out / f"{n}_seg.png").stat().st_mtime_ns for n in GOOD}  # untouched
    # nothing to predict: the evaluator has no iteration, without MONAI's empty-loader warning about distributed runs
    assert "`dataloader` is empty" not in proc.stdout + proc.stderr

    # one file again, with --overwrite: replaced; the gallery lists every image of the folder, not only this run's
    proc = run_bundle(config_arg("inference.json"), None,
                      {**overrides, "input": str(root / "in" / "good.png"), "overwrite": True}, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (out / "good_seg.png").stat().st_mtime_ns > before["good"]
    assert _report(root)[0]["counts"] == {"ok": 1, "skipped": 0, "failed": 0, "pending": 0}
    html = (out / "pictures" / "index.html").read_text()
    assert re.findall(r'<td class="name">([^<]+)</td>', html) == sorted(GOOD)


def test_empty_folder_fails_before_loading_the_model(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_bundle(config_arg("inference.json"), None, {"bundle_root": str(tmp_path), "features": FEATURES,
                      "input": str(tmp_path / "empty"), "output_dir": str(tmp_path / "out")}, check=False)
    assert proc.returncode != 0
    assert "holds no .png/.jpg/.tif/.tiff/.nii/.nii.gz image" in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ in-process
def test_unique_output_names():
    paths = ["/a/x.png", "/a/x.tif", "/a/y.nii.gz", "/b/x.png", "/a/x_png.png", "/a/Z.png", "/a/z.jpg"]
    names = unique_output_names(paths)
    assert names == ["x_png", "x_tif", "y", "x_png__2", "x_png__3", "Z_png", "z_jpg"]
    assert len({n.casefold() for n in names}) == len(names)
    assert unique_output_names(paths) == names  # deterministic: a restarted run finds its outputs


def test_headers(tmp_path):
    _make_folder(tmp_path / "in")
    src = tmp_path / "in"
    assert read_header(src / "good.png") == read_header(src / "good.png")
    h = read_header(src / "good.png")
    assert (h.size, h.channels, h.dtype, h.problem) == ((70, 48), 1, "uint8", None)
    h = read_header(src / "deep.tif")
    assert (h.size, h.channels, h.dtype) == ((64, 80), 1, "uint16")
    assert read_header(src / "rgb.png").channels == 3
    assert "each page holds SYX [3, 32, 32]" in read_header(src / "stack.tif").problem
    (src / "bad.tif").write_bytes(b"not a tiff")
    assert "cannot read this .tif file" in read_header(src / "bad.tif").problem


@pytest.mark.parametrize(
    "rule, image, expected",
    [
        ("auto", np.array([0, 255], np.uint8), ("model", 0.0, 255.0)),
        ("auto", np.array([0, 200], np.uint16), ("model", 0.0, 255.0)),
        ("auto", np.arange(1001, dtype=np.uint16), ("percentile", 5.0, 995.0)),
        ("dtype", np.array([0, 7], np.uint16), ("dtype", 0.0, 65535.0)),
        ("dtype", np.array([0.0, 0.5], np.float32), ("dtype", 0.0, 1.0)),
        ("percentile", np.arange(1001, dtype=np.int32), ("percentile", 5.0, 995.0)),
    ],
)
def test_intensity_rules(rule, image, expected):
    assert tuple(intensity_scaling(image, rule, 255)) == pytest.approx(expected)


@pytest.mark.parametrize("rule, image", [("model", np.array([0, 300], np.uint16)),
                                         ("dtype", np.array([0.0, 2.0], np.float32))])
def test_intensity_rules_refuse_instead_of_clipping(rule, image):
    with pytest.raises(ValueError, match="--intensity_rule"):
        intensity_scaling(image, rule, 255)


def test_plan_skips_finished_files_but_retries_failed_ones(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "b.png")
    items = [{"image": str(src / n)} for n in ("a.png", "b.png")]
    kw = dict(output_dir=out, pictures=False, save_probabilities=False)
    assert [r["status"] for r in InferencePlan(items, **kw).prepare().records] == ["pending", "pending"]
    out.mkdir()
    for n in ("a", "b"):
        (out / f"{n}_seg.png").write_bytes(b"x")
    (out / "inference_report.json").write_text(json.dumps({"files": [
        {"input": str(src / "a.png"), "status": "ok"}, {"input": str(src / "b.png"), "status": "failed"}]}))
    plan = InferencePlan(items, **kw).prepare()
    assert [r["status"] for r in plan.records] == ["skipped", "pending"]  # b failed last time: written again
    assert [i["output_name"] for i in plan.items] == ["b"]
    assert [r["status"] for r in InferencePlan(items, overwrite=True, **kw).prepare().records] == ["pending", "pending"]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "c.png")
    with pytest.raises(ValueError, match="3 channel"):  # nothing usable: one error listing the problems
        InferencePlan([{"image": str(src / "c.png")}], **kw).prepare()


def test_scaling_transform_is_the_training_scaling_for_8_bit_and_never_clips():
    """Without a pre-flight range (MONAI Label): 8-bit values give exactly ScaleIntensityRanged(0, 255) (the training
    transform); 16-bit values are scaled by their percentiles, not clipped; 'dtype' needs the pre-flight's range."""
    from monai.transforms import ScaleIntensityRanged

    from scripts.transforms import ScaleIntensityByRuled

    rng = np.random.default_rng(0)
    img8 = torch.from_numpy(rng.integers(0, 256, (1, 20, 30)).astype(np.float32))
    training = ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True)({"image": img8})
    assert torch.equal(ScaleIntensityByRuled("image")({"image": img8})["image"], training["image"])
    img16 = torch.from_numpy(rng.integers(0, 4000, (1, 20, 30)).astype(np.float32))
    out = ScaleIntensityByRuled("image")({"image": img16})["image"]
    assert (out == 1).float().mean() < 0.01 and 0.4 < out.mean() < 0.6  # clipping at 255 would make ~94% of it 1
    ranged = ScaleIntensityByRuled("image", rule="dtype")({"image": img16, "intensity_range": [0, 65535]})["image"]
    assert torch.allclose(ranged, img16 / 65535)
    with pytest.raises(ValueError, match="pre-flight"):
        ScaleIntensityByRuled("image", rule="dtype")({"image": img16})
    with pytest.raises(ValueError, match="intensity_rule must be one of"):
        ScaleIntensityByRuled("image", rule="minmax")
