"""The bundle's five classes (as in Fujii et al., X-Net, on the Drosophila ssTEM dataset).

Class index order (what a label map stores, what output channel ``i`` of a network means):

=====  =====================  ==========================================
index  name                   Drosophila ``stack1/labels`` grey values
=====  =====================  ==========================================
0      intracellular          255
1      membrane               0, 32, 64, 96 (oriented membranes), 128 (junction)
2      glia_extracellular     159
3      mitochondria           191
4      synapse                223
=====  =====================  ==========================================

Why this order: index 0 is what most label viewers (MONAI Label clients, 3D Slicer, QuPath, napari) draw as
"nothing", so it goes to the class that fills the cells, intracellular, and every structure a user looks at
(membranes, glia, mitochondria, synapses) is drawn. No class is *named* "background": MONAI Label drops a
label called "background" from its label list, and all five classes are real tissue that the X-Net paper scores
in its mean IoU.
"""

from __future__ import annotations

import colorsys

CLASS_NAMES: tuple[str, ...] = ("intracellular", "membrane", "glia_extracellular", "mitochondria", "synapse")
NUM_CLASSES: int = len(CLASS_NAMES)

INTRACELLULAR, MEMBRANE, GLIA, MITOCHONDRIA, SYNAPSE = range(NUM_CLASSES)

#: Drosophila ssTEM ``stack1/labels`` grey value -> class index.
DROSOPHILA_VALUE_MAP: dict[int, int] = {
    0: MEMBRANE,
    32: MEMBRANE,
    64: MEMBRANE,
    96: MEMBRANE,
    128: MEMBRANE,
    159: GLIA,
    191: MITOCHONDRIA,
    223: SYNAPSE,
    255: INTRACELLULAR,
}

#: Display colours (RGB) for overlays and legends, one per class index.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 230, 230),  # intracellular: light grey
    (220, 20, 60),  # membrane: crimson
    (30, 144, 255),  # glia / extracellular: blue
    (50, 205, 50),  # mitochondria: green
    (255, 215, 0),  # synapse: gold
)


def class_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """One display colour per class for any class count: ``CLASS_COLORS`` first, then distinct generated hues.

    Args:
        num_classes: number of classes (at least 1).

    Returns:
        ``num_classes`` RGB triples (0..255); the first ``min(num_classes, 5)`` are ``CLASS_COLORS``.

    Raises:
        ValueError: when ``num_classes`` is below 1.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
    colors = list(CLASS_COLORS[:num_classes])
    k = 0
    while len(colors) < num_classes:  # golden-ratio hue steps: well separated for any count
        hue = (0.1 + 0.618033988749895 * k) % 1.0
        value = 0.95 if k % 2 == 0 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
        k += 1
    return tuple(colors)
