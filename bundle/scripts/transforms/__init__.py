
from .difficult_pixels import (
    DifficultPixelRefine,
    DifficultPixelRefined,
    confidence_map,
    difficult_pixel_mask,
    refine_difficult_pixels,
)
