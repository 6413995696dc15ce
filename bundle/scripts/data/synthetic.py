"""Synthetic EM-like 2D cell images with the bundle's five classes, deterministic by seed.

A stand-in for serial-section TEM of neural tissue (like the Drosophila ssTEM stack) for tests, demos and
smoke training, when the real data is absent. Each sample is drawn as follows (all vectorised numpy/scipy):

- cells: a jittered, multiplicatively weighted Voronoi tessellation of smoothly warped coordinates, so cells
  have varied sizes and curved walls;
- membranes (class 1): a band of varying thickness along each cell wall (thickness per cell pair, modulated
  along the wall);
- glia / extracellular (class 2): whole "glia" cells with a darker fibrous texture, plus tapered gaps opened
  along some cell walls, lined by membrane on both sides;
- mitochondria (class 3): elongated ellipses inside some cells, with a dark double rim and transverse cristae
  stripes;
- synapses (class 4): small very dark thickenings of the membrane, with a cluster of vesicles beside them;
- intracellular (class 0): the cytoplasm, bright with granular texture, per-cell brightness, dark distractor
  granules and vesicles (which are intracellular, so darkness alone does not give the class);
- then blur, an uneven illumination field and noise.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .classes import GLIA, INTRACELLULAR, MEMBRANE, MITOCHONDRIA, SYNAPSE
from .datalist import write_json
from .io import write_png

__all__ = ["make_sample", "generate_dataset", "ensure_synthetic_dataset", "GENERATOR_VERSION"]

logger = logging.getLogger(__name__)

#: Bumped whenever the drawing changes, so :func:`ensure_synthetic_dataset` regenerates stale data.
GENERATOR_VERSION = 2  # 2: the datalist also lists the images as *_sections (same images as 1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma, amplitude: float = 1.0) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation times ``amplitude``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field * (amplitude / (field.std() + 1e-8))


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size):
        h, w = (int(s) for s in size)
    else:
        raise TypeError(f"size must be an int or a pair of ints (H, W), got {size!r}.")
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least 32 pixels per side, got {(h, w)}.")
    return h, w


def make_sample(size=256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic EM-like image and its class-index label map.

    Args:
        size: side length of the square sample, or ``(H, W)``; at least 32. Structure sizes are in pixels
            (about the scale of the Drosophila ssTEM images at 4.6 nm/pixel, cells 30-80 px across), so a larger
            size gives more cells, not larger ones.
        seed: random seed; the same ``(size, seed)`` always gives the same arrays.

    Returns:
        ``(image, label)``: ``uint8`` arrays of shape ``(H, W)``; ``label`` holds class indices 0..4
        (see :mod:`scripts.data.classes`).

    Raises:
        TypeError: when ``size`` is not an int or a pair of ints.
        ValueError: when a side is below 32 pixels.
    """
    h, w = _parse_size(size)
    rng = np.random.default_rng(seed)
    shape = (h, w)

    # ---- cell tessellation on warped coordinates ----
    spacing = rng.uniform(40.0, 56.0)  # mean distance between cell centres (px)
    gy, gx = max(int(round(h / spacing)), 1) + 2, max(int(round(w / spacing)), 1) + 2
    cy, cx = np.meshgrid(
        (np.arange(gy) - 1 + 0.5) * h / (gy - 2), (np.arange(gx) - 1 + 0.5) * w / (gx - 2), indexing="ij"
    )
    seeds = np.stack([cy.ravel(), cx.ravel()], 1) + rng.uniform(-0.42, 0.42, (cy.size, 2)) * spacing
    # extra small cells (thin neurites, glial processes) between the big ones
    n_small = rng.poisson(0.25 * cy.size)
    seeds = np.concatenate([seeds, rng.uniform((-0.1 * h, -0.1 * w), (1.1 * h, 1.1 * w), (n_small, 2))])
    n = len(seeds)
    weight = rng.uniform(0.8, 1.25, n)  # multiplicative weights: bigger weight, smaller cell
    weight[n - n_small :] *= rng.uniform(1.15, 1.5, n_small)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    warp_amp = rng.uniform(3.0, 7.0)
    py = yy + _smooth_noise(rng, shape, 10.0, warp_amp)
    px = xx + _smooth_noise(rng, shape, 10.0, warp_amp)
    pts = np.stack([py.ravel(), px.ravel()], 1)
    dist, idx = cKDTree(seeds).query(pts, k=6)  # the two nearest by weighted distance are among these
    wdist = dist * weight[idx]
    order = np.argsort(wdist, axis=1)[:, :2]
    rows = np.arange(len(pts))
    i1, i2 = idx[rows, order[:, 0]], idx[rows, order[:, 1]]
    d1, d2 = wdist[rows, order[:, 0]], wdist[rows, order[:, 1]]
    wall = ((d2 - d1) / (2.0 * np.sqrt(weight[i1] * weight[i2]))).reshape(shape)  # ~distance to the cell wall
    cell = i1.reshape(shape)
    other = i2.reshape(shape)

    # ---- per cell and per wall properties ----
    is_glia = rng.random(n) < rng.uniform(0.06, 0.16)
    half_t = rng.uniform(0.9, 2.2, n)  # membrane half thickness per cell
    cell_rand = rng.random(n)
    along = _smooth_noise(rng, shape, 6.0)  # modulation along walls
    thick = 0.5 * (half_t[cell] + half_t[other]) * np.clip(1.0 + 0.3 * along, 0.5, 1.6)
    # tapered extracellular gaps along ~15% of walls between neurons
    u, v = cell_rand[cell] + cell_rand[other], cell_rand[cell] * cell_rand[other]  # symmetric in the pair
    pair_rand = np.modf(np.abs(np.sin(78.233 * u + 12.9898 * v)) * 43758.5453)[0]  # hash -> uniform in [0, 1)
    gap_width = (
        (pair_rand < rng.uniform(0.08, 0.2))
        * np.clip(_smooth_noise(rng, shape, 8.0, 1.0) + 0.5, 0.0, 1.5)
        * rng.uniform(2.0, 5.0)
    )

    label = np.full(shape, INTRACELLULAR, np.uint8)
    label[is_glia[cell]] = GLIA
    gap = wall < gap_width
    label[gap] = GLIA
    membrane = (wall >= gap_width) & (wall < gap_width + thick)
    label[membrane] = MEMBRANE
    interior = (label == INTRACELLULAR) & (wall >= gap_width + thick + 2.0)

    # ---- mitochondria: elongated ellipses inside some neurons ----
    mito_val = np.zeros(shape)
    nn_dist = cKDTree(seeds).query(seeds, k=2)[0][:, 1]
    for c in np.flatnonzero(~is_glia & (rng.random(n) < rng.uniform(0.25, 0.45))):
        for _ in range(1 + int(rng.random() < 0.3)):
            a = min(rng.uniform(10.0, 26.0), 0.6 * nn_dist[c] / weight[c])
            b = max(a * rng.uniform(0.3, 0.6), 4.0)
            theta = rng.uniform(0, np.pi)
            centre = seeds[c] + rng.uniform(-0.25, 0.25, 2) * nn_dist[c] / weight[c]
            y0, y1 = int(max(centre[0] - a - 10, 0)), int(min(centre[0] + a + 10, h))
            x0, x1 = int(max(centre[1] - a - 10, 0)), int(min(centre[1] + a + 10, w))
            if y1 <= y0 or x1 <= x0:
                continue
            dy, dx = py[y0:y1, x0:x1] - centre[0], px[y0:y1, x0:x1] - centre[1]
            u = dy * np.cos(theta) + dx * np.sin(theta)
            v = -dy * np.sin(theta) + dx * np.cos(theta)
            r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            inside = (r < 1.0) & interior[y0:y1, x0:x1] & (cell[y0:y1, x0:x1] == c)
            if inside.sum() < 12:
                continue
            label[y0:y1, x0:x1][inside] = MITOCHONDRIA
            period = rng.uniform(3.5, 6.0)
            cristae = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + 2.0 * np.sin(v / b * 1.5))
            rim = np.clip((r - 0.75) / 0.25, 0, 1)
            mito_val[y0:y1, x0:x1][inside] = (115.0 - 45.0 * cristae - 45.0 * rim)[inside]

    # ---- synapses: dark thickenings on walls between two neurons, with vesicles on one side ----
    vesicle_centres = []
    band = (wall < gap_width + thick + 2.0) & ~is_glia[cell] & ~is_glia[other] & (gap_width == 0)
    cand = np.flatnonzero(band & (label == MEMBRANE))
    n_syn = 1 + rng.poisson(rng.uniform(2.0, 5.0) * h * w / 256.0**2)
    synapse = np.zeros(shape, bool)
    for p in rng.choice(cand, size=min(n_syn, len(cand)), replace=False) if len(cand) else []:
        y, x = divmod(int(p), w)
        rad = rng.uniform(3.0, 6.5)
        y0, y1, x0, x1 = max(y - 8, 0), min(y + 9, h), max(x - 8, 0), min(x + 9, w)
        disk = (yy[y0:y1, x0:x1] - y) ** 2 + ((xx[y0:y1, x0:x1] - x) * rng.uniform(0.6, 1.0)) ** 2 < rad**2
        synapse[y0:y1, x0:x1] |= disk & band[y0:y1, x0:x1]
        # vesicles in the presynaptic cell, a few px away from the wall
        for _ in range(rng.integers(4, 10)):
            vy, vx = y + rng.normal(0, 5.0), x + rng.normal(0, 5.0)
            vesicle_centres.append((vy, vx, rng.uniform(1.3, 2.2)))
    label[synapse] = SYNAPSE

    # distractor vesicles scattered in cytoplasm
    n_ves = rng.poisson(rng.uniform(10, 30) * h * w / 256.0**2)
    for vy, vx in rng.uniform((0, 0), (h, w), (n_ves, 2)):
        vesicle_centres.append((vy, vx, rng.uniform(1.2, 2.4)))

    # ---- intensities ----
    cell_bright = rng.uniform(140.0, 185.0, n)
    img = cell_bright[cell] + _smooth_noise(rng, shape, 1.0, 14.0) + _smooth_noise(rng, shape, 4.0, 8.0)
    fibres = ndimage.gaussian_filter(rng.standard_normal(shape), (0.8, 5.0))
    fibres = ndimage.rotate(fibres, rng.uniform(0, 180), reshape=False, mode="wrap")
    glia_img = rng.uniform(85.0, 110.0) + fibres * (22.0 / (fibres.std() + 1e-8)) + _smooth_noise(rng, shape, 3.0, 8.0)
    img = np.where(label == GLIA, glia_img, img)
    # dark granules (ribosome-like) in cytoplasm: intracellular, but dark
    granule_sigma = 0.9
    granules = ndimage.gaussian_filter((rng.random(shape) < 0.004).astype(float), granule_sigma)
    granules *= 60.0 * 2 * np.pi * granule_sigma**2  # peak darkening 60 grey levels
    img = img - np.where(label == INTRACELLULAR, granules, 0.0)
    # vesicles: dark ring with a lighter centre, drawn only on the cytoplasm
    if vesicle_centres:
        ves = np.zeros(shape)
        for vy, vx, vr in vesicle_centres:
            iy, ix = int(vy), int(vx)
            y0, y1, x0, x1 = max(iy - 4, 0), min(iy + 5, h), max(ix - 4, 0), min(ix + 5, w)
            if y1 <= y0 or x1 <= x0:
                continue
            rr = np.sqrt((yy[y0:y1, x0:x1] - vy) ** 2 + (xx[y0:y1, x0:x1] - vx) ** 2)
            ves[y0:y1, x0:x1] = np.maximum(ves[y0:y1, x0:x1], np.exp(-((rr - vr) ** 2) / 0.5))
        img = img - np.where(label == INTRACELLULAR, 70.0 * ves, 0.0)
    mem_level = rng.uniform(45.0, 70.0)
    img = np.where(label == MEMBRANE, mem_level + _smooth_noise(rng, shape, 1.0, 10.0), img)
    img = np.where(label == MITOCHONDRIA, mito_val + _smooth_noise(rng, shape, 0.8, 8.0), img)
    img = np.where(label == SYNAPSE, rng.uniform(20.0, 35.0) + _smooth_noise(rng, shape, 1.0, 6.0), img)

    img = ndimage.gaussian_filter(img, rng.uniform(0.7, 1.3))
    coarse = rng.standard_normal((4, 4)) * rng.uniform(0.03, 0.1)  # uneven illumination, smooth over the image
    illum = 1.0 + ndimage.zoom(coarse, (h / 4.0, w / 4.0), order=3, mode="nearest")[:h, :w]
    img = img * illum + rng.normal(0.0, rng.uniform(7.0, 13.0), shape)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return image, label


_SPLITS = (("training", "train"), ("validation", "val"), ("testing", "test"))


def _params(num_train: int, num_val: int, num_test: int, size, seed: int) -> dict:
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}.")
    if num_train < 1:
        raise ValueError(f"num_train must be at least 1, got {num_train}.")
    h, w = _parse_size(size)
    return {
        "generator": "scripts.data.synthetic",
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "size": [h, w],
        "seed": int(seed),
    }


def generate_dataset(
    out_dir: str | os.PathLike, num_train: int = 16, num_val: int = 4, num_test: int = 4, size=256, seed: int = 0
) -> Path:
    """Write a synthetic dataset in the bundle's layout.

    Writes ``images/{train,val,test}_NNN.png``, ``labels/...`` (same names), ``datalist.json`` (keys
    ``training``, ``validation``, ``testing``, and the same lists as ``training_sections``, ``validation_sections``,
    ``testing_sections``: each sample is a whole image; paths relative to ``out_dir``) and ``manifest.json`` (the
    parameters). Sample ``i`` of a split uses its own seed derived from ``(seed, split, i)``, so adding samples
    does not change the existing ones.

    Args:
        out_dir: output folder (created).
        num_train: number of training samples (at least 1).
        num_val: number of validation samples.
        num_test: number of testing samples.
        size: sample side length or ``(H, W)``, see :func:`make_sample`.
        seed: dataset seed.

    Returns:
        Path of ``datalist.json``.

    Raises:
        ValueError: for negative counts, no training samples, or a bad ``size``.
    """
    params = _params(num_train, num_val, num_test, size, seed)
    out = Path(out_dir)
    counts = {"training": num_train, "validation": num_val, "testing": num_test}
    datalist: dict = {"name": "synthetic EM-like cells", "description": "generated by scripts.data.synthetic"}
    for split_id, (key, prefix) in enumerate(_SPLITS):
        items = []
        for i in range(counts[key]):
            sample_seed = int(np.random.SeedSequence([int(seed), split_id, i]).generate_state(1)[0])
            image, label = make_sample(tuple(params["size"]), sample_seed)
            name = f"{prefix}_{i:03d}.png"
            write_png(out / "images" / name, image)
            write_png(out / "labels" / name, label)
            items.append({"image": f"images/{name}", "label": f"labels/{name}"})
        datalist[key] = items
        datalist[f"{key}_sections"] = items  # whole images, for experiments/recipe/section_patches.json
    datalist_path = write_json(out / "datalist.json", datalist)
    # the manifest goes last: its presence means the dataset is complete
    write_json(out / "manifest.json", params)
    logger.info("wrote synthetic dataset (%d/%d/%d samples) to %s", num_train, num_val, num_test, out)
    return datalist_path


def ensure_synthetic_dataset(
    out_dir: str | os.PathLike, num_train: int = 16, num_val: int = 4, num_test: int = 4, size=256, seed: int = 0
) -> str:
    """Return the synthetic datalist path under ``out_dir``, generating the dataset only when needed.

    Regenerates when ``manifest.json`` or any listed file is missing, or when the parameters (or the
    generator version) differ from those recorded; otherwise it only checks that the files exist. Safe to call
    at the start of every run (e.g. from a bundle config).

    Args: as :func:`generate_dataset`.

    Returns:
        The datalist path as a string.
    """
    params = _params(num_train, num_val, num_test, size, seed)
    out = Path(out_dir)
    manifest, datalist_path = out / "manifest.json", out / "datalist.json"
    try:
        recorded = json.loads(manifest.read_text())
        datalist = json.loads(datalist_path.read_text())
        up_to_date = recorded == params and all(
            (out / item[k]).is_file() for key, _ in _SPLITS for item in datalist[key] for k in ("image", "label")
        )
    except (OSError, ValueError, KeyError, TypeError):
        up_to_date = False
    if up_to_date:
        return str(datalist_path)
    if manifest.exists():
        manifest.unlink()
    return str(generate_dataset(out, num_train, num_val, num_test, tuple(params["size"]), seed))
