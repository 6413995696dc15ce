"""Versioned sharing: ``tools/package_bundle.py`` (version/changelog rules, not-bumped detection through the
release record and through git, archive content, byte reproducibility) and the round trip a user makes: package
a trained bundle, ``monai.bundle.download`` it from a ``file://`` URL, ``monai.bundle.load`` the trained network,
and run the extracted bundle's inference with ``python -m monai.bundle run``.

Packaging tests use a small fake bundle (the tool only reads files); the round trip uses a copy of the real one
with a tiny network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bundle_runner import BUNDLE, REPO, _cli_value

#: Expected noise: torch 2.13 deprecates TorchScript; MONAI warns before parsing any config and when a download
#: has no hash (the test checks the archive's sha256 record itself).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated"),
    pytest.mark.filterwarnings("ignore:parsing config_file"),
    pytest.mark.filterwarnings("ignore:No hash value provided"),
]

TOOL = REPO / "tools" / "package_bundle.py"
NAME = "microscopy_cell_segmentation"


def _load_tool():
    spec = importlib.util.spec_from_file_location("package_bundle", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pb = _load_tool()


def metadata(version: str = "0.1.0", changelog: dict | None = None) -> dict:
    return {"version": version, "changelog": changelog if changelog is not None else {version: "first"}}


#: Fake bundle: what is packaged (True) and what is not (False).
FAKE_FILES = {
    "LICENSE": True,
    "configs/inference.json": True,
    "configs/experiments/a.json": True,
    "configs/logging.conf": True,
    "docs/README.md": True,
    "docs/images/x.png": True,
    "scripts/__init__.py": True,
    "scripts/networks/__init__.py": True,
    "models/model.pt": True,
    "models/model.ts": True,
    "models/checkpoint_epoch=2.pt": False,
    "models/model.onnx": False,
    "models/.gitkeep": False,
    "scripts/__pycache__/__init__.cpython-311.pyc": False,
    "scripts/networks/unet.pyc": False,
    "scripts/.hidden.py": False,
    "cellseg_xnet_bundle.egg-info/PKG-INFO": False,
    "data/synthetic/images/a.png": False,
    "eval/metrics.json": False,
    "logs/events.out.tfevents.1": False,
    "outputs/a_seg.png": False,
    "runs/x.txt": False,
    "README.txt": False,
    ".pytest_cache/v": False,
}


#: The fake bundle's metadata: two classes, one input channel (what the fake model.pt's model_info says).
FAKE_FORMAT = {"inputs": {"image": {"num_channels": 1}},
               "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "a", "1": "b"}}}}


def write_model(path: Path, seed: int = 0, class_names=("a", "b"), with_info: bool = True) -> None:
    """A small checkpoint in the bundle's format (weights + model_info); ``seed`` changes the weights."""
    weights = {"w": torch.arange(4.0) + seed}
    info = {"network": {"_target_": "scripts.networks.UNet", "in_channels": 1, "out_channels": len(class_names)},
            "class_names": list(class_names), "intensity_max": 255, "patch_size": [64, 64]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "model_info": info} if with_info else weights, path)


def make_bundle(root: Path, meta: dict | None = None) -> Path:
    """A fake bundle under ``root`` with every kind of file in :data:`FAKE_FILES`; its model.pt is pinned to its
    version in large_files.json (as the tool writes it at the version bump)."""
    for rel in FAKE_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"content of {rel}\n".encode())
    write_model(root / "models" / "model.pt")
    (root / "configs" / "inference.json").write_text('{"intensity_max": 255}')
    meta = meta or metadata()
    (root / "configs" / "metadata.json").write_text(json.dumps({**meta, "network_data_format": FAKE_FORMAT}, indent=4))
    pin(root)
    return root


def pin(bundle: Path) -> None:
    """Pin the bundle's model files to its current version (large_files.json)."""
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    weights = [f for f in pb.list_bundle_files(bundle) if f.startswith("models/")]
    (bundle / pb.MANIFEST).write_text(json.dumps(pb.make_manifest(bundle, version, weights), indent=4))


def packaged_names(root_name: str = NAME) -> list[str]:
    kept = ["configs/metadata.json", pb.MANIFEST] + [r for r, keep in FAKE_FILES.items() if keep]
    return sorted(f"{root_name}/{r}" for r in kept)


def set_version(bundle: Path, version: str, note: str = "change") -> None:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["version"] = version
    meta["changelog"] = {version: note, **meta["changelog"]}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))


# --------------------------------------------------------------------------------------------------- metadata rules


def test_semantic_version_order():
    ordered = ["0.1.0", "0.2.0-alpha", "0.2.0-alpha.1", "0.2.0-alpha.beta", "0.2.0-beta.2", "0.2.0-beta.11",
               "0.2.0-rc.1", "0.2.0", "0.10.0", "1.0.0"]
    assert sorted(reversed(ordered), key=pb.parse_version) == ordered
    assert pb.parse_version("1.2.3+build.5") == pb.parse_version("1.2.3")
    for bad in ("1.2", "v1.2.3", "01.2.3", "1.2.3.4", "", None):
        with pytest.raises(ValueError, match="semantic version"):
            pb.parse_version(bad)


def test_real_metadata_follows_the_rules():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert pb.check_metadata(meta) == meta["version"]


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"changelog": {"0.1.0": "x"}}, "no 'version'"),
        (metadata("0.1"), "not a semantic version"),
        (metadata("0.2.0", {}), "'changelog' must be a non-empty object"),
        (metadata("0.2.0", {"0.2.0": "b", "first": "a"}), "changelog key 'first' is not a semantic version"),
        (metadata("0.2.0", {"0.1.0": "a"}), "version 0.2.0 has no changelog entry"),
        (metadata("0.2.0", {"0.1.0": "a", "0.2.0": "b"}), "sorted newest first"),
        (metadata("0.10.0", {"0.9.0": "b", "0.10.0": "c"}), "sorted newest first"),  # not string order
        (metadata("0.1.0", {"0.2.0": "b", "0.1.0": "a"}), "newest changelog entry is 0.2.0"),
        (metadata("0.2.0", {"0.2.0": " ", "0.1.0": "a"}), "entry of 0.2.0 is empty"),
    ],
)
def test_metadata_rule_violations_name_the_fix(meta, message):
    with pytest.raises(pb.PackagingError, match=message):
        pb.check_metadata(meta)


def test_duplicate_changelog_key_is_caught(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    (bundle / "configs" / "metadata.json").write_text('{"version": "0.2.0", "changelog": {"0.2.0": "b", "0.2.0": "c"}}')
    with pytest.raises(pb.PackagingError, match=r"duplicate keys \['0.2.0'\]"):
        pb.package_bundle(bundle, tmp_path / "dist")


def test_missing_license_or_model_card(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    (bundle / "LICENSE").unlink()
    with pytest.raises(pb.PackagingError, match="missing LICENSE"):
        pb.package_bundle(bundle, tmp_path / "dist")
    (bundle / "LICENSE").write_text("x")
    (bundle / "docs" / "README.md").unlink()
    with pytest.raises(pb.PackagingError, match="docs/README.md"):
        pb.package_bundle(bundle, tmp_path / "dist")


# -------------------------------------------------------------------------------------- archive content, reproducible


def test_archive_content_and_layout(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    result = pb.package_bundle(bundle, tmp_path / "dist")
    assert result.archive == tmp_path / "dist" / f"{NAME}_v0.1.0.zip"
    assert any("git check skipped" in n for n in result.notes), result.notes
    with zipfile.ZipFile(result.archive) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == packaged_names(), "sorted, one top folder, only configs/docs/scripts/LICENSE/model.pt/.ts"
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert (info.external_attr >> 16) == 0o100644
            assert zf.read(info) == (bundle / info.filename.split("/", 1)[1]).read_bytes()
    sha_line = (tmp_path / "dist" / f"{NAME}_v0.1.0.zip.sha256").read_text()
    assert sha_line == f"{hashlib.sha256(result.archive.read_bytes()).hexdigest()}  {NAME}_v0.1.0.zip\n"
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [f"{NAME}_v0.1.0.zip", f"{NAME}_v0.1.0.zip.sha256"]


def test_byte_reproducible(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    bundle = make_bundle(tmp_path / "b")
    first = pb.package_bundle(bundle, tmp_path / "one")
    # other modification times, permissions and creation order must not matter
    for i, path in enumerate(sorted(bundle.rglob("*"))):
        if path.is_file():
            os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
            path.chmod(0o755 if i % 2 else 0o600)
    copy = tmp_path / "copy"
    for rel in sorted((p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file()), reverse=True):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / rel, copy / rel)
    second = pb.package_bundle(copy, tmp_path / "two")
    assert first.archive.read_bytes() == second.archive.read_bytes()
    assert first.sha256 == second.sha256
    assert (tmp_path / "one" / f"{first.archive.name}.sha256").read_text() == (
        tmp_path / "two" / f"{second.archive.name}.sha256").read_text()
    # packaging again into the same folder is a no-op
    again = pb.package_bundle(bundle, tmp_path / "one")
    assert again.unchanged and again.sha256 == first.sha256
    # SOURCE_DATE_EPOCH sets the one timestamp (UTC)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    stamped = pb.package_bundle(bundle, tmp_path / "three")
    with zipfile.ZipFile(stamped.archive) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def test_shipped_weights_become_models_model_pt(tmp_path):
    """Without a trained models/model.pt, the shipped models/pretrained/model.pt is the archive's models/model.pt
    (where MONAI's load, ckpt_export and the Model Zoo's verify_bundle.py look), pinned under that path; beside a
    trained one it keeps its own path."""
    bundle = make_bundle(tmp_path / "b")
    (bundle / "models" / "model.ts").unlink()
    (bundle / "models" / "pretrained").mkdir()
    (bundle / "models" / "model.pt").rename(bundle / "models" / "pretrained" / "model.pt")
    pin(bundle)
    result = pb.package_bundle(bundle, tmp_path / "dist")
    assert [n for n in result.files if "/models/" in n] == [f"{NAME}/models/model.pt"]
    with zipfile.ZipFile(result.archive) as zf:
        assert zf.read(f"{NAME}/models/model.pt") == (bundle / "models" / "pretrained" / "model.pt").read_bytes()
        manifest = json.loads(zf.read(f"{NAME}/{pb.MANIFEST}"))
    pinned = json.loads((bundle / pb.MANIFEST).read_text())
    assert pinned["large_files"][0]["path"] == "models/pretrained/model.pt", "the bundle's manifest is not changed"
    assert manifest == {**pinned, "large_files": [{**pinned["large_files"][0], "path": "models/model.pt"}]}

    write_model(bundle / "models" / "model.pt", seed=3)  # trained here: it is the archive's model.pt
    set_version(bundle, "0.1.1", "retrained")
    pin(bundle)
    result = pb.package_bundle(bundle, tmp_path / "dist")
    assert [n for n in result.files if "/models/" in n] == [f"{NAME}/models/model.pt",
                                                            f"{NAME}/models/pretrained/model.pt"]
    with zipfile.ZipFile(result.archive) as zf:
        for info in zf.infolist():
            assert zf.read(info) == (bundle / info.filename.split("/", 1)[1]).read_bytes(), info.filename



def test_the_shipped_xnet_keeps_its_path(tmp_path):
    """The shipped X-Net ``models/pretrained/xnet.pt`` (``--shipped_model xnet``) is packaged and pinned at its own
    path beside the U-Net that becomes ``models/model.pt``; other files in ``models/pretrained/`` stay out."""
    bundle = make_bundle(tmp_path / "b")
    (bundle / "models" / "model.ts").unlink()
    (bundle / "models" / "pretrained").mkdir()
    (bundle / "models" / "model.pt").rename(bundle / "models" / "pretrained" / "model.pt")
    write_model(bundle / "models" / "pretrained" / "xnet.pt", seed=4)
    (bundle / "models" / "pretrained" / "notes.pt").write_bytes(b"not a shipped model")
    pin(bundle)
    assert [e["path"] for e in json.loads((bundle / pb.MANIFEST).read_text())["large_files"]] == [
        "models/pretrained/model.pt", "models/pretrained/xnet.pt"]
    result = pb.package_bundle(bundle, tmp_path / "dist")
    assert [n for n in result.files if "/models/" in n] == [f"{NAME}/models/model.pt",
                                                            f"{NAME}/models/pretrained/xnet.pt"]
    with zipfile.ZipFile(result.archive) as zf:
        assert zf.read(f"{NAME}/models/pretrained/xnet.pt") == (bundle / "models" / "pretrained" / "xnet.pt").read_bytes()
        manifest = json.loads(zf.read(f"{NAME}/{pb.MANIFEST}"))
    assert [e["path"] for e in manifest["large_files"]] == ["models/model.pt", "models/pretrained/xnet.pt"]


# --------------------------------------------------------------------------------------------- not-bumped detection


def test_release_record_catches_unbumped_version(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    dist = tmp_path / "dist"
    first = pb.package_bundle(bundle, dist)
    original = first.archive.read_bytes()
    (bundle / "docs" / "README.md").write_text("reworded")  # not in git: only the record can tell
    with pytest.raises(pb.PackagingError, match=r"already exists with different content.*version 0.1.0 was not bumped"):
        pb.package_bundle(bundle, dist)
    assert first.archive.read_bytes() == original, "the released archive must stay untouched"
    assert sorted(p.name for p in dist.iterdir()) == [f"{NAME}_v0.1.0.zip", f"{NAME}_v0.1.0.zip.sha256"]
    with pytest.raises(pb.PackagingError, match="not bumped"):
        pb.package_bundle(bundle, dist, check_only=True)
    set_version(bundle, "0.1.1", "retrained")
    bumped = pb.package_bundle(bundle, dist)
    assert bumped.archive.name == f"{NAME}_v0.1.1.zip" and first.archive.read_bytes() == original


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org", GIT_CONFIG_NOSYSTEM="1", HOME=str(cwd))
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def git_bundle(tmp_path):
    """A git repository holding a fake bundle in ``bundle/`` (models, data, ... ignored, as in this repo),
    committed at version 0.1.0, plus an output folder outside it."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    bundle = make_bundle(repo / "bundle")
    (repo / ".gitignore").write_text("__pycache__/\n*.pyc\n*.egg-info/\nbundle/data/\nbundle/eval/\nbundle/logs/\n"
                                     "bundle/outputs/\nbundle/runs/\nbundle/models/*.pt\nbundle/models/*.ts\n"
                                     "bundle/models/*.onnx\n.pytest_cache/\n")
    (repo / "tools.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "bundle 0.1.0")
    return repo, bundle, tmp_path / "dist"


def test_git_catches_unbumped_version(git_bundle):
    repo, bundle, dist = git_bundle
    result = pb.package_bundle(bundle, dist, check_only=True)
    assert any("compared with commit" in n for n in result.notes), result.notes

    # a change after the commit that set 0.1.0, uncommitted, then committed; a new file; a deleted file
    (bundle / "configs" / "inference.json").write_text('{"changed": true}')
    with pytest.raises(pb.PackagingError, match=r"version 0.1.0 was not bumped: 1 bundle file\(s\) changed since "
                                                r"the commit that set it \(configs/inference.json\)\. Bump 'version'"):
        pb.package_bundle(bundle, dist)
    git(repo, "commit", "-qam", "tweak inference")
    (bundle / "docs" / "new.md").write_text("new")
    (bundle / "scripts" / "networks" / "__init__.py").unlink()
    with pytest.raises(pb.PackagingError, match=r"3 bundle file\(s\).*configs/inference.json, docs/new.md, "
                                                r"scripts/networks/__init__.py"):
        pb.package_bundle(bundle, dist, check_only=True)
    assert not dist.exists(), "nothing written when a check fails"

    # a bump in progress (not committed yet) is accepted; so is the committed bump
    set_version(bundle, "0.2.0", "tweaks")
    result = pb.package_bundle(bundle, dist)
    assert any("not committed yet" in n for n in result.notes) and result.archive.name == f"{NAME}_v0.2.0.zip"
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "bundle 0.2.0")
    result = pb.package_bundle(bundle, dist)
    assert result.unchanged and any("compared with commit" in n for n in result.notes)

    # files that are not packaged do not count: ignored outputs, untracked caches, files outside the bundle
    for rel in ("data/new.png", "eval/metrics.json", "outputs/x_seg.png", "models/checkpoint_epoch=9.pt",
                "scripts/__pycache__/y.pyc", "notes.txt"):
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_text("more")
    (repo / "tools.py").write_text("x = 2\n")
    pb.package_bundle(bundle, dist, check_only=True)
    # the metadata itself counts once the version is committed
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["changelog"]["0.2.0"] = "tweaks, reworded"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(pb.PackagingError, match="configs/metadata.json"):
        pb.package_bundle(bundle, dist, check_only=True)
    # the escape hatch for local experiments skips git, not the release record
    assert pb.package_bundle(bundle, dist.parent / "scratch", check_only=True, git_check=False).notes == []
    with pytest.raises(pb.PackagingError, match="already exists with different content"):
        pb.package_bundle(bundle, dist, check_only=True, git_check=False)


def test_weights_pinned_by_version_from_any_clone(git_bundle):
    """The committed large_files.json pins model.pt's sha256 to the version: a fresh clone with other weights (and
    another --out) is refused; the same weights give the same archive; a version bump pins new weights."""
    repo, bundle, dist = git_bundle
    first = pb.package_bundle(bundle, dist)
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", str(repo), str(clone))
    assert not (clone / "bundle" / "models" / "model.pt").exists(), "weights are not in git"
    shutil.copy2(bundle / "models" / "model.ts", clone / "bundle" / "models" / "model.ts")
    write_model(clone / "bundle" / "models" / "model.pt", seed=1)  # retrained elsewhere
    with pytest.raises(pb.PackagingError, match=r"models/model.pt \(sha256 \w+\.\.\.\) is not the file version 0.1.0 "
                                                r"was packaged with .*Bump 'version'"):
        pb.package_bundle(clone / "bundle", repo.parent / "other_dist")
    shutil.copy2(bundle / "models" / "model.pt", clone / "bundle" / "models" / "model.pt")
    assert pb.package_bundle(clone / "bundle", repo.parent / "other_dist").sha256 == first.sha256

    write_model(clone / "bundle" / "models" / "model.pt", seed=1)
    set_version(clone / "bundle", "0.2.0", "retrained")
    result = pb.package_bundle(clone / "bundle", repo.parent / "other_dist")
    assert any("pinned models/model.pt" in n for n in result.notes)
    manifest = json.loads((clone / "bundle" / pb.MANIFEST).read_text())
    digest = hashlib.sha256((clone / "bundle" / "models" / "model.pt").read_bytes()).hexdigest()
    assert manifest["version"] == "0.2.0" and manifest["large_files"][0]["hash_val"] == digest

    # a version committed without pinned weights cannot take weights afterwards
    (clone / "bundle" / pb.MANIFEST).unlink()
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "0.2.0 without a manifest")
    with pytest.raises(pb.PackagingError, match="committed without pinned weights"):
        pb.package_bundle(clone / "bundle", repo.parent / "other_dist", check_only=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"with_info": False}, "records no model_info"),
    ({"class_names": ("a", "b", "c")}, r"does not fit the packaged configs \(class_names \['a', 'b', 'c'\] vs "
                                       r"metadata.json channel_def \['a', 'b'\]; out_channels 3"),
])
def test_weights_must_fit_the_configs(tmp_path, kwargs, message):
    bundle = make_bundle(tmp_path / "b")
    write_model(bundle / "models" / "model.pt", **kwargs)
    set_version(bundle, "0.1.1")
    with pytest.raises(pb.PackagingError, match=message):
        pb.package_bundle(bundle, tmp_path / "dist", check_only=True)


def test_cli(git_bundle):
    repo, bundle, dist = git_bundle

    def cli(*args):
        return subprocess.run([sys.executable, str(TOOL), "--bundle", str(bundle), "--out", str(dist), *args],
                              capture_output=True, text=True, timeout=120)

    proc = cli("--check")
    assert proc.returncode == 0 and "checks passed" in proc.stdout and not dist.exists(), proc.stderr
    proc = cli()
    assert proc.returncode == 0, proc.stderr
    archive = dist / f"{NAME}_v0.1.0.zip"
    assert str(archive) in proc.stdout and hashlib.sha256(archive.read_bytes()).hexdigest() in proc.stdout
    (bundle / "LICENSE").write_text("other licence")
    proc = cli()
    assert proc.returncode == 1 and proc.stderr.startswith("error: version 0.1.0 was not bumped"), proc.stderr
    proc = cli("--name", "Bad-Name")
    assert proc.returncode == 1 and "lower case letters" in proc.stderr


# -------------------------------------------------------------------------------------------------------- round trip


def tiny_bundle_copy(dest: Path) -> Path:
    """A copy of the real bundle (configs, scripts, docs, LICENSE) whose inference.json builds a tiny X-Net, with
    a "trained" models/model.pt and, in the folders a package must leave out, files that must stay out. The real
    bundle's weights and their manifest (large_files.json, which pins the shipped model) stay behind: the copy's
    package pins its own."""
    top_level_outputs = {"data", "eval", "logs", "outputs", "runs", "models", "large_files.json"}
    caches = shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc")

    def ignore(folder, names):
        skipped = set(caches(folder, names))
        return skipped | (top_level_outputs & set(names) if Path(folder) == BUNDLE else set())

    shutil.copytree(BUNDLE, dest, ignore=ignore)
    (dest / "models").mkdir()
    inference = dest / "configs" / "inference.json"
    config = json.loads(inference.read_text())
    config.update(features=[4, 8, 16], patch_size=[64, 64])
    inference.write_text(json.dumps(config, indent=4))
    for rel in ("data/secret.png", "eval/metrics.json", "logs/events.out.tfevents.0", "outputs/x_seg.png",
                "models/checkpoint_epoch=3.pt", "scripts/__pycache__/x.cpython-311.pyc"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text("must not be shared")
    return dest


def test_round_trip_package_download_load_infer(tmp_path):
    from monai.bundle import ConfigParser, ckpt_export, download, load

    source = tiny_bundle_copy(tmp_path / "src")
    parser = ConfigParser()
    parser.read_config(str(source / "configs" / "inference.json"))
    parser["bundle_root"] = str(source)  # no model there yet: the config's tiny X-Net (not the shipped model)
    net = parser.get_parsed_content("network_def")
    torch.manual_seed(1)
    with torch.no_grad():  # "training": weights and BatchNorm statistics that differ from a fresh network
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    from scripts.networks import ModelInfo

    info = ModelInfo(net, json.loads((source / "configs" / "metadata.json").read_text())["network_data_format"]
                     ["outputs"]["pred"]["channel_def"].values(), 255, [64, 64]).state_dict()
    torch.save({"model": trained, "model_info": info}, source / "models" / "model.pt")
    ckpt_export("network_def", filepath=str(source / "models" / "model.ts"),
                ckpt_file=str(source / "models" / "model.pt"), meta_file=str(source / "configs" / "metadata.json"),
                config_file=str(source / "configs" / "inference.json"), bundle_root=str(source))

    proc = subprocess.run([sys.executable, str(TOOL), "--bundle", str(source), "--out", str(tmp_path / "dist")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version = json.loads((source / "configs" / "metadata.json").read_text())["version"]
    archive = tmp_path / "dist" / f"{NAME}_v{version}.zip"
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert {n.split("/")[1] for n in names} == {"LICENSE", "configs", "docs", "scripts", "models", "large_files.json"}
    assert [n for n in names if "/models/" in n] == [f"{NAME}/models/model.pt", f"{NAME}/models/model.ts"]
    assert not [n for n in names if "__pycache__" in n or "must" in n]

    # share: download from a URL (file:// here) into a fresh folder; MONAI extracts <bundle_dir>/<name>/
    bundle_dir = tmp_path / "downloaded"
    download(name=NAME, url=archive.as_uri(), bundle_dir=str(bundle_dir), progress=False)
    extracted = bundle_dir / NAME
    sha_record = (tmp_path / "dist" / f"{archive.name}.sha256").read_text().split()[0]
    assert hashlib.sha256((bundle_dir / f"{NAME}.zip").read_bytes()).hexdigest() == sha_record
    files = sorted(p.relative_to(bundle_dir).as_posix() for p in extracted.rglob("*") if p.is_file())
    assert files == sorted(names)
    xnet = Path("scripts", "networks", "xnet.py")
    assert (extracted / xnet).read_bytes() == (BUNDLE / xnet).read_bytes()

    # load: the network of the bundle's inference.json with the trained weights; and the TorchScript module
    # key_in_ckpt: model.pt is {"model": ..., "model_info": ...} (from inside the extracted folder the network
    # holds the weights anyway: tests/test_trained_model_consumers.py)
    # (network_def#path: this test process imported the repository's scripts/, whose BUNDLE_ROOT, and so the config's
    # default model file, is the repository's bundle with its shipped model; a user's process imports the extracted one)
    loaded = load(NAME, bundle_dir=str(bundle_dir), workflow_type="inference", device="cpu", key_in_ckpt="model",
                  net_override={"path": str(extracted / "models" / "model.pt")})
    assert type(loaded).__name__ == "XNet"
    state = loaded.state_dict()
    assert state.keys() == trained.keys()
    for k, v in trained.items():
        assert torch.equal(state[k], v), k
    ts, meta, _ = load(NAME, bundle_dir=str(bundle_dir), load_ts_module=True, device="cpu")
    assert meta["version"] == version
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), loaded.eval()(x))

    # infer from inside the extracted bundle: its own scripts/ are imported (the working directory comes first on
    # sys.path), so bundle_root defaults to the extracted folder and outputs land in <extracted>/outputs
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a", (64, 64)), ("b", (70, 90))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(images / f"{name}.png")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--input", str(images), "--pictures", _cli_value(False), "--save_probabilities", _cli_value(False)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(cmd, cwd=extracted, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    for name, shape in (("a", (64, 64)), ("b", (70, 90))):
        seg = np.asarray(Image.open(extracted / "outputs" / f"{name}_seg.png"))
        assert seg.shape == shape and seg.dtype == np.uint8 and seg.max() < 5
    # the label map is the trained network's: the same inferer in-process on the loaded network gives the same map
    parser = ConfigParser()
    parser.read_config(str(extracted / "configs" / "inference.json"))
    inferer = parser.get_parsed_content("inferer")
    image = torch.from_numpy(np.asarray(Image.open(images / "b.png"), dtype=np.float32) / 255.0)
    with torch.no_grad():  # LoadImage reads a PNG as (width, height): transpose in, transpose back
        expected = inferer(image.T[None, None], loaded.eval()).argmax(1)[0].T.numpy()
    seg = np.asarray(Image.open(extracted / "outputs" / "b_seg.png"))
    assert (seg == expected).mean() > 0.999


def test_weights_url_lets_download_large_files_fetch_the_model(tmp_path):
    """``--weights-url``: the archive's large_files.json names where each model file is published (here a
    ``file://`` folder laid out like release assets), so a copy without the weights (a Model Zoo contribution) gets
    them back with MONAI's ``download_large_files``, checked against the pinned sha256; bad templates are refused."""
    from monai.bundle import download_large_files

    bundle = make_bundle(tmp_path / "b")
    (bundle / "models" / "model.ts").unlink()
    pin(bundle)
    releases = tmp_path / "releases"
    template = releases.as_uri() + "/v{version}/{name}_{file}"
    result = pb.package_bundle(bundle, tmp_path / "dist", weights_url=template)
    extracted = tmp_path / "x"
    with zipfile.ZipFile(result.archive) as zf:
        zf.extractall(extracted)
    root = extracted / NAME
    manifest = json.loads((root / pb.MANIFEST).read_text())
    url = f"{releases.as_uri()}/v0.1.0/{NAME}_model.pt"
    assert [(f["path"], f["url"]) for f in manifest["large_files"]] == [("models/model.pt", url)]
    published = releases / "v0.1.0" / f"{NAME}_model.pt"  # the release asset
    published.parent.mkdir(parents=True)
    (root / "models" / "model.pt").rename(published)
    download_large_files(bundle_path=str(root))
    assert (root / "models" / "model.pt").read_bytes() == (bundle / "models" / "model.pt").read_bytes()

    published.write_bytes(b"other weights")  # a url serving other bytes is refused by the pinned sha256
    (root / "models" / "model.pt").unlink()
    with pytest.raises(Exception, match="(?i)hash|md5|sha256|check"):
        download_large_files(bundle_path=str(root))
    assert pb.main(["--bundle", str(bundle), "--out", str(tmp_path / "dist"), "--check", "--no-git-check",
                    "--weights-url", template]) == 0
    for bad, message in (("https://example.org/{file}", "has no {version}"),
                         ("https://x/{version}/{weights}", "placeholder")):
        with pytest.raises(pb.PackagingError, match=re.escape(message)):
            pb.package_bundle(bundle, tmp_path / "dist2", weights_url=bad)
