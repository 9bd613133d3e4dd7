"""Calibration sets built without a trained network: for the demo, tests and benchmarks.

A TEM-like image (synthetic, or any 2-D array such as a real TEM slice) is down-sampled 4x by
nearest neighbour, up-sampled back by a cubic spline (the classical baseline predictor of the
super-resolution experiment), and given a simple heuristic uncertainty: a width proportional to
the local gradient of the prediction plus a floor. A membrane classifier made of a smoothed,
sigmoid-thresholded darkness gives segmentation probabilities. Nothing here is trained; the point
is a realistic, heteroscedastic calibration problem whose guarantees can be checked.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._em import degrade_tem, synthetic_em_tissue

__all__ = ["tem_calibration_tiles"]


def _tiles(image, tile):
    rows, cols = (s // tile for s in image.shape[-2:])
    cut = image[..., : rows * tile, : cols * tile]
    out = cut.reshape(*cut.shape[:-2], rows, tile, cols, tile)
    out = np.moveaxis(out, -3, -2)  # (..., rows, cols, tile, tile)
    return out.reshape(-1, tile, tile)


def tem_calibration_tiles(image=None, *, tile=64, factor=4, n_images=1, size=512, seed=0,
                          width_gain=1.5, width_floor=0.02):
    """Cut a TEM super-resolution problem into calibration tiles with every method's inputs.

    Parameters
    ----------
    image : ndarray, shape (rows, columns) or (planes, rows, columns), optional
        High-resolution truth in [0, 1] (e.g. a real TEM slice); by default ``n_images``
        synthetic EM images of ``size`` x ``size`` from :func:`synthetic_em_tissue`.
    tile : int, default 64
        Side of the square calibration tiles, on the high-resolution grid.
    factor : int, default 4
        Down-sampling factor of the degradation (nearest neighbour).
    n_images, size, seed
        Synthetic images to make when ``image`` is None.
    width_gain, width_floor : float
        The heuristic half-width is ``width_gain * |gradient of prediction| + width_floor``.

    Returns
    -------
    dict of ndarrays, each of shape (n_tiles, tile, tile) unless stated
        ``truth``, ``prediction`` (cubic up-sampling of the degraded image), ``lower``,
        ``upper`` (prediction -/+ heuristic width), ``sigma`` (the heuristic width),
        ``mask_scores`` (1 - width / max width, in [0, 1]), ``probabilities`` (n, 2, tile, tile:
        rest / membrane) and ``labels`` (0 rest, 1 membrane; membranes from the synthetic
        generator, or the darkest 25% of the truth for a user image).

    Examples
    --------
    >>> d = tem_calibration_tiles(size=256, tile=64)
    >>> d["prediction"].shape, d["probabilities"].shape
    ((16, 64, 64), (16, 2, 64, 64))
    """
    if image is None:
        truths, membranes = [], []
        for i in range(n_images):
            sample = synthetic_em_tissue((size, size), seed=seed + i)
            truths.append(sample["image"])
            membranes.append(sample["membranes"])
        truth_img = np.stack(truths).astype(np.float64)
        membrane_img = np.stack(membranes)
    else:
        truth_img = np.asarray(image, dtype=np.float64)
        if truth_img.ndim == 2:
            truth_img = truth_img[None]
        if truth_img.ndim != 3:
            raise ValueError(f"image must be 2-D or 3-D (planes, rows, columns); got shape "
                             f"{np.shape(image)}")
        smooth = ndimage.gaussian_filter(truth_img, (0, 2, 2))
        membrane_img = smooth < np.quantile(smooth, 0.25)
    side = (min(truth_img.shape[-2:]) // (tile * 1)) * tile
    if side < tile or tile % factor:
        raise ValueError(f"tile must be a multiple of factor={factor} and fit in the image; got "
                         f"tile={tile} for images of {truth_img.shape[-2:]}")
    truth_img = truth_img[:, : (truth_img.shape[1] // tile) * tile, : (truth_img.shape[2] // tile)
                          * tile]
    membrane_img = membrane_img[:, : truth_img.shape[1], : truth_img.shape[2]]
    low = np.stack([degrade_tem(t, factor=factor, mode="nearest") for t in truth_img])
    pred = np.stack([ndimage.zoom(lo, factor, order=3, mode="reflect", grid_mode=True)
                     for lo in low])
    pred = np.clip(pred, 0.0, 1.0)
    grad = np.hypot(*np.gradient(ndimage.gaussian_filter(pred, (0, 1, 1)), axis=(1, 2)))
    width = width_gain * grad * factor + width_floor
    darkness = 1.0 - ndimage.gaussian_filter(pred, (0, 1.5, 1.5))
    p_membrane = 1.0 / (1.0 + np.exp(-(darkness - 0.6) / 0.06))
    probs = np.stack([1.0 - p_membrane, p_membrane], axis=1)
    out = {
        "truth": _tiles(truth_img, tile),
        "prediction": _tiles(pred, tile),
        "lower": _tiles(pred - width, tile),
        "upper": _tiles(pred + width, tile),
        "sigma": _tiles(width, tile),
        "mask_scores": _tiles(1.0 - width / width.max(), tile),
        "labels": _tiles(membrane_img.astype(np.int64), tile),
    }
    out["probabilities"] = np.stack([_tiles(probs[:, k], tile) for k in range(2)], axis=1)
    return out
