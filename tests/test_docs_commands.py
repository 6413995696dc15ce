"""The documented commands stay honest: the fenced ``bash`` commands of README.md, the user manual, the experiments
record, the benchmarks' README and the measure page are extracted, every file they name must exist in the repository, and the cheap
ones of the manual run as written (``verify_metadata`` offline with the shipped schema; ``ckpt_export`` with a tiny
model as the only change).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle_runner import REPO

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated")

DOCS = [REPO / "README.md", REPO / "bundle" / "docs" / "README.md", REPO / "bundle" / "docs" / "experiments.md",
        REPO / "benchmarks" / "README.md"] + [REPO / "bundle" / "docs" / f"{page}.md" for page in
        ("measure", "finetune", "bioimageio", "dask", "volumes", "model_zoo")]
#: Programs a documented command may start with.
PROGRAMS = ("python", "python3", ".venv/bin/python", ".venv-bioimageio/bin/python", ".venv-bioimageio/bin/bioimageio", "bash", "source", "monailabel", "curl",
            "export", "cd", "torchrun", "sha256sum", "mkdir", "dask")
#: Repository files named in commands: configs, tools, schemas.
PATH = re.compile(r"(?<![\w/.])((?:bundle/configs|tools|benchmarks)/[\w./-]+\.(?:json|py|sh))")


def fenced_commands(path: Path) -> list[tuple[str, str]]:
    """``(section heading, command)`` for each command of the ``bash`` fences of a Markdown file, continuation
    lines joined and comments dropped."""
    commands, heading, block = [], "", None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if block is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif block is None and stripped.startswith("```bash"):
            block = []
        elif block is not None and stripped.startswith("```"):
            text = "\n".join(block).replace("\\\n", " ")
            for cmd in text.splitlines():
                cmd = re.sub(r"\s+#\s.*$", "", cmd).strip()
                if cmd and not cmd.startswith("#"):
                    commands.append((heading, " ".join(cmd.split())))
            block = None
        elif block is not None:
            block.append(stripped)
    return commands


def command(doc: Path, starts: str) -> str:
    found = [c for _, c in fenced_commands(doc) if c.startswith(starts)]
    assert len(found) == 1, f"expected one documented command starting with {starts!r} in {doc}, got {found}"
    return found[0]


def test_documented_commands_name_existing_files():
    commands = [c for doc in DOCS for _, c in fenced_commands(doc)]
    assert len(commands) > 30, "the fenced commands were not found"
    for cmd in commands:
        program = next(w for w in cmd.split() if not re.match(r"^[A-Z_]+=", w))  # after VAR=value settings
        assert program in PROGRAMS, cmd
        for rel in PATH.findall(cmd):
            assert (REPO / rel).is_file(), f"{rel} (in `{cmd}`) does not exist"
    assert not [c for c in commands if "../shared" in c], "documented commands must work from a clone"


def test_verify_metadata_command_runs_offline():
    """The manual's command as written: the shipped schema and its md5, nothing downloaded."""
    cmd = command(DOCS[1], "python -m monai.bundle verify_metadata")
    proc = subprocess.run([sys.executable, *shlex.split(cmd)[1:]], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_ckpt_export_command_with_a_model_of_another_width(tmp_path):
    """The manual's ``ckpt_export`` command, only with the model files in a temporary bundle root (a 4..16 X-Net
    with model_info; the configs say 32..512): no width override, no key_in_ckpt."""
    from scripts.data import CLASS_NAMES
    from scripts.networks import ModelInfo, XNet

    net = XNet(2, 1, 5, [4, 8, 16], batch_norm=True, skip="both").eval()
    (tmp_path / "models").mkdir()
    torch.save({"model": net.state_dict(), "model_info": ModelInfo(net, CLASS_NAMES, 255, [64, 64]).state_dict()},
               tmp_path / "models" / "model.pt")
    cmd = command(DOCS[1], "python -m monai.bundle ckpt_export").replace("bundle/models/", f"{tmp_path}/models/")
    proc = subprocess.run([sys.executable, *shlex.split(cmd)[1:], "--bundle_root", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "models" / "model.ts"))(x), net(x))


def test_label_efficiency_command_is_the_drivers(tmp_path):
    """finetune.md's label-efficiency command parses with benchmarks/label_efficiency.py's options (its datalist
    replaced by a prepared-looking one beside a classes.json): budgets, epochs and the shipped model as written."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_label_efficiency", REPO / "benchmarks" / "label_efficiency.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    words = shlex.split(command(REPO / "bundle" / "docs" / "finetune.md", "python benchmarks/label_efficiency.py"))
    assert words[1] == "benchmarks/label_efficiency.py"
    (tmp_path / "datalist.json").write_text("{}")
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [{"index": 1, "name": "membrane"},
                                                                   {"index": 0, "name": "rest"}]}))
    argv = words[2:]
    argv[argv.index("--datalist") + 1] = str(tmp_path / "datalist.json")
    args = driver.parse_args(argv)
    assert args.budgets == ["1", "2", "4", "all"] and args.epochs == 40 and args.class_names == ["rest", "membrane"]
    assert Path(args.finetune_from) == REPO / "bundle" / "models" / "pretrained" / "model.pt"
