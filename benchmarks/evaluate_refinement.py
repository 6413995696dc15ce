"""Scores before and after the difficult-pixel refinement (Matsuzuki & Hotta) of a trained model.

Runs the bundle's inference pipeline (network, preprocessing and inferer from ``bundle/configs/inference.json``,
or the ``--config`` files given, with ``--set`` overrides) on every labelled image of a datalist list, then scores
the arg-max prediction ("before") and its refinement ("after") with ``scripts.metrics.refinement``: per-class
precision, recall and IoU over all pixels (the paper's tables), and the adapted Rand error of the cell regions
(connected components of non-membrane pixels; membrane continuity). Optionally writes the per-image pictures and
their gallery (``--pictures DIR``).

``--keep-others both`` scores two refinements of the same predictions side by side: the paper's rule (every
unreached difficult pixel goes to the fallback class) and ``keep_other_classes=True`` (difficult pixels whose
arg-max is not a priority class keep it; ``refine_keep_others`` in inference.json). The JSON then holds
``after_keep_others`` (and ``rand_error`` in it) next to ``after``.

Examples::

    # Drosophila test sections, trained model
    python benchmarks/evaluate_refinement.py --ckpt bundle/models/model.pt \\
        --datalist bundle/data/drosophila/datalist.json --key testing_sections --json refinement.json

    # smoke run: synthetic data, untrained network with small features
    python benchmarks/evaluate_refinement.py --num-test 2 --size 128 --set features=[8,16,32,64,128]

    # both refinement rules on the same predictions
    python benchmarks/evaluate_refinement.py --ckpt bundle/models/model.pt --keep-others both ...
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage

from scripts.data import ensure_synthetic_dataset, load_datalist
from scripts.metrics.refinement import RefinementEvaluation, format_refinement_table
from scripts.transforms import DifficultPixelRefine
from scripts.visualize import PictureWriter

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("evaluate_refinement")


def load_checkpoint(network: torch.nn.Module, path: str, device: torch.device) -> None:
    """Load a state dict saved by MONAI's CheckpointSaver (``{"model": ...}`` or the bare state dict)."""
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network.load_state_dict(state)


#: ``--keep-others`` choice -> the ``keep_other_classes`` values to score.
KEEP_OTHERS = {"no": (False,), "yes": (True,), "both": (False, True)}


def score_images(
    items: list[dict],
    predict: Callable[[dict], tuple[torch.Tensor, torch.Tensor]],
    refiners: Mapping[str, DifficultPixelRefine],
    num_classes: int,
    membrane_class: int,
    writer: PictureWriter | None = None,
) -> dict:
    """Score the arg-max prediction and each refinement of it over ``items``.

    Args:
        items: datalist items with ``image`` and ``label``.
        predict: item -> ``(image, prob)``: the preprocessed image (C, H, W) and per-class probabilities (K, H, W).
        refiners: name -> refinement; the first one's scores are ``before``/``after``, each other one's ``after``
            is stored as ``after_<name>``.
        num_classes: K.
        membrane_class: the class whose continuity the Rand error measures.
        writer: optional picture writer, fed every image with the first refinement's maps.

    Returns:
        :meth:`RefinementEvaluation.aggregate` of the first refiner, plus ``after_<name>`` per other refiner (the
        difficult pixels are the same for all: only the reassignment differs).
    """
    evaluations = {name: RefinementEvaluation(r, num_classes=num_classes, membrane_class=membrane_class) for name, r in refiners.items()}
    load_label = LoadImage(image_only=True, ensure_channel_first=True)
    for item in items:
        image, prob = predict(item)
        label = load_label(item["label"])
        for name, evaluation in evaluations.items():
            per_image = evaluation.update(prob, label)
            logger.info("%s [%s]: %s", Path(item["image"]).name, name, {k: round(v, 4) for k, v in per_image.items()})
        if writer is not None:  # the maps of the first refinement
            refined, confidence, difficult = next(iter(refiners.values()))(prob, return_maps=True)
            writer.write(image, prob, label, name=item["image"], confidence=confidence, difficult=difficult,
                         refined=refined)
    first, *others = evaluations
    results = evaluations[first].aggregate()
    for name in others:
        results[f"after_{name}"] = evaluations[name].aggregate()["after"]
    return results


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=[str(REPO / "bundle" / "configs" / "inference.json")],
                    help="bundle config file(s) giving network_def, preprocessing and inferer")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                    help="config overrides, e.g. features=[16,32,64,128,256] padding='\"valid\"'")
    ap.add_argument("--ckpt", default=None, help="model weights; without it the network is untrained (smoke test)")
    ap.add_argument("--datalist", default=None, help="datalist JSON; default: a synthetic dataset in --work-dir")
    ap.add_argument("--key", default="testing", help="datalist list to evaluate, e.g. testing_sections")
    ap.add_argument("--num-test", type=int, default=4, help="synthetic test images (without --datalist)")
    ap.add_argument("--size", type=int, default=256, help="synthetic image size (without --datalist)")
    ap.add_argument("--work-dir", default=None, help="where synthetic data goes (default: a temp dir)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--priorities", type=int, nargs="+", default=None,
                    help="refinement priority classes (default: the config's refine_priorities)")
    ap.add_argument("--fallback", type=int, default=None, help="fallback class (default: the config's refine_fallback)")
    ap.add_argument("--membrane-class", type=int, default=None,
                    help="class of the Rand error's cell borders (default: 'membrane' in the config's class_names)")
    ap.add_argument("--connectivity", type=int, default=8)
    ap.add_argument("--scale", type=float, default=1.0, help="threshold = scale * mean confidence")
    ap.add_argument("--max-passes", type=int, default=None)
    ap.add_argument("--keep-others", choices=sorted(KEEP_OTHERS), default="no",
                    help="keep the arg-max of unreached difficult pixels outside the priority classes (yes), send "
                         "them to the fallback as the paper does (no, default), or score both on the same predictions")
    ap.add_argument("--pictures", default=None, help="write per-image pictures and index.html here")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    tmp = tempfile.TemporaryDirectory()
    work_dir = Path(args.work_dir or tmp.name)
    datalist = args.datalist or ensure_synthetic_dataset(
        work_dir / "synthetic", num_train=1, num_val=0, num_test=args.num_test, size=args.size, seed=1
    )
    items = load_datalist(datalist, key=args.key)
    if any("label" not in item for item in items):
        raise ValueError(f"{datalist}: every item of {args.key!r} needs a 'label' to be scored.")

    parser = ConfigParser()
    parser.read_config(args.config)
    parser["bundle_root"] = str(work_dir)
    parser["device"] = f"$torch.device('{args.device}')"
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        parser[key] = json.loads(value)
    device = torch.device(args.device)
    network = parser.get_parsed_content("network_def", instantiate=True).to(device).eval()
    if args.ckpt:
        load_checkpoint(network, args.ckpt, device)
    else:
        logger.warning("no --ckpt: the network is untrained, the scores only show that the pipeline runs.")
    preprocessing = parser.get_parsed_content("preprocessing", instantiate=True)
    inferer = parser.get_parsed_content("inferer", instantiate=True)

    class_names = list(parser.get_parsed_content("class_names"))
    membrane_class = args.membrane_class
    if membrane_class is None:
        if "membrane" not in class_names:
            raise ValueError(f"the config's class_names {class_names} hold no 'membrane': give --membrane-class.")
        membrane_class = class_names.index("membrane")
    refine_kwargs = {
        "priorities": parser.get_parsed_content("refine_priorities") if args.priorities is None else args.priorities,
        "fallback": parser.get_parsed_content("refine_fallback") if args.fallback is None else args.fallback,
        "connectivity": args.connectivity, "scale": args.scale, "max_passes": args.max_passes,
    }
    refiners = {
        "keep_others" if keep else "fallback": DifficultPixelRefine(**refine_kwargs, keep_other_classes=keep)
        for keep in KEEP_OTHERS[args.keep_others]
    }
    writer = PictureWriter(args.pictures) if args.pictures else None

    def predict(item: dict) -> tuple[torch.Tensor, torch.Tensor]:
        data = preprocessing({"image": item["image"]})
        with torch.no_grad():
            logits = inferer(data["image"][None].to(device), network)[0]
        return data["image"], torch.softmax(logits.float(), dim=0).cpu()

    t0 = time.perf_counter()
    results = score_images(items, predict, refiners, int(parser.get_parsed_content("num_classes")), membrane_class, writer)
    seconds = time.perf_counter() - t0
    if writer is not None:
        logger.info("gallery: %s", writer.write_gallery())
    refine_kwargs["keep_other_classes"] = list(KEEP_OTHERS[args.keep_others])
    results.update(
        datalist=str(datalist), key=args.key, ckpt=args.ckpt, config=args.config, overrides=args.set,
        refinement=refine_kwargs, device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        seconds=round(seconds, 2),
    )
    print(format_refinement_table(results, class_names))
    if "after_keep_others" in results:
        print("\nkeep_other_classes=True, same predictions:")
        print(format_refinement_table({**results, "after": results["after_keep_others"]}, class_names))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
