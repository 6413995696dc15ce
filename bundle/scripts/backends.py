"""Seeds and GPU speed/reproducibility switches (set by each workflow's pre-flight), and where a network runs.

- ``deterministic`` (config key, default ``true``): :func:`monai.utils.set_determinism` as before --
  ``cudnn.deterministic=True, cudnn.benchmark=False``, reproducible GPU runs. ``false`` keeps the seeds but lets
  cuDNN pick the fastest convolution algorithms for the shapes it sees (``cudnn.benchmark=True``,
  ``cudnn.deterministic=False``): the fast choice when tile and patch shapes are fixed, as in the bundle, at the
  price of run-to-run differences on a GPU. CPU results do not depend on it (cuDNN is not used on a CPU).
- ``allow_tf32`` (config key, default ``true``): whether float32 convolutions and matrix products may run on
  TensorFloat-32 tensor cores (Ampere and newer GPUs: 10-bit mantissa, about 1e-3 relative error, much faster).
  ``true`` is PyTorch's own default for cuDNN convolutions (the bundle's networks are convolutions; this also
  allows it for matrix products). ``false``: full float32 (IEEE) precision, e.g. to compare a GPU run with a CPU
  run to 1e-5. Under AMP (``amp``, on by default on a GPU) most convolutions run in float16 anyway. No effect on a
  CPU.
"""

from __future__ import annotations

import torch
from monai.utils import set_determinism

__all__ = ["compiled", "place_network", "set_backends"]


def set_backends(seed: int | None = 0, deterministic: bool = True, allow_tf32: bool = True) -> None:
    """Seed Python, NumPy and PyTorch and set cuDNN's determinism and TF32 flags (module docstring: the policy).

    Args:
        seed: the random seed (:func:`monai.utils.set_determinism`).
        deterministic: ``True``: ``cudnn.deterministic=True, cudnn.benchmark=False`` (reproducible GPU runs);
            ``False``: ``cudnn.benchmark=True, cudnn.deterministic=False`` (fastest algorithms for fixed shapes).
        allow_tf32: allow TF32 for float32 cuDNN convolutions and CUDA matrix products.

    Raises:
        ValueError: ``deterministic`` or ``allow_tf32`` is not a boolean (e.g. the string ``"false"``).
    """
    for key, value in (("deterministic", deterministic), ("allow_tf32", allow_tf32)):
        if not isinstance(value, bool):
            raise ValueError(f"config key `{key}` must be true or false, got {value!r}.")
    set_determinism(seed=seed)
    if not deterministic:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32


def place_network(network: torch.nn.Module, device: torch.device | str, channels_last: bool = False) -> torch.nn.Module:
    """Move ``network`` to ``device``; with ``channels_last``, also lay out its 4-D weights channels-last (NHWC).

    oneDNN's CPU convolutions run faster in that layout (train.json's ``channels_last``, default on for a CPU); the
    activations and gradients follow the weights. A network with 5-D weights (3-D convolutions) is left contiguous:
    channels-last is defined for 4-D tensors only. Values are unchanged; a checkpoint written from a channels-last
    network loads into a contiguous one and vice versa.

    Returns:
        ``network`` (moved in place, as ``Module.to`` does).
    """
    network = network.to(device)
    if channels_last and not any(p.ndim == 5 for p in network.parameters()):
        network = network.to(memory_format=torch.channels_last)
    return network


def compiled(network: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """``torch.compile(network)`` when ``enabled`` (train.json's ``compile``), else ``network`` itself.

    The compiled module shares ``network``'s parameters: the trainer steps the compiled view while checkpoints and
    ``model.pt`` save the plain network (no ``_orig_mod.`` prefixes).
    """
    return torch.compile(network) if enabled else network
