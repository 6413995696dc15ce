"""Command-line overrides that name no setting are refused before anything runs ("did you mean --input?").

MONAI's ``python -m monai.bundle run ... --key value`` adds a key it does not know instead of refusing it, so a typo
(``--inputt foo``) silently runs the defaults. :func:`check_overrides` reads the overrides from the command line,
loads the config files it names and refuses, in one message, every override whose path does not exist there:
every part of ``a#b#c`` must exist, except the last part of a component's arguments (a dict with ``_target_``, whose
new keys are new constructor arguments). ``_meta_`` keys and ``run``'s own arguments are not checked. It does
nothing when the process is not MONAI's bundle command line (tests, MONAI Label, ``ConfigWorkflow`` in Python).
"""

from __future__ import annotations

import ast
import difflib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["check_overrides", "cli_overrides", "overridden", "unknown_overrides"]

#: ``monai.bundle run``'s own arguments (not config keys).
RUN_ARGUMENTS = frozenset(
    {
        "run_id",
        "init_id",
        "final_id",
        "meta_file",
        "config_file",
        "logging_file",
        "tracking",
        "args_file",
        "workflow_type",
        "workflow_name",
    }
)


def cli_overrides(argv: Sequence[str]) -> dict[str, str]:
    """``{key: value}`` of the ``--key value`` / ``--key=value`` pairs in ``argv`` (a flag without a value maps to
    ``""``)."""
    pairs: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            key, sep, value = arg[2:].partition("=")
            if not sep:
                nxt = args[i + 1] if i + 1 < len(args) else None
                value = "" if nxt is None or nxt.startswith("--") else nxt
                i += 0 if nxt is None or nxt.startswith("--") else 1
            pairs[key.replace("::", "#")] = value
        i += 1
    return pairs


def _config_files(value: str) -> list[str]:
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    if isinstance(parsed, str):
        return [p.strip() for p in parsed.split(",") if p.strip()]
    return [str(p) for p in parsed]


def _exists(config: Any, path: list[str]) -> bool:
    node = config
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, Mapping):
            if part in node:
                node = node[part]
                continue
            return last and "_target_" in node  # a new argument of a component
        if isinstance(node, list) and part.lstrip("-").isdigit():
            if -len(node) <= int(part) < len(node):
                node = node[int(part)]
                continue
        return False
    return True


def unknown_overrides(overrides: Mapping[str, Any], config: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """``(key, closest known top-level key or None)`` for every override naming no setting of ``config``."""
    unknown = []
    for key in overrides:
        path = key.split("#")
        if key in RUN_ARGUMENTS or path[0] == "_meta_" or _exists(config, path):
            continue
        close = difflib.get_close_matches(path[0], [k for k in config if isinstance(k, str)], n=1, cutoff=0.6)
        unknown.append((key, close[0] if close and close[0] != path[0] else None))
    return unknown


def _bundle_run_argv(argv: Sequence[str] | None) -> list[str] | None:
    """``argv`` (default ``sys.argv``) when it is ``python -m monai.bundle run ...``, else ``None``."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py") or argv[1] != "run":
        return None
    return argv


def overridden(keys: Sequence[str], argv: Sequence[str] | None = None) -> list[str]:
    """Those of ``keys`` (top-level settings) that the bundle command line overrides (``--key`` or ``--key#...``);
    empty outside ``python -m monai.bundle run``."""
    argv = _bundle_run_argv(argv)
    given = {k.split("#")[0] for k in cli_overrides(argv[2:])} if argv else set()
    return [k for k in keys if k in given]


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Refuse the command line's overrides that name no setting of its config files (see the module docstring).

    Raises:
        ConfigError: naming each unknown override and the closest known setting.
    """
    argv = _bundle_run_argv(argv)
    if argv is None:
        return  # not `python -m monai.bundle run ...`
    overrides = cli_overrides(argv[2:])
    if "config_file" not in overrides or "args_file" in overrides:
        return  # the files come from elsewhere: nothing reliable to compare with
    from monai.bundle import ConfigParser

    files = _config_files(overrides["config_file"])
    config = ConfigParser.load_config_files(files)
    unknown = unknown_overrides(overrides, config)
    if not unknown:
        return
    lines = []
    for key, close in unknown:
        hint = f" Did you mean --{close}?" if close else ""
        lines.append(f"--{key} names no setting of {', '.join(files)}.{hint}")
    raise ConfigError(
        " ".join(lines) + " Nothing was run. (A setting is a top-level key of the config files, or a path into "
        "one: --key#subkey.)"
    )
