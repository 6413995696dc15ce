"""Scores before and after the difficult-pixel refinement (Matsuzuki & Hotta) of a trained model.

Runs the bundle's inference pipeline (network, preprocessing and inferer from ``bundle/configs/inference.json``,
or the ``--config`` files given, with ``--set`` overrides) on every labelled image of a datalist list, then scores
the arg-max prediction ("before") and its refinement ("after") with ``scripts.metrics.refinement``: per-class
precision, recall and IoU over all pixels (the paper's tables), and the adapted Rand error of the cell regions
(connected components of non-membrane pixels; membrane continuity). Optionally writes the per-image pictures and
their gallery (``--pictures DIR``).

Examples::

    # Drosophila test sections, trained model
    python benchmarks/evaluate_refinement.py --ckpt bundle/models/model.pt \\
        --datalist bundle/data/drosophila/datalist.json --key testing_sections --json refinement.json

    # smoke run: synthetic data, untrained network with small features
    python benchmarks/evaluate_refinement.py --num-test 2 --size 128 --set features=[8,16,32,64,128]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
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
    ap.add_argument("--priorities", type=int, nargs="+", default=None, help="refinement priority classes")
    ap.add_argument("--fallback", type=int, default=None, help="fallback class (default: the transform's)")
    ap.add_argument("--connectivity", type=int, default=8)
    ap.add_argument("--scale", type=float, default=1.0, help="threshold = scale * mean confidence")
    ap.add_argument("--max-passes", type=int, default=None)
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
    load_label = LoadImage(image_only=True, ensure_channel_first=True)

    refine_kwargs = {"connectivity": args.connectivity, "scale": args.scale, "max_passes": args.max_passes}
    if args.priorities is not None:
        refine_kwargs["priorities"] = args.priorities
    if args.fallback is not None:
        refine_kwargs["fallback"] = args.fallback
    refiner = DifficultPixelRefine(**refine_kwargs)
    evaluation = RefinementEvaluation(refiner, num_classes=int(parser.get_parsed_content("num_classes")))
    writer = PictureWriter(args.pictures, refiner=refiner) if args.pictures else None

    t0 = time.perf_counter()
    for item in items:
        data = preprocessing({"image": item["image"]})
        with torch.no_grad():
            logits = inferer(data["image"][None].to(device), network)[0]
        prob = torch.softmax(logits.float(), dim=0).cpu()
        label = load_label(item["label"])
        per_image = evaluation.update(prob, label)
        logger.info("%s: %s", Path(item["image"]).name, {k: round(v, 4) for k, v in per_image.items()})
        if writer is not None:
            writer.write(data["image"], prob, label, name=item["image"])
    seconds = time.perf_counter() - t0
    if writer is not None:
        logger.info("gallery: %s", writer.write_gallery())

    results = evaluation.aggregate()
    results.update(
        datalist=str(datalist), key=args.key, ckpt=args.ckpt, config=args.config, overrides=args.set,
        refinement=refine_kwargs, device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        seconds=round(seconds, 2),
    )
    print(format_refinement_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
