"""A BioImage Model Zoo (bioimage.io) model package of a trained bundle model, format 0.5.

The package is a folder (and, on request, its zip) holding ``rdf.yaml`` and the files it names:

- weights in three formats computing the same function (:mod:`scripts.export.weights`): TorchScript
  (``weights_torchscript.pt``, any size), ONNX (``weights.onnx``, opset 17, dynamic batch and size) and, for a
  2D same-padding U-Net, ``pytorch_state_dict`` (``weights.pt``) with its architecture
  (``torch_unet.py``: :mod:`scripts.export.torch_unet`, plain PyTorch);
- ``test_input.npy`` / ``test_output.npy``: a crop of the image given by the user, ``test_size`` pixels plus the halo
  on every side, and the bundle network's output for it as it is (the spec's test tensors are what the model itself
  sees and returns: no halo padding, no cropping; :func:`scripts.export.reference.bundle_probabilities`); the same as
  images (``sample_input.png``, ``sample_output.tif``), ``cover.jpg`` (the image and its segmentation by the bundle's
  overlap-tile inference, :mod:`scripts.export.cover`) and ``README.md`` (the documentation).

The description, in the spec's own vocabulary:

- input ``(batch, channel, y, x)``, raw pixel values ``0..intensity_max``; preprocessing ``scale_linear`` (gain
  ``1 / intensity_max``) then ``clip`` to ``0..1``: the bundle's training scaling (``intensity_rule`` ``"model"``,
  what ``"auto"`` does for 8-bit images);
- sizes ``min + n * step`` with ``step = 2 ** depth`` (the pooling grid) and ``min`` the smallest such size larger
  than twice the halo;
- output ``(batch, channel, y, x)``: the softmax over the classes (``channel_names`` = the model's class names), the
  size of the input the network sees, with ``halo`` = the overlap-tile context margin of
  :class:`scripts.inferers.OverlapTileInferer` (112 pixels for a depth-4 U-Net); the input is padded by the halo
  with ``pad: reflect`` (the bundle's mirror padding), so a tool predicting the image whole or in blocks gets the
  bundle's overlap-tile result (seamless tiles).

``bioimageio test <folder>`` (in the environment ``tools/bioimageio_env.sh`` makes) checks a package.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scripts
import tifffile
import torch
import yaml
from scripts.data import read_image, to_uint8, write_png
from scripts.errors import ExportError
from scripts.export import torch_unet
from scripts.export.cover import centre_crop, write_cover
from scripts.export.reference import bundle_probabilities, to_channel_first
from scripts.export.weights import (
    ONNX_OPSET,
    ProbabilityNetwork,
    architecture_kwargs,
    save_onnx,
    save_state_dict,
    save_torchscript,
)
from scripts.inferers.tiling import ceil_to, context_margins, network_grid
from scripts.networks import build_network, is_buildable, read_checkpoint
from scripts.networks.pinned import file_sha256

__all__ = [
    "ARCHITECTURES",
    "CITATIONS",
    "FORMAT_VERSION",
    "LICENSE",
    "PACKAGE_FILES",
    "export_bioimageio",
    "package_description",
    "shipped_card",
]

logger = logging.getLogger(__name__)

#: The bioimage.io model format written (the one ``bioimageio.spec`` 0.5.12, required by ``bioimageio.core`` 0.11,
#: implements).
FORMAT_VERSION = "0.5.12"
#: SPDX licence of the weights: the shipped model and any model trained on the Drosophila data inherit the data's.
LICENSE = "CC-BY-NC-SA-3.0"
#: The papers and the data set (the manual's References).
CITATIONS: list[dict[str, str]] = [
    {
        "text": "Fujii H, Tanaka H, Ikeuchi M, Hotta K. X-Net with Different Loss Functions for Cell Image "
        "Segmentation. CVPR Workshops 2021.",
        "url": "https://openaccess.thecvf.com/CVPR2021_workshops/menu",
    },
    {
        "text": "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
        "MICCAI 2015.",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
    {
        "text": "Gerhard S, Funke J, Martel J, Cardona A, Fetter R. Segmented anisotropic ssTEM dataset of neural "
        "tissue. figshare 2013.",
        "doi": "10.6084/m9.figshare.856713",
    },
]
#: How the package names each network of the bundle (its class name -> the papers' name).
ARCHITECTURES = {"UNet": "U-Net", "XNet": "X-Net", "DoubleUNet": "Double U-Net", "EnsembleUNet": "Ensemble U-Net"}
#: Files the exporter writes into the package folder (``weights.pt`` and ``torch_unet.py`` for U-Nets only).
PACKAGE_FILES = (
    "rdf.yaml",
    "README.md",
    "cover.jpg",
    "test_input.npy",
    "test_output.npy",
    "sample_input.png",
    "sample_output.tif",
    "weights.pt",
    "torch_unet.py",
    "weights_torchscript.pt",
    "weights.onnx",
)
TAGS = [
    "2d",
    "semantic-segmentation",
    "electron-microscopy",
    "ssTEM",
    "neurons",
    "mitochondria",
    "synapses",
    "drosophila",
    "unet",
    "pytorch",
    "monai",
]


def _torch_version() -> str:
    return torch.__version__.split("+")[0]


def _metadata() -> dict[str, Any]:
    return json.loads((Path(scripts.BUNDLE_ROOT) / "configs" / "metadata.json").read_text(encoding="utf-8"))


def shipped_card(metadata: dict[str, Any], sha256: str) -> dict[str, Any] | None:
    """The model card in ``metadata.json`` (``pretrained_model``, ``pretrained_xnet``, ...) of the shipped file with
    this sha256; ``None`` for any other file (a model its user trained)."""
    for key, card in metadata.items():
        if key.startswith("pretrained_") and isinstance(card, dict) and card.get("sha256") == sha256:
            return card
    return None


def _prepare_folder(out_dir: Path, overwrite: bool) -> None:
    """An empty ``out_dir``; an earlier package there is replaced only with ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: a file, not a folder; give a new folder for the package.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(
                f"--out {out_dir} is not empty; give a new folder, or --overwrite to replace the " "package there."
            )
        others = sorted(p.name for p in out_dir.iterdir() if p.name not in PACKAGE_FILES)
        if not (out_dir / "rdf.yaml").is_file() or others:
            raise ExportError(
                f"--out {out_dir} holds other files than an exported package ({', '.join(others[:3]) or 'no rdf.yaml'}): "
                "--overwrite replaces a package only; give a new folder."
            )
        for name in PACKAGE_FILES:
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _load_model(model: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    if not model.is_file():
        raise ExportError(
            f"--model {model}: no such file; give a model.pt saved by this bundle (e.g. "
            "bundle/models/model.pt after training), or leave --model out for the shipped model."
        )
    weights, info = read_checkpoint(model)
    if not info or not is_buildable(info.get("network") or {}):
        raise ExportError(
            f"--model {model} records no buildable network (no model_info): export a model.pt saved by "
            "this bundle (0.4 or later), e.g. bundle/models/model.pt after training."
        )
    network = build_network(info["network"])
    network.load_state_dict(weights)
    network.eval()
    _, padding, _ = network_grid(network)
    if padding != "same" or network.init_args.get("spatial_dims") != 2:
        raise ExportError(
            f"--model {model}: a {network.init_args.get('spatial_dims')}D {padding}-padding "
            f"{type(network).__name__}; the bioimage.io export takes 2D same-padding networks (a valid "
            "network's output is smaller than its input, which the package's tiling does not describe)."
        )
    for key in ("class_names", "intensity_max"):
        if info.get(key) is None:
            raise ExportError(
                f"--model {model}: its model_info has no {key!r}; export a model.pt saved by this "
                "bundle's training (0.5 or later)."
            )
    return network, info


def _read_section(image: Path, in_channels: int, intensity_max: float, test_size: int) -> np.ndarray:
    try:
        pixels = to_channel_first(read_image(image))
    except (OSError, ValueError) as e:
        raise ExportError(f"--image: {e}") from None
    if pixels.shape[0] != in_channels:
        raise ExportError(
            f"--image {image} has {pixels.shape[0]} channel(s), the model takes {in_channels}; give a "
            f"{'grey' if in_channels == 1 else 'RGB'} section."
        )
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > intensity_max:
        raise ExportError(
            f"--image {image}: values {low:g}..{high:g} lie outside the model's 0..{intensity_max:g} "
            "(intensity_max), the package's fixed input scaling; give an 8-bit section as trained."
        )
    if min(pixels.shape[1:]) < test_size:
        raise ExportError(
            f"--image {image} is {pixels.shape[1]}x{pixels.shape[2]}, smaller than the test input "
            f"({test_size} pixels: --test-size and the halo on both sides); give a larger section or a "
            "smaller --test-size."
        )
    return pixels.astype(np.float32)


def _channel_names(in_channels: int) -> list[str]:
    return (
        ["grey"]
        if in_channels == 1
        else ["red", "green", "blue"] if in_channels == 3 else [f"channel{i}" for i in range(in_channels)]
    )


def package_description(
    *,
    name: str,
    description: str,
    authors: Sequence[str],
    license: str,
    version: str,
    in_channels: int,
    class_names: Sequence[str],
    intensity_max: float,
    size_min: int,
    size_step: int,
    halo: int,
    state_dict_kwargs: dict[str, Any] | None,
    sha256: dict[str, str],
    files: dict[str, str],
) -> dict[str, Any]:
    """The ``rdf.yaml`` content (a plain dict, format :data:`FORMAT_VERSION`); ``sha256``/``files`` give each
    file's hash and name by role (``test_input``, ``test_output``, ``cover``, ``documentation``,
    ``state_dict``, ``architecture``, ``torchscript``, ``onnx``)."""

    def space(axis: str, size: Any, **extra: Any) -> dict[str, Any]:
        return {"type": "space", "id": axis, "size": size, **extra}

    def file(role: str) -> dict[str, str]:
        return {"source": files[role], "sha256": sha256[role]}

    def input_size() -> dict[str, int]:  # a new dict per axis: no YAML anchors in rdf.yaml
        return {"min": size_min, "step": size_step}

    weights: dict[str, Any] = {}
    parent = None
    if state_dict_kwargs is not None:
        weights["pytorch_state_dict"] = {
            **file("state_dict"),
            "architecture": {**file("architecture"), "callable": "UNet2d", "kwargs": state_dict_kwargs},
            "pytorch_version": _torch_version(),
            "comment": "the bundle's state dict; torch_unet.py is the bundle's U-Net in plain PyTorch",
        }
        parent = "pytorch_state_dict"
    weights["torchscript"] = {
        **file("torchscript"),
        "pytorch_version": _torch_version(),
        "comment": "scripted (torch.jit.script): any size",
    }
    weights["onnx"] = {
        **file("onnx"),
        "opset_version": ONNX_OPSET,
        "comment": "traced with dynamic batch and size (legacy exporter)",
    }
    if parent is None:
        weights["onnx"]["parent"] = "torchscript"
    else:
        weights["torchscript"]["parent"] = weights["onnx"]["parent"] = parent
    return {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": name,
        "description": description,
        "version": version,
        "authors": [{"name": a} for a in authors],
        "cite": CITATIONS,
        "license": license,
        "documentation": file("documentation"),
        "covers": [file("cover")],
        "tags": TAGS,
        "inputs": [
            {
                "id": "input",
                "description": f"raw section, values 0..{intensity_max:g}",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": _channel_names(in_channels)},
                    space("y", input_size()),
                    space("x", input_size()),
                ],
                "test_tensor": file("test_input"),
                "sample_tensor": file("sample_input"),
                "data": {"type": "float32", "range": [0.0, float(intensity_max)]},
                "pad": {"mode": "reflect"},
                "preprocessing": [
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    {"id": "scale_linear", "kwargs": {"gain": 1.0 / float(intensity_max), "offset": 0.0}},
                    {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
                ],
            }
        ],
        "outputs": [
            {
                "id": "probabilities",
                "description": "softmax class probabilities, one channel per class",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": list(class_names)},
                    space("y", {"tensor_id": "input", "axis_id": "y"}, halo=halo),
                    space("x", {"tensor_id": "input", "axis_id": "x"}, halo=halo),
                ],
                "test_tensor": file("test_output"),
                "sample_tensor": file("sample_output"),
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": weights,
    }


def _documentation(
    name: str,
    class_names: Sequence[str],
    intensity_max: float,
    halo: int,
    size_min: int,
    size_step: int,
    model: Path,
    model_card: dict[str, Any] | None,
    command: str,
    architecture: str = "U-Net",
) -> str:
    classes = "\n".join(f"| {i} | {c} |" for i, c in enumerate(class_names))
    if model_card:
        test = model_card.get("test", {})
        iou = test.get("iou", {})
        validation = (
            f"The shipped {architecture}, on 4 Drosophila ssTEM sections (stack 1, sections 0-3) never used in "
            f"training or model selection, whole 1024x1024 sections with overlap-tile inference: mean IoU {test.get('mean_iou')} "
            f"(per class: {', '.join(f'{k} {v}' for k, v in iou.items())}), pixel accuracy "
            f"{test.get('pixel_accuracy')}. Training: {model_card.get('training', {}).get('data', '')}."
        )
    else:
        validation = (
            f"This package was exported from `{model.name}`, trained by its user; measure it on labelled "
            "sections it has not seen, e.g. with the bundle's `evaluate.json`."
        )
    trained_on = (
        "serial-section TEM images of neural tissue (the Drosophila larva ventral nerve cord, about 4.6 " "nm/pixel)"
        if model_card
        else "the images its user trained it on"
    )
    return f"""# {name}

2D semantic segmentation into {len(class_names)} classes with the bundle's {architecture}, trained on {trained_on};
exported from the MONAI bundle "Microscopy cell segmentation (X-Net / U-Net)" (U-Net: Ronneberger et al. 2015;
X-Net and the bundle's losses: Fujii et al. 2021).

## Input and output

- input `(batch, channel, y, x)`: a grey 8-bit section, raw values 0..{intensity_max:g}; preprocessing scales them by
  1/{intensity_max:g} and clips to 0..1, exactly as in training. Other bit depths: rescale to 0..{intensity_max:g} first.
- sizes {size_min} + n * {size_step} per axis (the network's pooling grid); an image whose sides are on it (1024 is)
  is predicted exactly as the bundle does; pad other sizes to it (bioimageio.core refuses them).
- output `(batch, channel, y, x)`: softmax probabilities of the classes below (arg-max for a label image).
- halo {halo} pixels: the overlap-tile context; tools pad the input by it (reflect) and crop it from the output, so
  an image predicted whole or in tiles gives the bundle's own overlap-tile result, without seams.

| channel | class |
|---|---|
{classes}

## Validation

{validation}

The package's test output is the bundle's own overlap-tile prediction of the test input; `bioimageio test` checks
every weight format against it.

## Limits

Research use only, not for clinical or diagnostic use. Other tissues, resolutions or stainings need fine-tuning
(with the bundle). The weights are licensed CC BY-NC-SA 3.0, like the data they were learned from (Gerhard et al.
2013): non-commercial use, share alike, credit the dataset.

## How it was made

`{command}`
"""


def export_bioimageio(
    out_dir: str | os.PathLike,
    image: str | os.PathLike,
    model: str | os.PathLike | None = None,
    test_size: int = 256,
    cover_size: int = 512,
    name: str | None = None,
    authors: Sequence[str] | None = None,
    license: str = LICENSE,
    zip_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> Path:
    """Write a bioimage.io model package of ``model`` into ``out_dir``.

    Args:
        out_dir: the package folder (new, empty, or an earlier package with ``overwrite``).
        image: a section (grey 8-bit for the shipped model) the test tensors and the cover are made from, e.g. a
            Drosophila ssTEM section; they go into the package only.
        model: the ``model.pt`` (with ``model_info``); default: the shipped ``models/pretrained/model.pt``.
        test_size: side of the test output's centre, the part kept after cropping the halo (the test input is a
            centred crop of ``image`` of ``test_size + 2 * halo`` pixels), a multiple of the pooling grid.
        cover_size: side of the cover's square crop (smaller images: the whole image).
        name: the package's name (letters, digits, spaces, ``_-()``); default "Microscopy cell segmentation
            <architecture> (Drosophila ssTEM)", the architecture as the papers name it (U-Net, X-Net, ...).
        authors: the authors (default: the bundle's ``metadata.json`` ``authors``).
        license: SPDX licence of the weights (default CC-BY-NC-SA-3.0: the Drosophila data's).
        zip_path: also write the package as this zip (what Fiji/deepImageJ and QuPath install from).
        overwrite: replace an earlier package in ``out_dir`` (and ``zip_path``).
        command: the command line to record in the documentation.

    Returns:
        The path of ``rdf.yaml``.

    Raises:
        ExportError: a model the export does not take (no ``model_info``, not 2D same padding), an image that does
            not fit (channels, values outside ``0..intensity_max``, smaller than ``test_size``), a bad ``test_size``,
            or an output folder/zip that is not new (without ``overwrite``).
    """
    out_dir = Path(out_dir)
    image = Path(image)
    model = Path(model) if model is not None else Path(scripts.BUNDLE_ROOT) / "models" / "pretrained" / "model.pt"
    if zip_path is not None and Path(zip_path).exists() and not overwrite:
        raise ExportError(f"--zip {zip_path} exists; give a new file, or --overwrite to replace it.")
    network, info = _load_model(model)
    net, padding, div = network_grid(network)
    if test_size < div or test_size % div:
        raise ExportError(f"--test-size {test_size} must be a positive multiple of {div} (the network's pooling grid).")
    halo, _ = context_margins(net, padding, div, None, None)
    size_min = ceil_to(2 * halo + 1, div)
    in_channels = int(network.init_args["in_channels"])
    class_names = [str(c) for c in info["class_names"]]
    intensity_max = float(info["intensity_max"])
    pixels = _read_section(image, in_channels, intensity_max, test_size + 2 * halo)
    _prepare_folder(out_dir, overwrite)

    metadata = _metadata()
    model_card = shipped_card(metadata, file_sha256(model))
    architecture = ARCHITECTURES.get(type(network).__name__, type(network).__name__)
    name = name or f"Microscopy cell segmentation {architecture} (Drosophila ssTEM)"
    files = {
        "test_input": "test_input.npy",
        "test_output": "test_output.npy",
        "sample_input": "sample_input.png",
        "sample_output": "sample_output.tif",
        "cover": "cover.jpg",
        "documentation": "README.md",
        "torchscript": "weights_torchscript.pt",
        "onnx": "weights.onnx",
    }

    # test tensors: a centred crop with real context (the halo) and the bundle network's output for it as it is;
    # the same as images (sample tensors)
    crop = centre_crop(pixels, test_size + 2 * halo)
    expected = bundle_probabilities(network, crop, intensity_max, overlap_tile=False)
    np.save(out_dir / files["test_input"], crop[None].astype(np.float32))
    np.save(out_dir / files["test_output"], expected[None])
    sample = crop[0] if in_channels == 1 else np.moveaxis(crop, 0, -1)
    write_png(
        out_dir / files["sample_input"],
        np.clip(np.rint(sample), 0, 255).astype(np.uint8) if intensity_max <= 255 else to_uint8(sample),
    )
    tifffile.imwrite(out_dir / files["sample_output"], expected, compression="zlib")
    cover = centre_crop(pixels, cover_size)
    write_cover(out_dir / files["cover"], cover, bundle_probabilities(network, cover, intensity_max).argmax(0))

    # weights
    kwargs = architecture_kwargs(network)
    if kwargs is not None:
        files.update(state_dict="weights.pt", architecture="torch_unet.py")
        save_state_dict(network, out_dir / files["state_dict"])
        shutil.copyfile(torch_unet.__file__, out_dir / files["architecture"])
    else:
        logger.info(
            "%s is a %s: no pytorch_state_dict weights (their architecture source is the U-Net's); "
            "TorchScript and ONNX only.",
            model,
            type(network).__name__,
        )
    probability_model = ProbabilityNetwork(network).eval()
    save_torchscript(probability_model, out_dir / files["torchscript"])
    save_onnx(probability_model, out_dir / files["onnx"], torch.as_tensor(crop[None]) / intensity_max)

    command = command or f"python -m scripts.export bioimageio --out {out_dir} --image {image} --model {model}"
    (out_dir / files["documentation"]).write_text(
        _documentation(name, class_names, intensity_max, halo, size_min, div, model, model_card, command, architecture),
        encoding="utf-8",
    )
    sha256 = {role: file_sha256(out_dir / f) for role, f in files.items()}
    rdf = package_description(
        name=name,
        description=(
            f"{architecture} segmentation of ssTEM sections of neural tissue into {', '.join(class_names)} "
            f"(softmax probabilities); from the MONAI bundle Microscopy cell segmentation, version {scripts.__version__}."
        ),
        authors=list(authors) if authors else [str(metadata.get("authors", "unknown"))],
        license=license,
        version=str(scripts.__version__),
        in_channels=in_channels,
        class_names=class_names,
        intensity_max=intensity_max,
        size_min=size_min,
        size_step=div,
        halo=halo,
        state_dict_kwargs=kwargs,
        sha256=sha256,
        files=files,
    )
    rdf_path = out_dir / "rdf.yaml"
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False, width=120), encoding="utf-8")
    if zip_path is not None:
        Path(zip_path).parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name_ in ["rdf.yaml", *files.values()]:
                zf.write(out_dir / name_, name_)
    return rdf_path
