"""Package the bundle as a versioned, byte-reproducible zip for sharing: ``<name>_v<version>.zip`` plus its
``.sha256``.

Usage (from the repository root)::

    python tools/package_bundle.py                      # bundle/ -> dist/microscopy_cell_segmentation_v<version>.zip
    python tools/package_bundle.py --bundle bundle --out dist --name microscopy_cell_segmentation
    python tools/package_bundle.py --check              # run every check, write nothing
    python tools/package_bundle.py --weights-url "https://github.com/OWNER/REPO/releases/download/v{version}/{file}"

The archive follows the MONAI bundle layout, everything under one top folder named after the bundle, so that
``monai.bundle.download(name=<name>, url=...)`` extracts it to ``<bundle_dir>/<name>/``::

    <name>/LICENSE
    <name>/configs/...          every file (metadata.json, train/evaluate/inference.json, experiments/, recipes/, ...)
    <name>/docs/...             every file
    <name>/scripts/...          the Python package, without __pycache__/*.pyc
    <name>/models/model.pt      the bundle's model, where every MONAI entry point looks for it (``load``,
                                ``ckpt_export``, the Model Zoo's ``verify_bundle.py``): models/model.pt (.ts) when
                                the bundle has one (trained here), else the shipped weights models/pretrained/model.pt
                                (.ts); no resumable checkpoints
    <name>/models/pretrained/model.pt   the shipped weights, only beside a trained models/model.pt
    <name>/models/pretrained/xnet.pt    the shipped X-Net (``--shipped_model xnet``), always there

The archive's ``large_files.json`` pins the model files under their archive paths. Their ``url`` is empty (the
weights travel inside the archive and the repository; MONAI's ``download_large_files`` only checks their sha256),
unless ``--weights-url TEMPLATE`` gives where each file is published, e.g. as release assets:
``https://github.com/OWNER/REPO/releases/download/v{version}/{file}`` (``{version}``, required, the bundle's version;
``{name}`` the bundle id; ``{path}`` the archive path ``models/model.pt``; ``{file}`` its file name). A copy without
the model files (a Model Zoo contribution, whose files must stay under 1 MB) then gets them with
``python -m monai.bundle download_large_files --bundle_path <bundle>``, checked against the pinned sha256.

Nothing else: no ``data/``, ``eval/``, ``logs/``, ``outputs/``, ``runs/``, egg-info, hidden files or caches.

Reproducible: the same files give the same bytes (hence the same sha256): entries sorted by path, one fixed
timestamp (1980-01-01 00:00, or ``SOURCE_DATE_EPOCH`` when set), fixed permissions (0644), deflate level 9 (same
bytes for the same zlib; a different zlib build may compress differently, the extracted files are the same).

Checks, each failing with a message that names the fix:

- ``configs/metadata.json``: ``version`` is a semantic version (``MAJOR.MINOR.PATCH[-pre]``) and a key of
  ``changelog``; the changelog keys are semantic versions, unique, sorted newest first, and the newest is
  ``version``; ``LICENSE`` and ``docs/README.md`` exist (the MONAI bundle format requires them).
- version not bumped, two ways:
  1. release record: ``<out>/<name>_v<version>.zip`` already exists with other content;
  2. git (when the bundle is in a git work tree and ``configs/metadata.json`` is tracked): a packaged file changed
     (committed, staged, unstaged, or new and not ignored) since the commit that set the current ``version``.
     A ``version`` edited in the working tree but not committed yet counts as a bump in progress. Outside git
     (no git, not a work tree, metadata not tracked) this check is skipped with a note.

Weights pinned by the version (``large_files.json`` at the bundle root, MONAI's large-files format plus the
version it belongs to)::

    {"version": "0.4.0",
     "large_files": [{"path": "models/model.pt", "url": "", "hash_val": "<sha256>", "hash_type": "sha256"}]}

- the manifest's ``version`` is the current one: every packaged model file must have exactly its recorded sha256
  (and every recorded file must be there), otherwise packaging is refused. The manifest is committed with the
  version, so a fresh clone (or another ``--out``) holding other weights is refused too;
- the manifest is absent or belongs to an older version, and model files are present: when the version is a bump
  in progress (edited in the working tree, not committed yet) or the bundle is outside git, the tool writes the
  manifest for the current version (commit it with the version); when the version is already committed without
  pinning weights, it refuses (another clone could package other weights under the same version).
- ``python -m monai.bundle download_large_files --bundle_path <extracted bundle>`` checks the hash of an
  extracted ``models/model.pt`` against the manifest (it downloads nothing when the file is there).

Model files must fit the packaged configs: ``models/model.pt`` carries ``model_info`` (the network that built
it, its class names and intensity scaling) whose network is one of ``scripts/networks``, whose output channels
and class names equal ``configs/metadata.json``'s output ``channel_def``, whose input channels equal its input
``num_channels``, and whose ``intensity_max`` equals ``configs/inference.json``'s. Reading ``model.pt`` needs
``torch`` (imported only then); everything else is standard library only, so the checks run in a second.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = [
    "DEFAULT_NAME",
    "MANIFEST",
    "check_model_fits",
    "check_weights_pinned",
    "make_manifest",
    "read_manifest",
    "PackagingError",
    "PackageResult",
    "parse_version",
    "check_metadata",
    "is_packaged",
    "list_bundle_files",
    "git_unbumped_changes",
    "archive_contents",
    "fill_weights_url",
    "build_archive",
    "package_bundle",
    "main",
]

#: Bundle id: the archive's top folder and file-name stem (MONAI model-zoo style, lower case with underscores).
DEFAULT_NAME = "microscopy_cell_segmentation"

#: Top-level folders packaged whole (minus caches), top-level files packaged when present, and model files.
PACKAGED_DIRS = ("configs", "docs", "scripts")
ROOT_FILES = ("LICENSE", "large_files.yml", "large_files.yaml", "large_files.json")
MODEL_FILES = ("model.pt", "model.ts")
#: The shipped models besides the U-Net's ``models/pretrained/model.pt`` (``scripts.networks.SHIPPED_MODELS``).
SHIPPED_EXTRA = ("xnet.pt",)
#: Files the MONAI bundle format requires besides configs/metadata.json.
REQUIRED_FILES = ("LICENSE", "docs/README.md")

#: Path parts never packaged (caches, build metadata) and file suffixes never packaged.
EXCLUDED_PARTS = ("__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".mypy_cache")
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")

#: The weights manifest (MONAI's large-files format plus ``version``), written and checked by this tool.
MANIFEST = "large_files.json"

#: Zip timestamp when ``SOURCE_DATE_EPOCH`` is not set (the earliest a zip can hold).
DEFAULT_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PackagingError(Exception):
    """A check failed; the message says what is wrong and how to fix it."""


@dataclass
class PackageResult:
    """What :func:`package_bundle` did.

    Attributes:
        archive: path of ``<name>_v<version>.zip`` (not written when ``check_only``).
        sha256: hex digest of the archive bytes.
        files: archive member names, in archive order.
        unchanged: the archive already existed with exactly these bytes.
        notes: remarks for the user (e.g. a skipped git check).
    """

    archive: Path
    sha256: str
    files: list[str]
    unchanged: bool = False
    notes: list[str] = field(default_factory=list)


def parse_version(text: str) -> tuple:
    """Sort key of a semantic version (https://semver.org): ``"1.2.3-rc.1" < "1.2.3" < "1.10.0"``.

    Raises:
        ValueError: when ``text`` is not ``MAJOR.MINOR.PATCH`` with an optional ``-prerelease`` / ``+build``.
    """
    m = _SEMVER.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a semantic version MAJOR.MINOR.PATCH (e.g. '0.3.0').")
    core = tuple(int(g) for g in m.group(1, 2, 3))
    if m.group(4) is None:
        return core + (1, ())  # a release sorts after all of its pre-releases
    # numeric identifiers sort before alphanumeric ones, numerically among themselves
    pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.group(4).split("."))
    return core + (0, pre)


def _load_json_no_duplicates(path: Path) -> dict:
    def pairs(items):
        keys = [k for k, _ in items]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise PackagingError(
                f"{path}: duplicate keys {dup}; each key (e.g. each changelog version) must appear once."
            )
        return dict(items)

    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=pairs)
    except FileNotFoundError:
        raise PackagingError(f"{path} not found: is --bundle the folder holding configs/metadata.json?") from None
    except json.JSONDecodeError as e:
        raise PackagingError(f"{path} is not valid JSON: {e}") from None


def check_metadata(metadata: dict, source: str = "configs/metadata.json") -> str:
    """Check ``version`` against ``changelog`` and return the version.

    Rules: ``version`` is a semantic version; ``changelog`` is a non-empty dict whose keys are semantic versions
    sorted newest first; the newest key is ``version`` and its entry is a non-empty description.

    Raises:
        PackagingError: naming the rule broken and the fix.
    """
    version = metadata.get("version")
    if version is None:
        raise PackagingError(f"{source}: no 'version'; add e.g. \"version\": \"0.1.0\" and a matching changelog entry.")
    try:
        parse_version(version)
    except ValueError as e:
        raise PackagingError(f"{source}: 'version' {e}") from None
    changelog = metadata.get("changelog")
    if not isinstance(changelog, dict) or not changelog:
        raise PackagingError(
            f"{source}: 'changelog' must be a non-empty object {{\"<version>\": \"<what changed>\", ...}}, newest "
            f"first; add \"{version}\" to it."
        )
    keys = list(changelog)
    for k in keys:
        try:
            parse_version(k)
        except ValueError as e:
            raise PackagingError(f"{source}: changelog key {e}") from None
    newest_first = sorted(keys, key=parse_version, reverse=True)
    if keys != newest_first:
        raise PackagingError(
            f"{source}: changelog keys must be sorted newest first (semantic version order): found {keys}, "
            f"expected {newest_first}. Reorder the changelog entries."
        )
    if version not in changelog:
        raise PackagingError(
            f"{source}: version {version} has no changelog entry; add \"{version}\": \"<what changed>\" at the top "
            "of 'changelog'."
        )
    if keys[0] != version:
        raise PackagingError(
            f"{source}: 'version' is {version} but the newest changelog entry is {keys[0]}; set 'version' to "
            f"{keys[0]} (or remove the entries newer than {version})."
        )
    if not isinstance(changelog[version], str) or not changelog[version].strip():
        raise PackagingError(f"{source}: the changelog entry of {version} is empty; say what changed.")
    return version


def is_packaged(relpath: str) -> bool:
    """Whether a file at ``relpath`` (relative to the bundle root, ``/``-separated) belongs in the archive."""
    parts = PurePosixPath(relpath).parts
    if not parts or any(p.startswith(".") for p in parts):
        return False
    if any(p in EXCLUDED_PARTS or p.endswith(EXCLUDED_SUFFIXES) for p in parts):
        return False
    if len(parts) == 1:
        return parts[0] in ROOT_FILES
    if parts[0] == "models":  # models/model.pt (trained here), models/pretrained/{model,xnet}.pt (the shipped weights)
        if len(parts) == 3 and parts[1] == "pretrained":
            return parts[-1] in MODEL_FILES + SHIPPED_EXTRA
        return len(parts) == 2 and parts[-1] in MODEL_FILES
    return parts[0] in PACKAGED_DIRS


def list_bundle_files(bundle: Path) -> list[str]:
    """The bundle's packaged files (relative ``/``-separated paths, sorted); symbolic links to folders are not
    followed."""
    files = []
    for root, dirs, names in os.walk(bundle):
        rel_root = Path(root).relative_to(bundle)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in EXCLUDED_PARTS]
        for n in names:
            rel = (rel_root / n).as_posix()
            if is_packaged(rel) and (Path(root) / n).is_file():
                files.append(rel)
    return sorted(files)


def _git(bundle: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(bundle), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, ["git", *args], proc.stdout, proc.stderr)
    return proc.stdout


def _git_version(bundle: Path, rev: str, meta_rel: str) -> str | None:
    try:
        return json.loads(_git(bundle, "show", f"{rev}:./{meta_rel}")).get("version")
    except (subprocess.CalledProcessError, json.JSONDecodeError, AttributeError):
        return None


def git_unbumped_changes(bundle: Path, version: str, meta_rel: str = "configs/metadata.json") -> tuple[list[str], str]:
    """Packaged files changed since the commit that set ``version`` in the bundle's metadata.

    Returns:
        ``(changed, note)``: ``changed`` lists bundle-relative paths (empty when nothing changed, when the
        version in the working tree differs from the committed one, or when the check cannot run); ``note``
        says which commit was compared against, or why the check was skipped.
    """
    bundle = Path(bundle)
    try:
        if _git(bundle, "rev-parse", "--is-inside-work-tree").strip() != "true":
            return [], "git check skipped: the bundle is not in a git work tree."
        _git(bundle, "ls-files", "--error-unmatch", "--", meta_rel)
    except FileNotFoundError:
        return [], "git check skipped: git is not installed."
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return [], f"git check skipped: the bundle is not in a git work tree or {meta_rel} is not committed."
    try:
        if _git_version(bundle, "HEAD", meta_rel) != version:
            return [], f"git check: version {version} is not committed yet (a bump in progress)."
        intro = None
        for commit in _git(bundle, "log", "--format=%H", "--", meta_rel).split():
            if _git_version(bundle, commit, meta_rel) != version:
                break
            intro = commit
        if intro is None:  # unreachable when HEAD holds the version; keep the check safe anyway
            return [], f"git check skipped: no commit found that sets version {version}."
        # -z: paths verbatim (no quoting of unusual characters), NUL-separated
        changed = set(_git(bundle, "diff", "-z", "--name-only", "--relative", intro, "--", ".").split("\0"))
        changed |= set(_git(bundle, "ls-files", "-z", "--others", "--exclude-standard", "--", ".").split("\0"))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        return [], f"git check skipped: git failed ({e})."
    note = f"git check: compared with commit {intro[:12]}, which set version {version}."
    return sorted(p for p in changed if is_packaged(p)), note


def read_manifest(bundle: Path) -> dict | None:
    """The bundle's weights manifest (``large_files.json``), or ``None`` when there is none.

    Raises:
        PackagingError: when it is not ``{"version": ..., "large_files": [{"path", "hash_val", ...}, ...]}``.
    """
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        return None
    manifest = _load_json_no_duplicates(path)
    files = manifest.get("large_files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and "path" in f and "hash_val" in f for f in files):
        raise PackagingError(
            f"{path}: expected {{\"version\": ..., \"large_files\": [{{\"path\": ..., \"hash_val\": ..., "
            f"\"hash_type\": \"sha256\"}}, ...]}}; fix it or delete it and package again from the version bump."
        )
    return manifest


def make_manifest(bundle: Path, version: str, weights: list[str]) -> dict:
    """The manifest pinning ``weights`` (bundle-relative paths) to ``version``."""
    entries = [{"path": rel, "url": "", "hash_val": _sha256_file(Path(bundle) / rel), "hash_type": "sha256"}
               for rel in sorted(weights)]
    return {"_desc_": "written by tools/package_bundle.py: the model files this version ships, by sha256 "
                      "(`python -m monai.bundle download_large_files` checks them in an extracted bundle and fetches "
                      "a missing one from its url, set by package_bundle.py --weights-url)",
            "version": version, "large_files": entries}


def check_weights_pinned(bundle: Path, version: str, weights: list[str], version_committed: bool | None) -> dict | None:
    """Check the model files against the manifest; return a new manifest to write, or ``None`` (nothing to write).

    Args:
        version_committed: whether git holds ``version`` in the last commit already (``None``: not in git).

    Raises:
        PackagingError: other weights than the version pinned, or weights under a committed version that pins none.
    """
    manifest = read_manifest(bundle)
    if manifest is not None and manifest.get("version") == version:
        pinned = {f["path"]: str(f["hash_val"]).lower() for f in manifest["large_files"]}
        for rel in sorted(set(pinned) | set(weights)):
            if rel not in weights:
                raise PackagingError(
                    f"version {version} ships {rel} ({MANIFEST}) but {bundle / rel} is missing: restore the file "
                    "that version was packaged with (sha256 " + pinned[rel][:12] + "...), or bump 'version'."
                )
            digest = _sha256_file(bundle / rel)
            if rel not in pinned or digest != pinned[rel]:
                was = f"sha256 {pinned[rel][:12]}..." if rel in pinned else "no such file"
                raise PackagingError(
                    f"{rel} (sha256 {digest[:12]}...) is not the file version {version} was packaged with ({was}, "
                    f"{MANIFEST}): other weights need a new version. Bump 'version' in configs/metadata.json and add "
                    "a changelog entry (the tool then pins the new weights), or restore the pinned file."
                )
        return None
    if not weights:
        return None
    if version_committed:
        raise PackagingError(
            f"version {version} is committed without pinned weights ({MANIFEST} "
            + ("absent" if manifest is None else f"is for version {manifest.get('version')}")
            + f"), so {', '.join(weights)} could differ between clones. Bump 'version' in configs/metadata.json and "
            "add a changelog entry; packaging then pins these weights (commit the manifest with the version)."
        )
    return make_manifest(bundle, version, weights)


def _version_committed(bundle: Path, version: str, meta_rel: str = "configs/metadata.json") -> bool | None:
    """Whether the last commit's metadata holds ``version`` (``None`` outside git or when metadata is untracked)."""
    try:
        if _git(bundle, "rev-parse", "--is-inside-work-tree").strip() != "true":
            return None
        _git(bundle, "ls-files", "--error-unmatch", "--", meta_rel)
    except (FileNotFoundError, subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return None
    return _git_version(bundle, "HEAD", meta_rel) == version


def check_model_fits(bundle: Path, rel: str = "models/model.pt") -> None:
    """Check that ``model.pt`` carries ``model_info`` that fits the packaged configs (see the module docstring).

    Raises:
        PackagingError: naming the mismatch and the fix.
    """
    path = Path(bundle) / rel
    if not path.is_file():
        return
    try:
        import torch
    except ImportError:
        raise PackagingError(f"{rel} is packaged: install torch so that its model_info can be checked.") from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise PackagingError(f"{path} cannot be read as a checkpoint ({type(e).__name__}: {e}).") from None
    info = ckpt.get("model_info") if isinstance(ckpt, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("network"), dict) or not isinstance(ckpt.get("model"), dict):
        raise PackagingError(
            f"{rel} records no model_info (the network, class names and intensity scaling it was trained with): "
            "package a model.pt written by this bundle's train.json ({\"model\": ..., \"model_info\": ...}), so "
            "that every consumer of the archive builds the right network."
        )
    network = info["network"]
    meta = _load_json_no_duplicates(Path(bundle) / "configs" / "metadata.json")
    problems = []
    target = str(network.get("_target_", ""))
    module_dir = Path(bundle) / "scripts" / "networks"
    if not target.startswith("scripts.networks.") or not module_dir.is_dir():
        problems.append(f"network {target!r} is not one of the packaged scripts/networks")
    fmt = meta.get("network_data_format", {})
    out = next(iter(fmt.get("outputs", {}).values()), {})
    inp = next(iter(fmt.get("inputs", {}).values()), {})
    names = [str(v) for _, v in sorted(out.get("channel_def", {}).items(), key=lambda kv: int(kv[0]))]
    if info.get("class_names") is not None and list(info["class_names"]) != names:
        problems.append(f"class_names {list(info['class_names'])} vs metadata.json channel_def {names}")
    if network.get("out_channels") != out.get("num_channels"):
        problems.append(f"out_channels {network.get('out_channels')} vs metadata.json outputs num_channels "
                        f"{out.get('num_channels')}")
    if network.get("in_channels") != inp.get("num_channels"):
        problems.append(f"in_channels {network.get('in_channels')} vs metadata.json inputs num_channels "
                        f"{inp.get('num_channels')}")
    inference = Path(bundle) / "configs" / "inference.json"
    if inference.is_file() and info.get("intensity_max") is not None:
        config_max = _load_json_no_duplicates(inference).get("intensity_max")
        if isinstance(config_max, (int, float)) and float(config_max) != float(info["intensity_max"]):
            problems.append(f"intensity_max {info['intensity_max']} vs inference.json {config_max}")
    if problems:
        raise PackagingError(
            f"{rel} does not fit the packaged configs ({'; '.join(problems)}): package the model trained for these "
            "configs, or update configs/metadata.json (network_data_format) and inference.json to the model's."
        )


def _zip_date_time() -> tuple:
    """The archive's one timestamp: ``SOURCE_DATE_EPOCH`` (UTC) when set, clamped to what a zip can hold, else
    1980-01-01 00:00."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return DEFAULT_DATE_TIME
    try:
        t = tuple(time.gmtime(int(epoch))[:6])
    except (ValueError, OverflowError, OSError):
        raise PackagingError(f"SOURCE_DATE_EPOCH={epoch!r} is not a usable number of seconds since 1970.") from None
    return min(max(t, DEFAULT_DATE_TIME), (2107, 12, 31, 23, 59, 58))


def fill_weights_url(template: str, version: str, name: str, path: str) -> str:
    """``template`` (see the module docstring) filled in for one model file.

    Raises:
        PackagingError: no ``{version}`` in it (a url must not serve another version's weights), or an unknown
            placeholder.
    """
    if "{version}" not in template:
        raise PackagingError(
            f"--weights-url {template!r} has no {{version}}: each version's weights need their own url (e.g. "
            "https://github.com/OWNER/REPO/releases/download/v{version}/{file})."
        )
    try:
        return template.format(version=version, name=name, path=path, file=PurePosixPath(path).name)
    except (KeyError, IndexError, ValueError) as e:
        raise PackagingError(
            f"--weights-url {template!r}: {e!r} is not a placeholder; use {{version}}, {{name}}, {{path}}, {{file}}."
        ) from None


def archive_contents(bundle: Path, files: list[str], url_template: str | None = None,
                     name: str = DEFAULT_NAME) -> dict[str, bytes]:
    """The archive's files (archive path under the top folder -> bytes): ``files`` (bundle-relative) as they are,
    except that the shipped weights ``models/pretrained/model.pt`` (.ts) become ``models/model.pt`` (.ts) when the
    bundle has no trained one (the Model Zoo layout, see the module docstring), and ``large_files.json`` then pins
    them under that path; with ``url_template`` (:func:`fill_weights_url`) its entries get their ``url``."""
    moved = {f"models/pretrained/{m}": f"models/{m}" for m in MODEL_FILES
             if f"models/pretrained/{m}" in files and f"models/{m}" not in files}
    contents = {moved.get(rel, rel): (bundle / rel).read_bytes() for rel in files}
    if (moved or url_template) and MANIFEST in contents:
        manifest = json.loads(contents[MANIFEST])
        for entry in manifest.get("large_files", []):
            entry["path"] = moved.get(entry["path"], entry["path"])
            if url_template:
                entry["url"] = fill_weights_url(url_template, str(manifest.get("version")), name, entry["path"])
        contents[MANIFEST] = (json.dumps(manifest, indent=4) + "\n").encode("utf-8")
    return contents


def build_archive(name: str, contents: dict[str, bytes], stream) -> list[str]:
    """Write the zip of ``contents`` (:func:`archive_contents`) under the top folder ``name`` to the binary
    ``stream``; return the member names."""
    date_time = _zip_date_time()
    members = []
    with zipfile.ZipFile(stream, "w") as zf:
        for rel in sorted(contents):
            info = zipfile.ZipInfo(f"{name}/{rel}", date_time=date_time)
            info.create_system = 3  # unix, so that external_attr holds the permission bits
            info.external_attr = (0o100000 | FILE_MODE) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, contents[rel], compresslevel=9)
            members.append(info.filename)
    return members


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_bundle(
    bundle: str | os.PathLike = "bundle",
    out: str | os.PathLike = "dist",
    name: str = DEFAULT_NAME,
    check_only: bool = False,
    git_check: bool = True,
    weights_url: str | None = None,
) -> PackageResult:
    """Check the bundle and write ``<out>/<name>_v<version>.zip`` and ``<out>/<name>_v<version>.zip.sha256``.

    Args:
        bundle: bundle root (holding ``configs/metadata.json``).
        out: output folder (created when missing); also the release record the not-bumped check reads.
        name: bundle id (lower case letters, digits, underscores).
        check_only: run every check but write nothing.
        git_check: run the git not-bumped check (skipped anyway outside a git work tree).
        weights_url: where the model files are published (a template, see :func:`fill_weights_url`), written into the
            archive's ``large_files.json``; ``None``: no url.

    Raises:
        PackagingError: a check failed; the message names the fix.
    """
    bundle, out = Path(bundle), Path(out)
    if not _NAME.match(name):
        raise PackagingError(
            f"bundle name {name!r}: use lower case letters, digits and underscores, starting with a letter."
        )
    if not bundle.is_dir():
        raise PackagingError(f"{bundle} is not a folder; pass --bundle <bundle root holding configs/metadata.json>.")
    version = check_metadata(_load_json_no_duplicates(bundle / "configs" / "metadata.json"))
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    if missing:
        raise PackagingError(
            f"{bundle}: missing {', '.join(missing)}; a MONAI bundle needs a LICENSE file at its root and a "
            "docs/README.md (the model card). Add them and package again."
        )
    if weights_url is not None:
        fill_weights_url(weights_url, version, name, "models/model.pt")  # a bad template refused before anything
    notes = []
    if git_check:
        changed, note = git_unbumped_changes(bundle, version)
        notes.append(note)
        if changed:
            shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
            raise PackagingError(
                f"version {version} was not bumped: {len(changed)} bundle file(s) changed since the commit that set "
                f"it ({shown}). Bump 'version' in configs/metadata.json and add a changelog entry for it on top; "
                "then package again."
            )

    files = list_bundle_files(bundle)
    weights = [f for f in files if f.startswith("models/")]
    for rel in ("models/model.pt", "models/pretrained/model.pt", *(f"models/pretrained/{m}" for m in SHIPPED_EXTRA)):
        check_model_fits(bundle, rel)
    new_manifest = check_weights_pinned(bundle, version, weights, _version_committed(bundle, version) if git_check else None)
    if new_manifest is not None:
        notes.append(f"{MANIFEST}: pinned {', '.join(weights)} to version {version}" + (
            " (would write it)" if check_only else "; commit it together with the version"))
        if not check_only:
            (bundle / MANIFEST).write_text(json.dumps(new_manifest, indent=4) + "\n", encoding="utf-8")
            files = list_bundle_files(bundle)
    archive = out / f"{name}_v{version}.zip"
    contents = archive_contents(bundle, files, weights_url, name)
    if check_only:
        buffer = io.BytesIO()
        members = build_archive(name, contents, buffer)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    else:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{archive.name}.tmp"
        try:
            with open(tmp, "wb") as f:
                members = build_archive(name, contents, f)
            digest = _sha256_file(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    unchanged = archive.exists()
    if unchanged:
        old = _sha256_file(archive)
        if old != digest:
            if not check_only:
                tmp.unlink()
            raise PackagingError(
                f"{archive} already exists with different content (sha256 {old[:12]}... vs {digest[:12]}... now): "
                f"the bundle changed but version {version} was not bumped. Bump 'version' in configs/metadata.json "
                "and add a changelog entry for it on top (or delete the old archive if it was never shared)."
            )
    if not check_only:
        os.replace(tmp, archive)
        archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n", encoding="utf-8")
    return PackageResult(archive=archive, sha256=digest, files=members, unchanged=unchanged, notes=notes)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 1 a check failed)."""
    parser = argparse.ArgumentParser(
        description="Package the MONAI bundle as a reproducible <name>_v<version>.zip with a .sha256 beside it.",
    )
    parser.add_argument("--bundle", default="bundle", help="bundle root with configs/metadata.json (default: bundle)")
    parser.add_argument("--out", default="dist", help="output folder, also the release record (default: dist)")
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"bundle id: archive top folder and name stem (default: {DEFAULT_NAME})"
    )
    parser.add_argument("--check", action="store_true", help="run every check, write nothing")
    parser.add_argument(
        "--weights-url", default=None, metavar="TEMPLATE",
        help="where the model files are published, for the archive's large_files.json, e.g. "
             "'https://github.com/OWNER/REPO/releases/download/v{version}/{file}' ({version} {name} {path} {file})",
    )
    parser.add_argument(
        "--no-git-check", action="store_true",
        help="skip the git not-bumped check (local experiments only: never share an archive made this way)",
    )
    args = parser.parse_args(argv)
    try:
        result = package_bundle(
            args.bundle, args.out, args.name, check_only=args.check, git_check=not args.no_git_check,
            weights_url=args.weights_url,
        )
    except PackagingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(note)
    if args.check:
        print(f"checks passed: would write {result.archive} ({len(result.files)} files, sha256 {result.sha256})")
    else:
        state = "unchanged, already packaged" if result.unchanged else f"{len(result.files)} files"
        print(f"{result.archive} ({state})\nsha256 {result.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
