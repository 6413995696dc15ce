"""Exports of a trained model to the formats of other tools: ``python -m scripts.export bioimageio ...`` writes a
BioImage Model Zoo package (:mod:`scripts.export.bioimageio`) that Fiji (deepImageJ), QuPath, ilastik and
bioimageio.core run. MONAI's own exports (TorchScript, ONNX) are ``python -m monai.bundle ckpt_export/onnx_export``."""

from scripts.export.bioimageio import export_bioimageio

__all__ = ["export_bioimageio"]
