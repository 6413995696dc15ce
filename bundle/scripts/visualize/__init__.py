"""Pictures: overlays, confidence maps and difficult pixels, feature maps, training curves, HTML gallery."""

from .confidence import colormap_rgb, confidence_to_rgb, difficult_to_grey
from .feature_maps import (
    FeatureMapCapture,
    FeatureMapHook,
    channel_mean,
    feature_map_to_rgb,
    last_feature_modules,
    pointwise_conv_names,
)
from .gallery import DEFAULT_COLUMNS, write_gallery
from .overlay import grey_image, label_to_rgb, legend_image, overlay_labels
from .writer import PictureWriter

_CURVES = ("load_csv_scalars", "load_tensorboard_scalars", "plot_training_curves", "write_training_curves")


def __getattr__(name: str):
    # curves is imported on first use, so that `python -m scripts.visualize.curves` runs it only once
    if name in _CURVES:
        from . import curves

        return getattr(curves, name)
    raise AttributeError(f"module 'scripts.visualize' has no attribute {name!r}")
