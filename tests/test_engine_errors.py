"""Model-file errors end a bundle run with one message, printed last, naming the file and the fix (no traceback)."""

from __future__ import annotations

from bundle_runner import REPO, TINY_INFERENCE, config_arg, run_bundle

SHIPPED = REPO / "bundle" / "models" / "pretrained" / "model.pt"


def _infer(tmp_path, **overrides):
    return run_bundle(config_arg("inference.json"), None, {**TINY_INFERENCE, "bundle_root": str(tmp_path / "root"),
                      "data_root": str(tmp_path / "data"), "output_dir": str(tmp_path / "out"), "progress": False,
                      **overrides}, check=False, timeout=240)


def _last_line(proc):
    return proc.stderr.strip().splitlines()[-1]


def test_a_missing_model_names_the_file_and_the_shipped_one(tmp_path):
    proc = _infer(tmp_path, ckpt_path=str(tmp_path / "nope.pt"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Failed to evaluate" not in proc.stderr
    last = _last_line(proc)
    assert "nope.pt: no such model file" in last and "--ckpt_path bundle/models/pretrained/model.pt" in last


def test_a_truncated_model_names_the_file(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(SHIPPED.read_bytes()[:4096])
    proc = _infer(tmp_path, ckpt_path=str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{bad} cannot be read as a PyTorch checkpoint" in _last_line(proc)


def test_another_network_on_a_model_with_model_info_is_one_line(tmp_path):
    proc = _infer(tmp_path, ckpt_path=str(SHIPPED), network_def="@networks#xnet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert _last_line(proc).startswith("ERROR: the weights do not fit the XNet built here")


def test_divergence_ends_with_its_message_and_no_traceback(tmp_path):
    """A user error raised inside the trainer (here: the divergence guard) is not logged with tracebacks by the
    engines' StatsHandlers (v0.7.1: two tracebacks of 20-30 lines before the message)."""
    from bundle_runner import TINY

    proc = run_bundle(config_arg("train.json"), "training", {**TINY, "bundle_root": str(tmp_path / "root"),
                      "data_root": str(tmp_path / "data"), "learning_rate": 1e6}, check=False, timeout=240)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "the training loss exploded" in _last_line(proc) or "non-finite" in _last_line(proc)


def test_a_refused_input_is_one_line_naming_the_file_and_the_fix(tmp_path):
    """A non-image --input (v0.8.0: a 60-line traceback ending in "Failed to instantiate component") and an RGB image
    for a grey model (refused by the pre-flight): exit 1, no traceback, the file and the fix in the last line."""
    import numpy as np
    import tifffile

    (tmp_path / "notes.txt").write_text("not an image")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    for name, expected in (("notes.txt", "not an image, folder or datalist; give --input a folder of images"),
                           ("rgb.tif", "3 channel(s) (RGB) but the model takes 1 (grey); convert the image to grey")):
        proc = _infer(tmp_path, ckpt_path=str(SHIPPED), input=str(tmp_path / name), pictures=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert str(tmp_path / name) in proc.stderr and expected in proc.stderr, proc.stderr[-2000:]
