"""Synthetic EM tissue and the TEM degradation of the super-resolution experiment."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ._checks import as_float_image, as_rng, check_positive, check_shape

__all__ = ["TEM_PHOTONS", "TEM_READ_NOISE", "degrade_tem", "synthetic_em_tissue"]

# Grey levels of the synthetic tissue (before blur and noise), chosen to resemble the Drosophila
# ssTEM in ../shared/data/em_drosophila_vnc: membranes ~0.25, mitochondria ~0.33, cytoplasm ~0.56.
_CYTOPLASM = 0.62
_MEMBRANE = 0.2
_MITO = 0.42
_MITO_RIM = 0.26
_CRISTA = 0.2
_VESICLE_RIM = 0.25


def _smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise with zero mean and unit standard deviation (float32).

    The filter is applied in Fourier space on a padded grid (so its cost does not grow with
    ``sigma`` and the result does not wrap around); ``sigma`` is per axis, in pixels (0 = white).
    """
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (len(shape),))
    pad = [
        min(int(math.ceil(3 * s)), 4 * n) if s > 0 else 0
        for s, n in zip(sigma, shape, strict=True)
    ]
    full = tuple(
        scipy.fft.next_fast_len(n + p, real=True) if p else n
        for n, p in zip(shape, pad, strict=True)
    )
    white = rng.standard_normal(full, dtype=np.float32)
    spec = scipy.fft.rfftn(white)
    for ax, (n, s) in enumerate(zip(full, sigma, strict=True)):
        if s <= 0:
            continue
        f = scipy.fft.rfftfreq(n) if ax == len(full) - 1 else scipy.fft.fftfreq(n)
        g = np.exp(-2.0 * (np.pi * f * s) ** 2).astype(np.float32)
        spec *= g.reshape([-1 if a == ax else 1 for a in range(len(full))])
    out = scipy.fft.irfftn(spec, s=full)[tuple(slice(0, n) for n in shape)]
    out = out - out.mean()
    return (out / (out.std() + 1e-12)).astype(np.float32)


def _spread_seeds(rng, n, low, high, min_dist):
    """Uniform random points in the box [low, high) with no two closer than ``min_dist``."""
    low = np.asarray(low, float)
    high = np.asarray(high, float)
    cand = rng.uniform(low, high, size=(int(n * 2.5) + 8, 2))
    drop = np.zeros(len(cand), bool)
    for i, j in sorted(cKDTree(cand).query_pairs(min_dist)):
        if not drop[i]:
            drop[j] = True
    return cand[~drop][:n]


def _boundary(cells):
    """Pixels that touch a pixel of another cell (4-connectivity), both sides of the interface."""
    b = np.zeros(cells.shape, bool)
    dr = cells[1:, :] != cells[:-1, :]
    dc = cells[:, 1:] != cells[:, :-1]
    b[1:, :] |= dr
    b[:-1, :] |= dr
    b[:, 1:] |= dc
    b[:, :-1] |= dc
    return b


def synthetic_em_tissue(
    shape=(256, 256),
    *,
    seed=0,
    n_cells=None,
    membrane_width=5.0,
    jitter=4.0,
    n_mitochondria=None,
    n_vesicles=None,
    noise=0.04,
    blur=1.0,
    drift=2.0,
):
    """Generate a synthetic electron-microscopy image of neural tissue with its labels.

    Cells are the Voronoi cells of random, well-spread seeds (no two closer than about half the
    mean cell spacing), read through a smooth random displacement field so that their boundaries
    wiggle. Membranes are the cell interfaces thickened to a locally varying width (dark),
    cytoplasm is a textured mid-grey with a per-cell offset, mitochondria are ellipses inside
    cells (darker, with a dark rim and cristae-like stripes across their long axis), vesicles
    are small dark rings. The image is then blurred and Gaussian noise is added.

    For a 3-D ``shape`` (planes, rows, cols) the seeds move by about ``drift`` pixels per plane and
    the boundary jitter, the membrane width and the coarse texture vary slowly from plane to
    plane, so that consecutive planes look like consecutive serial sections. The fine texture and
    the noise are independent in each plane.

    Parameters
    ----------
    shape : tuple of int
        (rows, cols) or (planes, rows, cols); rows and cols at least 16.
    seed : int, None or numpy.random.Generator
        Source of randomness; the same integer gives the same tissue.
    n_cells : int, optional
        Number of cells whose seeds fall inside one plane. Default: one per 70 x 70 pixels
        (about the cell size of the Drosophila ssTEM at 4.6 nm per pixel, halved), at least 2.
    membrane_width : float
        Mean full width of a membrane in pixels (varies by about +-35 % along the boundaries).
    jitter : float
        Amplitude in pixels of the displacement field that makes boundaries irregular (0: straight
        Voronoi edges).
    n_mitochondria : int, optional
        Number of mitochondria (at most one per cell). Default: a quarter of the cells, at least 1.
    n_vesicles : int, optional
        Number of vesicles. Default: as many as cells.
    noise : float
        Standard deviation of the additive Gaussian noise (intensities are in [0, 1]).
    blur : float
        Standard deviation in pixels of the Gaussian blur of each plane (0: no blur).
    drift : float
        Displacement of each seed in pixels from one plane to the next (3-D shapes only).

    Returns
    -------
    dict
        ``image`` (float32 in [0, 1], ``shape``), ``membranes`` (bool), ``mitochondria`` (bool),
        ``labels`` (uint8: 0 background/cytoplasm, 1 membrane, 2 mitochondria) and ``cells``
        (int32 cell identifiers, > 0). Vesicles are not labelled (they are cytoplasm).

    Raises
    ------
    ValueError
        If ``shape`` or a parameter is out of range; the message names the argument.

    Examples
    --------
    >>> from napari_im2im_uq.data import synthetic_em_tissue
    >>> tissue = synthetic_em_tissue((128, 128), seed=1)
    >>> tissue["image"].shape, tissue["image"].dtype, tissue["labels"].dtype
    ((128, 128), dtype('float32'), dtype('uint8'))
    >>> image, labels = tissue["image"], tissue["labels"]
    >>> bool(image[labels == 1].mean() < image[labels == 0].mean())  # dark membranes
    True
    >>> synthetic_em_tissue((3, 64, 64), seed=1)["image"].shape
    (3, 64, 64)
    """
    shape = check_shape(shape, "shape", min_size=16)
    rng = as_rng(seed)
    check_positive(membrane_width, "membrane_width")
    for name, value in (("jitter", jitter), ("noise", noise), ("blur", blur), ("drift", drift)):
        check_positive(value, name, allow_zero=True)
    planes, rows, cols = (1, *shape) if len(shape) == 2 else shape
    area = rows * cols
    if n_cells is None:
        n_cells = max(2, round(area / 70.0**2))
    check_positive(n_cells, "n_cells", integer=True)
    if n_mitochondria is None:
        n_mitochondria = max(1, n_cells // 4)
    check_positive(n_mitochondria, "n_mitochondria", integer=True, allow_zero=True)
    if n_vesicles is None:
        n_vesicles = n_cells
    check_positive(n_vesicles, "n_vesicles", integer=True, allow_zero=True)

    spacing = math.sqrt(area / n_cells)
    # seeds live on a grid padded by `margin` so that cells cross the image border naturally
    margin = int(math.ceil(0.75 * spacing + 3 * jitter + drift * planes)) + 2
    prow, pcol = rows + 2 * margin, cols + 2 * margin
    n_total = max(n_cells, round(n_cells * prow * pcol / area))
    seeds = _spread_seeds(rng, n_total, (0, 0), (prow, pcol), 0.45 * spacing)
    n_seeds = len(seeds)
    speed = rng.uniform(0.3, 1.0, n_seeds) * drift
    angle = rng.uniform(0, 2 * np.pi, n_seeds)
    velocity = np.stack([speed * np.sin(angle), speed * np.cos(angle)], axis=1)
    shade = rng.uniform(-0.07, 0.07, n_seeds + 1).astype(np.float32)

    zsig = 1.5 if planes > 1 else 0.0
    jit_r = _smooth_noise(rng, (planes, rows, cols), (zsig, 12.0, 12.0)) * jitter
    jit_c = _smooth_noise(rng, (planes, rows, cols), (zsig, 12.0, 12.0)) * jitter
    width_var = _smooth_noise(rng, (planes, rows, cols), (zsig, 20.0, 20.0))
    coarse = _smooth_noise(rng, (planes, rows, cols), (zsig, 10.0, 10.0))
    fine = _smooth_noise(rng, (planes, rows, cols), (0.0, 1.0, 1.0))

    # mitochondria and vesicles are attached to a cell seed and move with it
    visible = np.flatnonzero(
        (seeds[:, 0] >= margin)
        & (seeds[:, 0] < margin + rows)
        & (seeds[:, 1] >= margin)
        & (seeds[:, 1] < margin + cols)
    )
    mito_cells = rng.permutation(visible)[: min(n_mitochondria, len(visible))]
    mitos = []
    for k in mito_cells:
        a = rng.uniform(0.28, 0.42) * spacing
        mitos.append(
            {
                "cell": k,
                "offset": rng.uniform(-0.12, 0.12, 2) * spacing,
                "theta": rng.uniform(0, np.pi),
                "a": a,
                "b": a * rng.uniform(0.4, 0.65),
                "period": rng.uniform(5.0, 8.0),
                "phase": rng.uniform(0, 2 * np.pi),
                "wobble": rng.uniform(0, 2 * np.pi),
            }
        )
    ves = []
    if len(visible):
        for k in rng.choice(visible, size=n_vesicles):
            ves.append(
                {
                    "cell": k,
                    "offset": rng.uniform(-0.35, 0.35, 2) * spacing,
                    "radius": rng.uniform(3.0, 7.0),
                    "z0": rng.uniform(-1.0, planes) if planes > 1 else 0.0,
                    "zr": rng.uniform(1.5, 4.0),
                }
            )

    image = np.empty((planes, rows, cols), np.float32)
    membranes = np.empty((planes, rows, cols), bool)
    mitochondria = np.zeros((planes, rows, cols), bool)
    cells_out = np.empty((planes, rows, cols), np.int32)
    rr, cc = np.mgrid[0:rows, 0:cols].astype(np.float32)
    for t in range(planes):
        pos = seeds + t * velocity
        ids = np.zeros((prow, pcol), np.int32)
        ir = np.clip(np.round(pos[:, 0]).astype(int), 0, prow - 1)
        ic = np.clip(np.round(pos[:, 1]).astype(int), 0, pcol - 1)
        ids[ir, ic] = np.arange(1, n_seeds + 1, dtype=np.int32)
        near = ndi.distance_transform_edt(ids == 0, return_distances=False, return_indices=True)
        voronoi = ids[near[0], near[1]]
        coords = np.stack([rr + margin + jit_r[t], cc + margin + jit_c[t]])
        cells = ndi.map_coordinates(voronoi, coords, order=0, mode="nearest", output=np.int32)
        dist = ndi.distance_transform_edt(~_boundary(cells)).astype(np.float32)
        half = np.maximum(0.5 * membrane_width * (1.0 + 0.35 * width_var[t]), 0.5)
        density = np.clip(half - dist, 0.0, 1.0)  # anti-aliased membrane
        memb = dist < half - 0.5

        img = _CYTOPLASM + shade[cells] + 0.04 * coarse[t] + 0.07 * fine[t]
        img = img * (1.0 - density) + (_MEMBRANE + 0.04 * fine[t]) * density

        mito = np.zeros((rows, cols), bool)
        for m in mitos:
            scale = 1.0 + 0.1 * math.sin(0.7 * t + m["wobble"])
            a, b = m["a"] * scale, m["b"] * scale
            cy, cx = pos[m["cell"]] - margin + m["offset"]
            r0, r1 = max(int(cy - a - 2), 0), min(int(cy + a + 3), rows)
            c0, c1 = max(int(cx - a - 2), 0), min(int(cx + a + 3), cols)
            if r0 >= r1 or c0 >= c1:
                continue
            dy, dx = rr[r0:r1, c0:c1] - cy, cc[r0:r1, c0:c1] - cx
            u = dy * math.cos(m["theta"]) + dx * math.sin(m["theta"])
            v = -dy * math.sin(m["theta"]) + dx * math.cos(m["theta"])
            rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            inside = (
                (rho < 1.0)
                & (cells[r0:r1, c0:c1] == m["cell"] + 1)
                & (dist[r0:r1, c0:c1] >= half[r0:r1, c0:c1] + 1.0)
            )
            stripes = np.cos(2 * np.pi * u / m["period"] + m["phase"] + 0.6 * np.sin(v / 3.0))
            crista = np.clip((stripes - 0.35) / 0.65, 0, 1) * (rho < 0.8)
            value = _MITO + 0.05 * fine[t, r0:r1, c0:c1] - (_MITO - _CRISTA) * crista
            value = np.where(rho > 0.82, _MITO_RIM, value)
            img[r0:r1, c0:c1] = np.where(inside, value, img[r0:r1, c0:c1])
            mito[r0:r1, c0:c1] |= inside

        for vsc in ves:
            dz = (t - vsc["z0"]) / vsc["zr"]
            if abs(dz) >= 1.0:
                continue
            rad = vsc["radius"] * math.sqrt(1.0 - dz * dz)
            if rad < 1.0:
                continue
            cy, cx = pos[vsc["cell"]] - margin + vsc["offset"]
            r0, r1 = max(int(cy - rad - 2), 0), min(int(cy + rad + 3), rows)
            c0, c1 = max(int(cx - rad - 2), 0), min(int(cx + rad + 3), cols)
            if r0 >= r1 or c0 >= c1:
                continue
            d = np.hypot(rr[r0:r1, c0:c1] - cy, cc[r0:r1, c0:c1] - cx)
            ring = np.clip(1.6 - np.abs(d - rad), 0, 1)
            ok = (
                (cells[r0:r1, c0:c1] == vsc["cell"] + 1)
                & ~memb[r0:r1, c0:c1]
                & ~mito[r0:r1, c0:c1]
            )
            blend = np.where(ok, ring, 0.0)
            img[r0:r1, c0:c1] = img[r0:r1, c0:c1] * (1 - blend) + _VESICLE_RIM * blend

        image[t] = img
        membranes[t] = memb & ~mito
        mitochondria[t] = mito
        cells_out[t] = cells

    if blur > 0:
        image = ndi.gaussian_filter(image, (0, blur, blur), mode="reflect")
    if noise > 0:
        image += noise * rng.standard_normal(image.shape, dtype=np.float32)
    np.clip(image, 0.0, 1.0, out=image)
    labels = np.zeros(image.shape, np.uint8)
    labels[membranes] = 1
    labels[mitochondria] = 2
    out = {
        "image": image,
        "membranes": membranes,
        "mitochondria": mitochondria,
        "labels": labels,
        "cells": cells_out,
    }
    if len(shape) == 2:
        out = {k: v[0] for k, v in out.items()}
    return out


#: Default dose of :func:`degrade_tem`: expected electron counts of a low-resolution pixel of
#: full intensity (1.0), and the detector's Gaussian read noise, in counts.
TEM_PHOTONS = 200.0
TEM_READ_NOISE = 2.0


def degrade_tem(
    image,
    *,
    factor=4,
    mode="area",
    photons=None,
    read_noise=0.0,
    noise_std=0.0,
    seed=None,
):
    """Emulate a TEM acquisition at a ``factor`` times coarser pixel (shorter exposure).

    ``mode="area"`` (the default) averages each ``factor x factor`` block: a detector pixel
    ``factor`` times larger integrates the signal over its area (binning). ``mode="nearest"``
    keeps every ``factor``-th pixel, starting at the first, so output pixel (i, j) is input
    pixel (factor * i, factor * j): the degradation of the TEM experiment of Angelopoulos et
    al. (2022), section 3.5. A model trained on it learns that one pixel in ``factor**2`` is
    observed exactly, and its uncertainty shows that as a lattice; real microscopes do not
    sample that way. Only the last two axes (rows, cols) are down-sampled; a leading planes
    axis is kept.

    With ``photons``, the binned intensity ``I`` (in [0, 1] units: uint8 / 255) is read as
    an exposure with ``photons`` expected counts at ``I = 1``: the result is
    ``(Poisson(photons * I) + Normal(0, read_noise**2)) / photons``, clipped to [0, 1] (the
    detector's range), so its variance is ``I / photons + (read_noise / photons)**2``
    before clipping. :data:`TEM_PHOTONS` = 200 and :data:`TEM_READ_NOISE` = 2 counts (the
    defaults of the zoo's TEM super-resolution recipes, the sample data and the demo) give a
    noise standard deviation of 0.05 at mid-grey (I = 0.5): a short exposure, about twice the
    noise left in a 4 x 4 bin of the VNC ssTEM raw slices, so the network must denoise as well
    as up-sample, while the membranes stay clearly visible.

    The rows and cols are first cropped to a multiple of ``factor`` (the last ``rows % factor``
    rows and ``cols % factor`` cols are dropped), so the output has ``rows // factor`` rows and
    ``cols // factor`` cols and lines up with the cropped input: in napari, show the output
    with ``scale=factor`` (and ``translate=(factor - 1) / 2`` for ``"area"``) over the input.

    Parameters
    ----------
    image : array_like
        2-D (rows, cols) or 3-D (planes, rows, cols) real image; not modified.
    factor : int
        Down-sampling factor along rows and cols, >= 1.
    mode : {"area", "nearest"}
        Average blocks (binning), or take every ``factor``-th pixel.
    photons : float, optional
        Expected counts of a low-resolution pixel of intensity 1 (> 0); None: no shot noise.
    read_noise : float
        Standard deviation of the Gaussian read noise in counts (needs ``photons``), >= 0.
    noise_std : float
        Standard deviation of additive Gaussian noise in intensity units, applied after
        down-sampling and the shot noise (0: none). Not clipped.
    seed : int, None or numpy.random.Generator
        Source of the noise (ignored without noise).

    Returns
    -------
    numpy.ndarray
        A new array of shape (..., rows // factor, cols // factor). ``"nearest"`` without noise
        keeps the input dtype; otherwise the dtype is the input's if it is floating point, else
        float32.

    Raises
    ------
    ValueError
        If ``image`` is not 2-D or 3-D or is smaller than ``factor``, or an option is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.data import degrade_tem
    >>> y = np.arange(64, dtype=np.float32).reshape(8, 8)
    >>> degrade_tem(y, factor=4).tolist()
    [[13.5, 17.5], [45.5, 49.5]]
    >>> degrade_tem(y, factor=4, mode="nearest").tolist()
    [[0.0, 4.0], [32.0, 36.0]]
    >>> degrade_tem(np.zeros((3, 10, 9)), factor=4).shape
    (3, 2, 2)
    >>> noisy = degrade_tem(np.full((400, 400), 0.5), photons=200.0, read_noise=2.0, seed=0)
    >>> round(float(noisy.std()), 2)  # sqrt(0.5 / 200 + (2 / 200) ** 2)
    0.05
    """
    arr = as_float_image(image, "image")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1; got {factor!r}")
    if mode not in ("nearest", "area"):
        raise ValueError(f"mode must be 'nearest' or 'area'; got {mode!r}")
    check_positive(noise_std, "noise_std", allow_zero=True)
    check_positive(read_noise, "read_noise", allow_zero=True)
    if photons is not None:
        check_positive(photons, "photons")
    elif read_noise > 0:
        raise ValueError(
            f"read_noise is in counts and needs photons (the counts at intensity 1); got "
            f"read_noise={read_noise!r} and photons=None"
        )
    rows, cols = arr.shape[-2:]
    if rows < factor or cols < factor:
        raise ValueError(
            f"image must have at least factor={factor} rows and cols; got shape {arr.shape}"
        )
    r, c = rows // factor * factor, cols // factor * factor
    cropped = arr[..., :r, :c]
    out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
    if mode == "nearest":
        out = np.array(cropped[..., ::factor, ::factor], copy=True)
    else:
        blocks = cropped.reshape(*cropped.shape[:-2], r // factor, factor, c // factor, factor)
        out = blocks.mean(axis=(-3, -1), dtype=np.float64).astype(out_dtype)
    if photons is None and noise_std == 0:
        return out
    rng = as_rng(seed)
    if photons is not None:
        lam = np.clip(out.astype(np.float64), 0.0, None) * float(photons)
        counts = rng.poisson(lam).astype(np.float64)
        if read_noise > 0:
            counts += rng.normal(0.0, float(read_noise), counts.shape)
        out = np.clip(counts / float(photons), 0.0, 1.0).astype(out_dtype)
    if noise_std > 0:
        out = out.astype(out_dtype) + rng.normal(0.0, noise_std, out.shape).astype(out_dtype)
    return out
