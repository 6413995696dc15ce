"""Networks of the bundle: the original U-Net (same/valid padding), X-Net, and the Double U-Net and Ensemble U-Net
baselines. All take ``spatial_dims, in_channels, out_channels, features, padding, batch_norm, dropout``, return raw
logits, and expose their size rule (``padding``, ``depth``, ``size_divisor``, ``margin``, ``receptive_field``,
``output_size()``, ``valid_input_size()``) and ``num_outputs`` (length of the training-mode output tuple; the
multi-output networks return one tensor in eval mode). Each records the arguments that built it in ``init_args``
(:func:`network_config` / :func:`build_network`);
:func:`network_from_checkpoint` builds the network a saved ``model.pt`` describes, with its weights;
:func:`finetune_network` builds it for other classes or input channels, with every saved tensor that fits."""

from scripts.networks.baselines import DoubleUNet, EnsembleUNet
from scripts.networks.checkpoint import (
    MODEL_KEY,
    SHIPPED_MODELS,
    CheckpointLoadMixin,
    CheckpointMismatchError,
    ModelError,
    ModelFileError,
    check_model_info,
    check_state_dict,
    model_intensity_statistics,
    network_from_checkpoint,
    read_checkpoint,
    require_model_file,
    shipped_model_path,
    split_checkpoint,
    trained_or_pretrained,
)
from scripts.networks.config import (
    build_network,
    describe_network,
    init_args,
    is_buildable,
    network_config,
    recorded_network,
)
from scripts.networks.finetune import FineTuneReport, finetune_network, transfer_weights
from scripts.networks.model_info import MODEL_INFO_KEY, ModelInfo, describe_mismatch
from scripts.networks.unet import UNet
from scripts.networks.xnet import XNET_SKIP_MODES, XNet

__all__ = [
    "DoubleUNet",
    "EnsembleUNet",
    "UNet",
    "XNET_SKIP_MODES",
    "XNet",
    "MODEL_INFO_KEY",
    "MODEL_KEY",
    "CheckpointLoadMixin",
    "CheckpointMismatchError",
    "ModelError",
    "ModelFileError",
    "check_model_info",
    "check_state_dict",
    "model_intensity_statistics",
    "FineTuneReport",
    "finetune_network",
    "transfer_weights",
    "network_from_checkpoint",
    "read_checkpoint",
    "require_model_file",
    "SHIPPED_MODELS",
    "shipped_model_path",
    "split_checkpoint",
    "trained_or_pretrained",
    "ModelInfo",
    "build_network",
    "describe_mismatch",
    "init_args",
    "describe_network",
    "is_buildable",
    "network_config",
    "recorded_network",
]
