"""The shipped weights are checked against their pin when read, and an unreadable checkpoint is named."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest

from bundle_runner import REPO

SHIPPED = REPO / "bundle" / "models" / "pretrained" / "model.pt"


def _bundle_copy(tmp_path):
    """A bundle folder holding the shipped model.pt and the real large_files.json."""
    root = tmp_path / "bundle"
    (root / "models" / "pretrained").mkdir(parents=True)
    shutil.copy(REPO / "bundle" / "large_files.json", root / "large_files.json")
    shutil.copy(SHIPPED, root / "models" / "pretrained" / "model.pt")
    return root, root / "models" / "pretrained" / "model.pt"


def test_the_pin_is_the_shipped_file():
    from scripts.networks.pinned import pinned_hash

    manifest, expected = pinned_hash(SHIPPED)
    assert manifest.endswith("large_files.json")
    assert expected == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()


def test_an_edited_shipped_file_is_reported_when_read(tmp_path, caplog):
    from scripts.networks import read_checkpoint
    from scripts.networks.pinned import check_pinned_file

    _, model = _bundle_copy(tmp_path)
    with caplog.at_level(logging.INFO, logger="scripts.networks.pinned"):
        assert check_pinned_file(model) == "match"
    assert "matches its pinned sha256" in caplog.text
    caplog.clear()

    import torch

    ckpt = torch.load(model, map_location="cpu", weights_only=True)
    first = next(iter(ckpt["model"]))
    ckpt["model"][first] = ckpt["model"][first] + 1.0  # an edit that still loads
    torch.save(ckpt, model)
    with caplog.at_level(logging.WARNING, logger="scripts.networks.pinned"):
        state, info = read_checkpoint(model)
    assert info is not None and first in state  # it still loads: the edit may be deliberate
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "is not the file this bundle version ships" in warning[0].getMessage()
    assert str(model) in warning[0].getMessage() and "models/model.pt" in warning[0].getMessage()


def test_a_file_no_manifest_lists_is_not_checked(tmp_path):
    from scripts.networks.pinned import check_pinned_file

    root, model = _bundle_copy(tmp_path)
    other = root / "models" / "model.pt"
    shutil.copy(model, other)
    assert check_pinned_file(other) == "unpinned"
    (root / "large_files.json").write_text(json.dumps({"large_files": []}))
    assert check_pinned_file(model) == "unpinned"


def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    from scripts.networks import read_checkpoint

    _, model = _bundle_copy(tmp_path)
    model.write_bytes(model.read_bytes()[:328])
    with pytest.raises(ValueError, match=r"model\.pt cannot be read as a PyTorch checkpoint .*truncated"):
        read_checkpoint(model)
