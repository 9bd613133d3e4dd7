"""napari sample data: synthetic TEM and QPI calibration pairs, and a real cell phase image.

Each function returns a list of napari layer-data tuples ``(data, kwargs, layer_type)`` built
from plain numpy arrays; nothing here imports napari or torch (the simulators are imported
inside the functions, so listing napari's sample menu costs nothing).

Every layer carries ``metadata["im2im_uq"]``, a dict that the plugin's widgets read:
``role`` ("input", "truth" or "labels"), ``source`` ("synthetic" or where the image comes from),
``scale_factor`` (super-resolution factor between input and truth, 1 when they share a grid)
and, where useful, ``axes``, ``channels``, ``classes`` and the generator's parameters.
"""

from __future__ import annotations

__all__ = ["sample_cells_phase", "sample_qpi", "sample_tem"]

TEM_SHAPE = (3, 384, 384)
TEM_FACTOR = 4
QPI_SHAPE = (256, 256)
QPI_DIRECTIONS = ("top", "bottom")
QPI_PHOTONS = 2000.0


def _meta(role, **extra):
    return {"im2im_uq": {"role": role, **extra}}


def sample_tem(*, seed=0):
    """Synthetic TEM calibration pair for 4x super-resolution, with membrane/mitochondria labels.

    A 3 x 384 x 384 synthetic EM volume (:func:`~napari_im2im_uq.data.synthetic_em_tissue`) is the
    high-resolution truth; the low-resolution input is what a microscope with a 4x coarser
    pixel and a short exposure records (:func:`~napari_im2im_uq.data.degrade_tem`: 4 x 4
    binning, then Poisson counts at ``TEM_PHOTONS`` = 200 per pixel of intensity 1 and Gaussian
    read noise of ``TEM_READ_NOISE`` = 2 counts; the degradation the zoo's tem-sr4x-quantile was
    trained on), shown with ``scale=(1, 4, 4)`` and ``translate=(0, 1.5, 1.5)`` over the truth:
    each input pixel is drawn over the 4 x 4 block of truth pixels it averages, and the model's
    prediction (whose pixels are placed inside the input pixel they come from) lies on the truth.

    Parameters
    ----------
    seed : int
        Seed of the synthetic tissue.

    Returns
    -------
    list of tuple
        ``[(truth, kwargs, "image"), (input, kwargs, "image"), (annotation, kwargs, "labels"),
        (labels, kwargs, "labels")]`` named "tem truth (high-res)", "tem input (low-res)",
        "tem membrane annotation" (ground truth for the membrane segmentation model as the
        Calibrate widget reads it: 0 = not annotated, 1 = rest, 2 = membrane, in a random plan
        of 24 tiles of 64 x 64) and "tem labels" (0 background, 1 membrane, 2 mitochondria
        everywhere); both label layers are hidden at first.

    Examples
    --------
    >>> from napari_im2im_uq._sample_data import sample_tem
    >>> [(kw["name"], data.shape) for data, kw, _ in sample_tem()]  # doctest: +NORMALIZE_WHITESPACE
    [('tem truth (high-res)', (3, 384, 384)), ('tem input (low-res)', (3, 96, 96)),
     ('tem membrane annotation', (3, 384, 384)), ('tem labels', (3, 384, 384))]
    """
    from .data import degrade_tem, synthetic_em_tissue
    from .data._em import TEM_PHOTONS, TEM_READ_NOISE

    tissue = synthetic_em_tissue(TEM_SHAPE, seed=seed)
    truth = tissue["image"]
    low = degrade_tem(truth, factor=TEM_FACTOR, mode="area", photons=TEM_PHOTONS,
                      read_noise=TEM_READ_NOISE, seed=seed)
    degradation = {"function": "degrade_tem", "factor": TEM_FACTOR, "mode": "area",
                   "photons": TEM_PHOTONS, "read_noise": TEM_READ_NOISE, "seed": seed}
    common = {
        "source": "synthetic",
        "scale_factor": TEM_FACTOR,
        "axes": ("planes", "rows", "cols"),
        "generator": {"function": "synthetic_em_tissue", "shape": TEM_SHAPE, "seed": seed},
    }
    f = float(TEM_FACTOR)
    return [
        (
            truth,
            {
                "name": "tem truth (high-res)",
                "contrast_limits": (0.0, 1.0),
                "metadata": _meta("truth", **common),
            },
            "image",
        ),
        (
            low,
            {
                "name": "tem input (low-res)",
                "scale": (1.0, f, f),
                "translate": (0.0, (f - 1.0) / 2.0, (f - 1.0) / 2.0),
                "contrast_limits": (0.0, 1.0),
                "metadata": _meta(
                    "input", degradation=degradation, **common
                ),
            },
            "image",
        ),
        (
            _partial_annotation(tissue["labels"], seed=seed),
            {
                "name": "tem membrane annotation",
                "opacity": 0.5,
                "visible": False,
                "metadata": _meta(
                    "labels",
                    classes={0: "not annotated", 1: "rest", 2: "membrane"},
                    annotated_tiles=ANNOTATED_TILES,
                    **common,
                ),
            },
            "labels",
        ),
        (
            tissue["labels"],
            {
                "name": "tem labels",
                "opacity": 0.5,
                "visible": False,
                "metadata": _meta(
                    "labels",
                    classes={0: "background", 1: "membrane", 2: "mitochondria"},
                    **common,
                ),
            },
            "labels",
        ),
    ]


ANNOTATED_TILES = {"tile_shape": (64, 64), "n_tiles": 24}


def _partial_annotation(labels, *, seed):
    """Membrane ground truth as a Labels layer wants it: 0 = not annotated, 1 rest, 2 membrane.

    Only a random plan of 24 tiles of 64 x 64 (over all planes) is annotated, as a person would
    annotate the tiles of a calibration plan; the rest is 0.
    """
    import numpy as np

    th, tw = ANNOTATED_TILES["tile_shape"]
    planes, rows, cols = labels.shape
    grid = [(z, r, c) for z in range(planes) for r in range(0, rows - th + 1, th)
            for c in range(0, cols - tw + 1, tw)]
    pick = np.random.default_rng(seed).choice(len(grid), ANNOTATED_TILES["n_tiles"],
                                              replace=False)
    out = np.zeros(labels.shape, dtype=np.uint8)
    for i in pick:
        z, r, c = grid[i]
        out[z, r:r + th, c:c + tw] = np.where(labels[z, r:r + th, c:c + tw] == 1, 2, 1)
    return out


def sample_qpi(*, seed=0):
    """Synthetic QPI calibration pair: two opposite oblique-illumination images and the phase.

    A 256 x 256 cell-like phase object (:func:`~napari_im2im_uq.data.cell_phase_object`, up to
    3 rad) imaged by :func:`~napari_im2im_uq.data.simulate_dpc` with the optics of the real
    ``qpi_dpc_cells`` data (0.523 um, objective NA 0.5, half-annulus NA 0.45-0.5, 0.12 um per
    pixel), top and bottom halves, with Poisson noise of 2000 photons per empty-field pixel.

    The two images form ONE layer of shape (2, rows, cols), channels first (channel 0 = top,
    1 = bottom), without napari's ``channel_axis`` splitting: this is the layout a two-channel
    model takes, and napari shows the channel as a slider. The layer metadata records
    ``channels=("top", "bottom")`` and ``channel_axis=0``.

    Parameters
    ----------
    seed : int
        Seed of the phase object and of the shot noise.

    Returns
    -------
    list of tuple
        ``[(images, kwargs, "image"), (phase, kwargs, "image")]`` named "qpi oblique images"
        (float32, (2, 256, 256), empty field = 1) and "qpi phase truth" (float32 radians).

    Examples
    --------
    >>> from napari_im2im_uq._sample_data import sample_qpi
    >>> [(kw["name"], data.shape) for data, kw, _ in sample_qpi()]
    [('qpi oblique images', (2, 256, 256)), ('qpi phase truth', (256, 256))]
    """
    from .data import cell_phase_object, simulate_dpc

    obj = cell_phase_object(QPI_SHAPE, seed=seed)
    optics = {
        "wavelength": 0.523,
        "na_objective": 0.5,
        "na_illumination": (0.45, 0.5),
        "pixel_size": 0.12,
        "illumination": "half-annulus",
    }
    images = simulate_dpc(
        obj["phase"], obj["absorption"], directions=QPI_DIRECTIONS, photons=QPI_PHOTONS,
        seed=seed, **optics,
    )
    common = {"source": "synthetic", "scale_factor": 1, "optics": optics, "seed": seed}
    return [
        (
            images,
            {
                "name": "qpi oblique images",
                "metadata": _meta(
                    "input",
                    axes=("channels", "rows", "cols"),
                    channel_axis=0,
                    channels=QPI_DIRECTIONS,
                    photons=QPI_PHOTONS,
                    **common,
                ),
            },
            "image",
        ),
        (
            obj["phase"],
            {
                "name": "qpi phase truth",
                "colormap": "magma",
                "metadata": _meta("truth", axes=("rows", "cols"), units="rad", **common),
            },
            "image",
        ),
    ]


def sample_cells_phase():
    """Return a real quantitative phase image of a cell, shipped with scikit-image (no download).

    ``skimage.data.cell()``: a cell floating in saline, phase retrieved from a digital hologram
    (Müller et al., Opt. Express 26, 10729 (2018)); CC0; 0.107 um per pixel. It is stored as
    8 bits with an arbitrary scale, so it is returned divided by 255 (phase in arbitrary units).
    Useful as a real phase object for :func:`~napari_im2im_uq.data.simulate_dpc`.

    Returns
    -------
    list of tuple
        ``[(phase, kwargs, "image")]``: float32 (660, 550) in [0, 1], named
        "cell phase (scikit-image)".

    Examples
    --------
    >>> from napari_im2im_uq._sample_data import sample_cells_phase
    >>> data, kwargs, kind = sample_cells_phase()[0]
    >>> data.shape, kwargs["name"], kind
    ((660, 550), 'cell phase (scikit-image)', 'image')
    """
    import numpy as np
    from skimage import data

    phase = np.asarray(data.cell(), dtype=np.float32) / 255.0
    meta = _meta(
        "truth",
        source="scikit-image data.cell() (Mueller et al. 2018, CC0)",
        scale_factor=1,
        axes=("rows", "cols"),
        units="arbitrary (8-bit phase)",
        pixel_size_um=0.107,
    )
    return [(phase, {"name": "cell phase (scikit-image)", "metadata": meta}, "image")]
