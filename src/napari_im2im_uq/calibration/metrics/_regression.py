"""Regression metrics: mean squared error and PSNR, optionally inside a mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._validation import as_valid, check_same_shape
from ._common import (
    _batches,
    _f64,
    _flat,
    _tiles,
)


def _masked_mse(prediction: Any, truth: Any, mask: Any, valid: Any) -> np.ndarray:
    prediction = _tiles(prediction, "prediction")
    truth = _tiles(truth, "truth")
    check_same_shape("prediction", prediction, truth=truth)
    if mask is not None:
        mask = _tiles(mask, "mask", kinds="b")
        check_same_shape("prediction", prediction, mask=mask)
    valid = as_valid(valid, tuple(prediction.shape), "prediction")
    out = np.empty(int(prediction.shape[0]), dtype=np.float64)
    named = {"prediction": prediction, "truth": truth, "mask": mask}
    for sl, b, v in _batches(named, valid, finite=("prediction", "truth")):
        sel = v
        if b["mask"] is not None:
            sel = b["mask"] if v is None else b["mask"] & v
        with np.errstate(invalid="ignore"):
            sq = (_f64(b["prediction"]) - _f64(b["truth"])) ** 2
        if sel is None:
            out[sl] = _flat(sq).mean(axis=1)
            continue
        sel = _flat(sel)
        total = np.where(sel, _flat(sq), 0.0).sum(axis=1)
        count = sel.sum(axis=1)
        res = np.full(total.shape, np.nan)
        np.divide(total, count, out=res, where=count > 0)
        out[sl] = res
    return out


def mse(prediction: Any, truth: Any, *, mask: Any = None, valid: Any = None) -> np.ndarray:
    """Mean squared error of the prediction over each tile, optionally inside a mask.

    Parameters
    ----------
    prediction, truth : array_like, shape (n, ...)
        Point prediction and ground truth.
    mask : array_like of bool, shape (n, ...), optional
        Restrict the mean to the pixels where it is True (for example a trust mask).
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, the mean of ``(prediction - truth) ** 2`` over valid pixels inside the mask;
        NaN for a tile whose mask holds no valid pixel.

    Raises
    ------
    ValueError
        On shapes that differ, NaN or inf on valid pixels, a mask that is not boolean, or a tile
        without a valid pixel.

    Examples
    --------
    >>> import numpy as np
    >>> prediction = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    >>> truth = np.array([[[1.0, 2.0, 3.0, 0.0]]])
    >>> mse(prediction, truth)
    array([4.])
    >>> mse(prediction, truth, mask=np.array([[[True, True, True, False]]]))
    array([0.])
    """
    return _masked_mse(prediction, truth, mask, valid)


def psnr(
    prediction: Any, truth: Any, *, data_range: Any, mask: Any = None, valid: Any = None
) -> np.ndarray:
    """Peak signal-to-noise ratio of each tile in dB, optionally inside a mask.

    ``10 * log10(data_range ** 2 / mse)``. Inside a trust mask this is the PSNR that Adame et al.
    bound by ``-20 log10(alpha)`` (they take the tile's largest true value inside the mask as the
    peak; pass that per tile as ``data_range`` to reproduce their figure).

    Parameters
    ----------
    prediction, truth : array_like, shape (n, ...)
        Point prediction and ground truth.
    data_range : float or array_like, shape (n,)
        The peak: the range the images can take (1.0 for images in [0, 1], 255 for 8 bit), one
        number or one per tile; finite and > 0.
    mask : array_like of bool, shape (n, ...), optional
        Restrict the error to the pixels where it is True.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, the PSNR in dB; ``inf`` where the (masked) MSE is 0 (a perfect prediction) and
        NaN where the mask holds no valid pixel (nothing is trusted, so nothing is measured).

    Raises
    ------
    ValueError
        As :func:`mse`, and for a ``data_range`` that is not positive and finite.

    Examples
    --------
    >>> import numpy as np
    >>> prediction = np.array([[[0.1, 0.5]], [[0.5, 0.5]]])
    >>> truth = np.array([[[0.0, 0.5]], [[0.5, 0.5]]])
    >>> psnr(prediction, truth, data_range=1.0)
    array([23.01029996,         inf])
    """
    dr = np.asarray(data_range, dtype=np.float64) if data_range is not None else None
    if dr is None or dr.ndim > 1 or not np.all(np.isfinite(dr)) or np.any(dr <= 0):
        raise ValueError(
            "data_range must be a positive finite number (or one per tile), the peak value the "
            f"images can take, e.g. 1.0 or 255; got {data_range!r}"
        )
    err = _masked_mse(prediction, truth, mask, valid)
    if dr.ndim == 1 and dr.shape != err.shape:
        raise ValueError(
            f"data_range must be a number or have one value per tile, shape {err.shape}; "
            f"got shape {dr.shape}"
        )
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(dr**2 / err)
