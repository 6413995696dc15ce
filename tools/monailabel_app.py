"""Put a copy of the bundle into a MONAI Label app (manual §12, step 2).

Usage (from the repository root, in any environment with MONAI)::

    python tools/monailabel_app.py --app apps/monaibundle --name cellseg_xnet [--bundle bundle]
        [--merge bundle/configs/experiments/paper/unet_sce_iou.json] [--class_names rest membrane] [--shipped_model xnet]

Copies into ``<app>/model/<name>/``: ``configs/``, ``scripts/`` (without caches), ``docs/``, ``LICENSE`` and
``models/model.pt`` only: the model you trained, else the pretrained weights shipped in
``models/pretrained/model.pt`` (the U-Net); ``--shipped_model xnet`` serves the shipped X-Net
(``models/pretrained/xnet.pt``) and ``--shipped_model unet`` the U-Net, even beside a trained model (resumable
``checkpoint_epoch=N.pt`` files stay out: MONAI Label would offer them as models and each one is tens of MB).
MONAI Label reads only ``configs/inference.json`` and ``configs/train.json``,
so what the app needs is written into the copy's two files (the source bundle is not changed):

- ``train.json``: ``finetune_from`` is ``models/model.pt`` (``scripts.networks.finetune_network``; the config's
  network when there is no ``model.pt`` yet), so that MONAI Label's ``/train`` (``pretrained``, the default)
  fine-tunes the network that file records, whatever width it has: with the same classes every tensor is loaded
  (the run continues the model), with others (``--class_names``, written into ``class_names``) the output layers
  start afresh for them; the recipe it was trained with is merged first: for the
  shipped model ``configs/recipes/shipped.json`` (its loss, sampling and schedule; the X-Net's with
  ``experiments/paper/xnet_sce_and_iou.json``, its decoders' losses), for a model of yours the
  ``--merge`` files you give (e.g. the experiment it was trained with, for its loss); the pre-flight checks the
  datastore's lists that MONAI Label trains on (label values within the classes, sizes); ``overwrite`` true, since
  every ``/train`` is a new run in the same folder: the network is built from ``model.pt`` first, then the previous
  ``models/`` and ``logs/`` move to ``archive/<UTC time>/`` once the new run's first training step has succeeded
  (a ``/train`` that fails before leaves the served model in place);
- ``inference.json``: ``save_probabilities`` false (MONAI Label returns the label only; otherwise every request,
  uploads included, would leave ``outputs/<name>_prob.tif`` behind) and ``pictures`` false (MONAI Label writes no
  pictures; their difficult-pixel maps were computed for nothing, and with the refinement's default classes only for
  a model of the shipped classes). ``network_def`` already builds the network from ``model.pt``; the checks below
  build it again, with the labels, when ``model.pt`` changes (e.g. a ``/train`` with other classes).

Into the app itself (once; a later run refreshes the module): ``lib/cellseg_checks.py`` (``tools/monailabel_checks.py``)
and two lines at the end of ``main.py`` (``MyApp = with_checks(MyApp)``, delete them to undo), so that requests the
server cannot serve (an unknown model or image id, a file that is not an image, an unknown ``/train`` parameter) get
HTTP 4xx with the reason instead of MONAI Label's bare 500, before anything changes, and the model served and its
labels follow ``models/model.pt`` (its ``model_info``). A ``main.py`` without the sample app's
``class MyApp(MONAILabelApp)`` is left as it is (the tool says so).

An existing ``<app>/model/<name>/`` is replaced. Exit status 1 with one message when something is missing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

__all__ = ["INFERENCE_OVERRIDES", "MAIN_PY_HOOK", "NETWORK_FIRST", "PREFLIGHT", "TRAIN_OVERRIDES", "install_checks",
           "make_app_copy", "main"]

#: Written into the copy's train.json: every /train fine-tunes models/model.pt (MONAI Label's "pretrained").
TRAIN_OVERRIDES = {
    # the network models/model.pt records, with this copy's classes: all its tensors loaded for the same classes, the
    # head re-initialised for others (scripts.networks.finetune_network); no model.pt yet: the configured network
    "finetune_from": "$@ckpt_dir + '/model.pt'",
    "initial_network#missing_ok": True,
    # the pre-flight checks what MONAI Label trains on (its datastore lists), not the default synthetic datalist
    "preflight#datalist": "${@train_key: @train#dataset#data, @val_key: @validate#dataset#data}",
    # every /train is a new run in the same folder (train.json refuses that by default): the previous models/ and logs/
    # are moved to archive/<UTC time>/; the network is built from model.pt first (``NETWORK_FIRST``), then archived
    "overwrite": True,
}
#: Put before the pre-flight in the copy's train.json ``initialize``: build the network (from models/model.pt) before
#: the pre-flight's run-folder step moves the previous run to the archive.
NETWORK_FIRST = "$@network"
#: train.json's ``initialize`` step that runs the pre-flight (``scripts.workflows.TrainingPreflight``).
PREFLIGHT = "$@preflight.run()"
#: The shipped model's recipe (configs/ relative), merged into the copy's train.json when the copy serves the
#: shipped model and no --merge is given: its loss (one output, SCE+IoU without class weights), sampling and schedule.
SHIPPED_RECIPE = "recipes/shipped.json"
#: ``--shipped_model``: the shipped models (``scripts.networks.SHIPPED_MODELS``) and the configs their ``/train``
#: merges on train.json (the recipe they were trained with; X-Net adds its two decoders' losses).
SHIPPED = {
    "unet": ("pretrained/model.pt", [SHIPPED_RECIPE]),
    "xnet": ("pretrained/xnet.pt", [SHIPPED_RECIPE, "experiments/paper/xnet_sce_and_iou.json"]),
}
#: Written into the copy's inference.json.
INFERENCE_OVERRIDES = {"save_probabilities": False, "pictures": False}
#: The app code that answers requests the server cannot serve with HTTP 4xx, and where it goes in the app.
CHECKS_SOURCE = Path(__file__).resolve().with_name("monailabel_checks.py")
CHECKS_MODULE = Path("lib") / "cellseg_checks.py"
#: The sample app's class, which the lines appended to its main.py (:data:`MAIN_PY_HOOK`) wrap.
APP_CLASS = "class MyApp(MONAILabelApp):"
MAIN_PY_HOOK = """
# Added by the cellseg bundle's tools/monailabel_app.py (delete these lines to undo): requests the server cannot
# serve get HTTP 4xx with the reason, before anything changes (lib/cellseg_checks.py).
from lib.cellseg_checks import with_checks  # noqa: E402

MyApp = with_checks(MyApp)
"""


def _merged(files: list[Path], overrides: dict) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    for key, value in overrides.items():
        parser[key] = value
    if "overwrite" in overrides:
        steps = [e for e in parser.get("initialize", []) if e != NETWORK_FIRST]
        steps.insert(steps.index(PREFLIGHT) if PREFLIGHT in steps else len(steps), NETWORK_FIRST)
        parser["initialize"] = steps
        _stand_in_loader(parser)
    return parser.get()


def _stand_in_loader(parser) -> None:
    """Append a disabled ``CheckpointLoader`` to ``train#handlers``.

    MONAI Label's ``BundleTrainTask`` inserts a ``CheckpointLoader`` of ``models/model.pt`` at the start of the list
    unless the list has one (it looks for it by ``_target_``, so every item must be a dict, as train.json's are). The
    copy's network is already built from ``model.pt`` (``finetune_from``; a loader would fail on other classes), and
    that file is moved to ``archive/`` by the pre-flight (``overwrite``), so its loader would find no file; an item
    inserted at the start would shift the handlers that train.json's ``resumable`` names by their place in the list.
    A disabled loader at the end stands in its place.
    """
    handlers = list(parser.get("train#handlers", []))
    handlers.append({
        "_target_": "CheckpointLoader",
        "_disabled_": True,
        "_desc_": "stands in for the loader MONAI Label would add: finetune_from already loads models/model.pt",
        "load_path": "$@ckpt_dir + '/model.pt'",
        "load_dict": {"model": "@network"},
    })
    parser["train#handlers"] = handlers


def install_checks(app: Path) -> bool:
    """Put :data:`CHECKS_MODULE` into the app and append :data:`MAIN_PY_HOOK` to its ``main.py`` (once); ``False``
    (nothing changed) when ``main.py`` has no :data:`APP_CLASS`."""
    main_py = Path(app) / "main.py"
    text = main_py.read_text()
    if APP_CLASS not in text:
        return False
    module = Path(app) / CHECKS_MODULE
    module.parent.mkdir(exist_ok=True)
    if not (module.parent / "__init__.py").is_file():
        (module.parent / "__init__.py").write_text("")
    shutil.copy2(CHECKS_SOURCE, module)
    if MAIN_PY_HOOK.strip() not in text:
        main_py.write_text(text.rstrip("\n") + "\n\n" + MAIN_PY_HOOK)
    return True


def make_app_copy(app: Path, name: str, bundle: Path = Path("bundle"), merge: list[Path] | None = None,
                  class_names: list[str] | None = None, shipped_model: str | None = None) -> Path:
    """Copy the bundle into ``<app>/model/<name>`` as described in the module docstring; return that folder.

    ``class_names``: the classes ``/train`` trains (your labels' values 0, 1, ... in order); ``None``: the configs'.
    ``shipped_model``: serve that shipped model (a key of :data:`SHIPPED`) even beside a trained ``models/model.pt``;
    ``None``: the trained model, else the shipped U-Net.

    Raises:
        FileNotFoundError: the bundle or app folder is not what it should be.
    """
    from monai.bundle import ConfigParser

    bundle, app = Path(bundle), Path(app)
    if not (bundle / "configs" / "train.json").is_file():
        raise FileNotFoundError(f"{bundle} holds no configs/train.json: pass --bundle <bundle root>.")
    if not (app / "main.py").is_file():
        raise FileNotFoundError(
            f"{app} is not a MONAI Label app (no main.py): get it with "
            "`monailabel apps --download --name monaibundle --output apps`."
        )
    if shipped_model is not None and shipped_model not in SHIPPED:
        raise FileNotFoundError(f"--shipped_model {shipped_model}: not a shipped model; use one of {', '.join(SHIPPED)}.")
    if shipped_model is not None and not (bundle / "models" / SHIPPED[shipped_model][0]).is_file():
        raise FileNotFoundError(f"{bundle / 'models' / SHIPPED[shipped_model][0]}: the shipped {shipped_model} model is "
                                "missing; restore it from the bundle archive.")
    for f in merge or []:
        if not Path(f).is_file():
            raise FileNotFoundError(f"--merge {f}: no such config file.")
    dst = app / "model" / name
    if dst.exists():
        shutil.rmtree(dst)
    caches = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("configs", "scripts", "docs"):
        if (bundle / folder).is_dir():
            shutil.copytree(bundle / folder, dst / folder, ignore=caches)
    if (bundle / "LICENSE").is_file():
        shutil.copy2(bundle / "LICENSE", dst / "LICENSE")
    (dst / "models").mkdir(parents=True)
    # the model you trained, else the weights shipped with the bundle: MONAI Label serves models/model.pt
    # (source, the shipped model it is or None): the first that exists is served
    sources = [(bundle / "models" / "model.pt", None), (bundle / "models" / SHIPPED["unet"][0], "unet")]
    if shipped_model is not None:
        sources = [(bundle / "models" / SHIPPED[shipped_model][0], shipped_model)]
    shipped = None
    for source, key in sources:
        if source.is_file():
            shutil.copy2(source, dst / "models" / "model.pt")
            shipped = key
            break
    configs = dst / "configs"
    recipe = []
    if shipped and not merge and all((configs / f).is_file() for f in SHIPPED[shipped][1]):
        recipe = [configs / f for f in SHIPPED[shipped][1]]  # /train continues it with its own recipe (loss, sampling)
    overrides = {**TRAIN_OVERRIDES, **({"class_names": [str(c) for c in class_names]} if class_names else {})}
    train = _merged([configs / "train.json", *recipe, *[Path(f) for f in merge or []]], overrides)
    ConfigParser.export_config_file(train, str(configs / "train.json"), fmt="json", indent=4)
    inference = _merged([configs / "inference.json"], INFERENCE_OVERRIDES)
    ConfigParser.export_config_file(inference, str(configs / "inference.json"), fmt="json", indent=4)
    install_checks(app)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy the bundle into a MONAI Label app (configs, scripts, model.pt).")
    parser.add_argument("--app", required=True, help="the MONAI Label app folder (e.g. apps/monaibundle)")
    parser.add_argument("--name", default="cellseg_xnet", help="model name in MONAI Label (default: cellseg_xnet)")
    parser.add_argument("--bundle", default="bundle", help="bundle root (default: bundle)")
    parser.add_argument("--merge", action="append", default=[],
                        help="a config merged into the copy's train.json (e.g. the experiment the model was trained with)")
    parser.add_argument("--class_names", nargs="+", metavar="NAME",
                        help="the classes /train trains, label value 0 first (default: the configs' class_names); "
                             "the first /train fine-tunes the served model for them")
    parser.add_argument("--shipped_model", choices=sorted(SHIPPED), default=None,
                        help="serve this shipped model (unet: models/pretrained/model.pt, xnet: models/pretrained/"
                             "xnet.pt), even beside a trained models/model.pt (default: that, else the U-Net)")
    args = parser.parse_args(argv)
    try:
        dst = make_app_copy(Path(args.app), args.name, Path(args.bundle), [Path(m) for m in args.merge],
                            args.class_names, args.shipped_model)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    model = dst / "models" / "model.pt"
    print(f"{dst}: configs, scripts, " + ("models/model.pt" if model.is_file() else "no model.pt yet (train first, "
          "or train in MONAI Label and restart the server to offer inference)"))
    if MAIN_PY_HOOK.strip() in (Path(args.app) / "main.py").read_text():
        print(f"{Path(args.app) / 'main.py'}: requests the server cannot serve get HTTP 4xx ({CHECKS_MODULE})")
    else:
        print(f"note: {Path(args.app) / 'main.py'} has no `{APP_CLASS}`: requests it cannot serve get MONAI Label's "
              "HTTP 500 (no checks installed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
