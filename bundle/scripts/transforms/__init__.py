from .atomic_save_image import AtomicSaveImaged, atomic_writer
from .border_weights import UNetBorderWeightMap, UNetBorderWeightMapd, border_distances
from .difficult_pixels import (
    DifficultPixelRefine,
    DifficultPixelRefined,
    confidence_map,
    difficult_pixel_mask,
    refine_difficult_pixels,
)
from .intensity import ScaleIntensityByRule, ScaleIntensityByRuled
from .load_section import LoadSectiond, SectionReader
from .mirror_pad import PAD_MODES, MirrorSpatialPad, MirrorSpatialPadd, mirror_pad
from .save_probabilities import SaveProbabilityMaps, SaveProbabilityMapsd, read_probability_map
