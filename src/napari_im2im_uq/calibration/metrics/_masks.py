"""Mask metrics of Kutiel et al. and Adame et al.

Mask size, fidelity error, masked distortion and the oracle mask size.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..._validation import (
    MASK_KINDS,
    as_valid,
    check_choice,
    check_same_shape,
    check_unit_block,
    first_bad_tile,
)
from ._common import (
    _batches,
    _f64,
    _flat,
    _tile_mean,
    _tiles,
)


def mask_size(mask: Any, *, valid: Any = None) -> np.ndarray:
    """Mean of a mask over each tile's pixels.

    Parameters
    ----------
    mask : array_like, shape (n, ...)
        Boolean, or real-valued in [0, 1] (Kutiel's continuous mask).
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, the mean of ``mask`` over valid pixels.

    Raises
    ------
    ValueError
        On shapes that differ, values outside [0, 1] or NaN on valid pixels, or a tile without a
        valid pixel.

    Notes
    -----
    This is the fraction of the tile that the mask keeps: a trust mask of Adame et al. is True on
    the trusted pixels, and Kutiel's mask ``m`` multiplies both images in ``d(m*y, m*yhat)``, so
    ``m = 1`` keeps a pixel. The masked-out area that Kutiel et al. tabulate as ``||M||`` (smaller
    is better) is ``1 - mask_size(m)``.

    Examples
    --------
    >>> import numpy as np
    >>> mask_size(np.array([[[True, False], [True, True]]]))
    array([0.75])
    >>> mask_size(np.array([[[0.5, 0.0], [1.0, 0.5]]]))
    array([0.5])
    """
    mask = _tiles(mask, "mask", kinds=MASK_KINDS)
    valid = as_valid(valid, tuple(mask.shape), "mask")
    out = np.empty(int(mask.shape[0]), dtype=np.float64)
    for sl, b, v in _batches({"mask": mask}, valid, finite=("mask",)):
        check_unit_block(b["mask"], "mask", v, sl.start)
        out[sl] = _tile_mean(b["mask"], v)
    return out


def fidelity_error(mask: Any, error_map: Any, *, valid: Any = None) -> np.ndarray:
    """Largest local error inside each tile's trust mask (the loss of Adame et al.).

    Parameters
    ----------
    mask : array_like of bool, shape (n, ...)
        The trust mask: True on the pixels that are trusted.
    error_map : array_like, shape (n, ...)
        The local fidelity error ``D_p(y, yhat) >= 0`` at every pixel (for example
        ``|truth - prediction|``, possibly smoothed).
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, ``max`` of ``error_map`` over the valid pixels where ``mask`` is True, and 0 for
        a tile whose mask is empty (trusting nothing costs nothing).

    Raises
    ------
    ValueError
        On shapes that differ, a mask that is not boolean, negative, NaN or inf errors on valid
        pixels, or a tile without a valid pixel.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.array([[[True, False, True]], [[False, False, False]]])
    >>> errors = np.array([[[0.1, 0.9, 0.3]], [[0.5, 0.5, 0.5]]])
    >>> fidelity_error(mask, errors)
    array([0.3, 0. ])
    """
    mask = _tiles(mask, "mask", kinds="b")
    error_map = _tiles(error_map, "error_map")
    check_same_shape("mask", mask, error_map=error_map)
    valid = as_valid(valid, tuple(mask.shape), "mask")
    out = np.empty(int(mask.shape[0]), dtype=np.float64)
    for sl, b, v in _batches({"mask": mask, "error_map": error_map}, valid, finite=("error_map",)):
        err = _f64(b["error_map"])
        found = first_bad_tile(err < 0, sl.start, v)
        if found is not None:
            tile, count = found
            raise ValueError(
                f"error_map must be >= 0 (a distance); tile {tile} has {count} negative value(s)"
            )
        inside = b["mask"] if v is None else b["mask"] & v
        out[sl] = _flat(np.where(inside, err, 0.0)).max(axis=1)
    return out


def _ssim_distance(
    mask: np.ndarray, pred: np.ndarray, y: np.ndarray, v: np.ndarray | None, data_range: float
) -> np.ndarray:
    from skimage.metrics import structural_similarity

    win_size = 7
    out = np.empty(mask.shape[0])
    for i in range(mask.shape[0]):
        a = mask[i] * y[i]
        b = mask[i] * pred[i]
        if v is None:
            out[i] = 1.0 - structural_similarity(a, b, data_range=data_range, win_size=win_size)
            continue
        # invalid pixels may hold NaN: give them 0 in both images, then average the SSIM map
        # over valid pixels away from the border (skimage's own mean drops a border strip)
        a = np.where(v[i], a, 0.0)
        b = np.where(v[i], b, 0.0)
        _, smap = structural_similarity(a, b, data_range=data_range, win_size=win_size, full=True)
        pad = (win_size - 1) // 2
        inner = np.zeros(v[i].shape, dtype=bool)
        inner[tuple(slice(pad, s - pad) for s in v[i].shape)] = True
        keep = inner & v[i]
        if not keep.any():
            raise ValueError(
                f"with distance='ssim', valid must keep a pixel at least {pad} pixels from the "
                "tile border in every tile (the SSIM mean skips that border strip)"
            )
        out[i] = 1.0 - float(smap[keep].mean(dtype=np.float64))
    return out


def masked_distortion(
    mask: Any,
    prediction: Any,
    truth: Any,
    *,
    distance: str = "l1",
    data_range: float | None = None,
    valid: Any = None,
) -> np.ndarray:
    """Kutiel's masked distortion ``d(m * truth, m * prediction)`` of each tile.

    Parameters
    ----------
    mask : array_like, shape (n, ...)
        The mask ``m``, boolean or real-valued in [0, 1]; ``m = 1`` keeps a pixel.
    prediction, truth : array_like, shape (n, ...)
        Point prediction and ground truth.
    distance : {"l1", "l2", "ssim"}, default "l1"
        ``"l1"``: mean over the tile's valid pixels of ``|m * (truth - prediction)|``.
        ``"l2"``: mean of ``(m * (truth - prediction)) ** 2`` (a mean, not a sum, so a threshold
        does not depend on the tile size). ``"ssim"``: ``1 - SSIM(m * truth, m * prediction)``
        with ``skimage.metrics.structural_similarity`` (7-pixel window, so every pixel axis of a
        tile needs at least 7 pixels).
    data_range : float, optional
        Required with ``distance="ssim"`` (the range the images can take, > 0); ignored by l1
        and l2.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count. With ``"ssim"``, invalid pixels are set to 0 in both masked images and
        the SSIM map is averaged over the valid pixels outside skimage's 3-pixel border strip.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per-tile distortion.

    Raises
    ------
    ValueError
        On shapes that differ, a mask outside [0, 1], NaN or inf on valid pixels, a tile without
        a valid pixel, an unknown ``distance``, or ``distance="ssim"`` without a positive
        ``data_range`` or with tiles smaller than 7 pixels along an axis.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[[0.0, 0.0, 0.0, 0.0]]])
    >>> prediction = np.array([[[0.4, 0.2, 0.0, 0.8]]])
    >>> mask = np.array([[[1.0, 0.5, 1.0, 0.0]]])
    >>> masked_distortion(mask, prediction, truth)
    array([0.125])
    >>> masked_distortion(mask, prediction, truth, distance="l2").round(4)
    array([0.0425])
    """
    distance = check_choice(distance, "distance", ("l1", "l2", "ssim"))
    mask = _tiles(mask, "mask", kinds=MASK_KINDS)
    prediction = _tiles(prediction, "prediction")
    truth = _tiles(truth, "truth")
    check_same_shape("mask", mask, prediction=prediction, truth=truth)
    valid = as_valid(valid, tuple(mask.shape), "mask")
    if distance == "ssim":
        if (
            data_range is None
            or isinstance(data_range, bool)
            or not isinstance(data_range, numbers.Real)
            or not np.isfinite(data_range)
            or data_range <= 0
        ):
            raise ValueError(
                "distance='ssim' needs data_range, a positive number (the range the images can "
                f"take, e.g. 1.0); got {data_range!r}"
            )
        if min(mask.shape[1:]) < 7:
            raise ValueError(
                "distance='ssim' uses a 7-pixel window: every pixel axis of a tile needs at "
                f"least 7 pixels; got tiles of shape {tuple(mask.shape[1:])}"
            )
    out = np.empty(int(mask.shape[0]), dtype=np.float64)
    named = {"mask": mask, "prediction": prediction, "truth": truth}
    for sl, b, v in _batches(named, valid, finite=tuple(named)):
        check_unit_block(b["mask"], "mask", v, sl.start)
        m, pred, y = _f64(b["mask"]), _f64(b["prediction"]), _f64(b["truth"])
        if distance == "ssim":
            out[sl] = _ssim_distance(m, pred, y, v, float(data_range))
            continue
        with np.errstate(invalid="ignore"):
            diff = m * (y - pred)
            out[sl] = _tile_mean(np.abs(diff) if distance == "l1" else diff**2, v)
    return out


def _oracle_l1(errors: np.ndarray, budget: float) -> float:
    """Largest sum(m), 0 <= m <= 1, with sum(m * errors) <= budget (fractional knapsack)."""
    e = np.sort(errors)
    spent = np.cumsum(e)
    full = int(np.searchsorted(spent, budget, side="right"))
    if full == e.size:
        return float(full)
    left = budget - (spent[full - 1] if full else 0.0)
    return full + max(0.0, left) / e[full]


def _oracle_l2(errors: np.ndarray, budget: float) -> float:
    """Largest sum(m), 0 <= m <= 1, with sum(m**2 * errors**2) <= budget (water filling)."""
    w = np.sort(errors**2)
    free = int(np.count_nonzero(w == 0))
    w = w[free:]
    if w.size == 0 or w.sum() <= budget:
        return float(free + w.size)
    # optimum: m_p = min(1, c / w_p); j pixels full (the smallest w), the rest at c / w_p.
    # g(c) = sum_{p <= j} w_p + c**2 * sum_{p > j} 1 / w_p grows with c; find the last
    # breakpoint c = w_j with g(w_j) <= budget, then solve g(c) = budget on that piece.
    inv = 1.0 / w
    tail = np.concatenate([np.cumsum(inv[::-1])[::-1], [0.0]])  # tail[j] = sum_{p >= j} 1/w_p
    head = np.concatenate([[0.0], np.cumsum(w)])  # head[j] = sum_{p < j} w_p
    at_breaks = head[1:] + w**2 * tail[1:]  # g(w_j) with pixels 0..j full
    j = int(np.searchsorted(at_breaks, budget, side="right"))  # pixels 0..j-1 full
    c = np.sqrt(max(0.0, budget - head[j]) / tail[j])
    return free + j + c * tail[j]


def oracle_mask_size(
    prediction: Any,
    truth: Any,
    *,
    alpha: float,
    distance: str = "l1",
    valid: Any = None,
) -> np.ndarray:
    """Size of Kutiel's oracle mask "Opt": the largest mask that meets the distortion threshold.

    For each tile, the largest mean of a mask ``m`` in [0, 1] per pixel with
    ``masked_distortion(m, prediction, truth, distance=distance) <= alpha`` (Problem P1 of Kutiel
    et al.), solved exactly with the ground truth in hand.

    Parameters
    ----------
    prediction, truth : array_like, shape (n, ...)
        Point prediction and ground truth.
    alpha : float
        The distortion threshold, >= 0, in the units of :func:`masked_distortion`.
    distance : {"l1", "l2"}, default "l1"
        ``"l1"``: mean of ``|m * e|`` with ``e = truth - prediction``. This is a fractional
        knapsack: pixels are kept whole in increasing order of ``|e|`` and the first one that no
        longer fits is kept fractionally. ``"l2"``: mean of ``(m * e) ** 2``, a convex problem
        whose optimum keeps ``m_p = min(1, c / e_p**2)`` (the closed form of Kutiel's Theorem 1
        once no pixel is clipped) with ``c`` set so the distortion equals ``alpha``.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count; the mask lives on valid pixels only and both the distortion and the
        size are means over them.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, the mean of the optimal mask, in [0, 1] (1 when the unmasked distortion is
        already <= alpha). Compare it with :func:`mask_size` of a calibrated mask, e.g. with
        ``numpy.corrcoef``, for Kutiel's ``C(M, M_opt)``.

    Raises
    ------
    ValueError
        On shapes that differ, NaN or inf on valid pixels, a tile without a valid pixel, a
        negative or non-finite ``alpha``, or an unknown ``distance``.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((1, 1, 4))
    >>> prediction = np.array([[[0.0, 0.1, 0.2, 0.4]]])
    >>> oracle_mask_size(prediction, truth, alpha=0.05)  # keep 0, 0.1 and half of 0.2
    array([0.625])
    """
    distance = check_choice(distance, "distance", ("l1", "l2"))
    if (
        alpha is None
        or isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not np.isfinite(alpha)
        or alpha < 0
    ):
        raise ValueError(f"alpha must be a finite number >= 0 (a distortion); got {alpha!r}")
    prediction = _tiles(prediction, "prediction")
    truth = _tiles(truth, "truth")
    check_same_shape("prediction", prediction, truth=truth)
    valid = as_valid(valid, tuple(prediction.shape), "prediction")
    solve = _oracle_l1 if distance == "l1" else _oracle_l2
    out = np.empty(int(prediction.shape[0]), dtype=np.float64)
    named = {"prediction": prediction, "truth": truth}
    for sl, b, v in _batches(named, valid, finite=tuple(named)):
        with np.errstate(invalid="ignore"):
            e = _flat(np.abs(_f64(b["truth"]) - _f64(b["prediction"])))
        keep = None if v is None else _flat(v)
        for i in range(e.shape[0]):
            errors = e[i] if keep is None else e[i][keep[i]]
            out[sl.start + i] = solve(errors, float(alpha) * errors.size) / errors.size
    return np.minimum(out, 1.0)
