"""Do the bioimage.io package's weights reproduce the bundle's own inference? One section, every weight format.

The reference is the bundle's inference workflow itself (``python -m monai.bundle run inference`` with
``inference.json``: overlap-tile inference, float32 probability maps, the arg-max label image). Each weight format
of the package (exported here with ``python -m scripts.export bioimageio`` unless ``--package`` names one) is run
through bioimageio.core's prediction pipeline, the way bioimage.io tools run it: the whole image at once (the input
padded by the declared halo with the declared ``pad`` mode, the halo cropped from the output) and, with
``--blocksize N``, in blocks of ``min + N * step`` pixels (tiling with the halo). Printed per format and mode: label
agreement with the bundle's label image, max and mean absolute probability difference.

Run it in the BioImage Model Zoo environment (``bash tools/bioimageio_env.sh``), from the repository root::

    .venv-bioimageio/bin/python benchmarks/bioimageio_agreement.py \\
        --image ../shared/datasets/drosophila-vnc/stack1/raw/00.tif [--blocksize 10] [--json agreement.json]

Exit status 1 when a format's label agreement is below ``--min-agreement`` (default 0.999).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundle"))

FORMATS = ("pytorch_state_dict", "torchscript", "onnx")


def bundle_inference(image: Path, model: Path, out_dir: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(labels (H, W), probabilities (C, H, W), seconds)`` from the bundle's inference workflow on ``image``."""
    from scripts.transforms.save_probabilities import read_probability_map
    from scripts.data import read_image

    command = [sys.executable, "-m", "monai.bundle", "run", "inference",
               "--config_file", str(REPO / "bundle" / "configs" / "inference.json"),
               "--input", str(image), "--output_dir", str(out_dir), "--ckpt_path", str(model),
               "--probability_dtype", "float32", "--pictures", "false", "--progress", "false"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    (seg,) = out_dir.glob("*_seg.png")
    (prob,) = out_dir.glob("*_prob.tif")
    return read_image(seg).astype(np.int64), read_probability_map(prob), seconds


def package_prediction(rdf: Path, weight_format: str, image: np.ndarray, blocksize: int | None) -> tuple[np.ndarray, float]:
    """``(probabilities (C, H, W), seconds)``: bioimageio.core's prediction pipeline on a ``(C, H, W)`` image."""
    from bioimageio.core import create_prediction_pipeline, predict
    from bioimageio.spec import load_model_description

    descr = load_model_description(str(rdf), perform_io_checks=False)
    pp = create_prediction_pipeline(bioimageio_model=descr, weight_format=weight_format)
    start = time.perf_counter()
    # predict() loads and unloads the pipeline itself (`with pp:` around it would unload twice and hang)
    sample = predict(model=pp, inputs={"input": image[None].astype(np.float32)}, blocksize_parameter=blocksize)
    seconds = time.perf_counter() - start
    out = sample.members["probabilities"]
    out = out.data.transpose("batch", "channel", "y", "x").values if hasattr(out, "data") else np.asarray(out)
    return np.asarray(out[0], dtype=np.float32), seconds


def compare(labels: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray) -> dict:
    """Agreement of a predicted ``(C, H, W)`` probability map with the bundle's labels and probabilities."""
    if predicted.shape != probabilities.shape:
        raise ValueError(f"prediction shape {predicted.shape} differs from the bundle's {probabilities.shape}")
    diff = np.abs(predicted - probabilities)
    return {"label_agreement": float(np.mean(predicted.argmax(0) == labels)),
            "pixels_differing": int(np.sum(predicted.argmax(0) != labels)),
            "max_prob_diff": float(diff.max()), "mean_prob_diff": float(diff.mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True, help="a section (e.g. drosophila-vnc/stack1/raw/00.tif, 1024x1024)")
    p.add_argument("--model", default=str(REPO / "bundle" / "models" / "pretrained" / "model.pt"))
    p.add_argument("--package", default=None, help="an exported package folder (default: export one here)")
    p.add_argument("--blocksize", type=int, action="append", default=None,
                   help="also predict in blocks of min + N * step pixels (repeat for several N)")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--min-agreement", type=float, default=0.999)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    import torch
    from scripts.data import read_image
    from scripts.export import export_bioimageio
    from scripts.export.reference import to_channel_first

    image = Path(args.image).resolve()
    pixels = to_channel_first(read_image(image)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rdf = Path(args.package) / "rdf.yaml" if args.package else export_bioimageio(tmp / "package", image,
                                                                                    model=args.model)
        labels, probabilities, bundle_s = bundle_inference(image, Path(args.model).resolve(), tmp / "bundle")
        results = {"image": str(image), "size": list(pixels.shape[1:]), "model": str(args.model),
                   "bundle_inference_s": round(bundle_s, 1), "machine": f"{platform.node()} {os.cpu_count()} CPUs",
                   "python": platform.python_version(), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "runs": []}
        for fmt in args.formats:
            for blocksize in [None, *(args.blocksize or [])]:
                predicted, seconds = package_prediction(rdf, fmt, pixels, blocksize)
                row = {"weights": fmt, "mode": "whole image" if blocksize is None else f"blocks n={blocksize}",
                       "seconds": round(seconds, 1), **compare(labels, probabilities, predicted)}
                results["runs"].append(row)
                print(f"{row['weights']:<20} {row['mode']:<12} label agreement {row['label_agreement']:.6f} "
                      f"({row['pixels_differing']} px differ), max |dp| {row['max_prob_diff']:.2e}, "
                      f"mean |dp| {row['mean_prob_diff']:.2e}, {row['seconds']} s", flush=True)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    worst = min(r["label_agreement"] for r in results["runs"])
    if worst < args.min_agreement:
        print(f"label agreement {worst:.6f} < {args.min_agreement}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
