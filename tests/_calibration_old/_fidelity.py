"""The fidelity error ``D_p`` of the trust mask and its checked streaming kernels.

:func:`fidelity_error_map` computes ``D`` (pointwise or blurred); the kernels compute the
pointwise ``D = |truth - prediction|`` a cache-sized chunk at a time with the checks of the
calibration (finite sigma, data inside data_range, ``D`` in [0, B]) as reductions of each chunk.
``calibration.trust_mask`` re-exports :func:`fidelity_error_map`.
"""

from __future__ import annotations

import numpy as np

from napari_im2im_uq._validation import check_positive

__all__ = ["fidelity_error_map"]

_CHUNK = 1 << 15  # pixels per step of the streaming kernels (cache-sized)


def fidelity_error_map(prediction, truth, *, fidelity="pointwise", blur_sigma=None):
    """Local fidelity error ``D_p`` of each pixel, tile by tile (arrays of shape (n, ...)).

    Parameters
    ----------
    prediction, truth : ndarray, shape (n, rows, columns) or (n, ..., rows, columns)
    fidelity : {"pointwise", "blurred"}
        "pointwise": ``|y - yhat|``. "blurred": ``|K * y - K * yhat|`` with K a Gaussian of
        standard deviation ``blur_sigma`` pixels over the last two axes (reflecting borders); it
        forgives errors finer than the blur, e.g. a shifted texture.
    blur_sigma : float
        Required for "blurred".

    Returns
    -------
    D : ndarray of float64

    Examples
    --------
    >>> float(fidelity_error_map(np.zeros((1, 2, 2)), np.ones((1, 2, 2)))[0, 0, 0])
    1.0
    """
    diff = np.subtract(truth, prediction, dtype=np.float64)
    if fidelity == "pointwise":
        return np.abs(diff, out=diff)
    if fidelity == "blurred":
        if blur_sigma is None or not np.isfinite(blur_sigma) or blur_sigma <= 0:
            raise ValueError(
                f"blur_sigma must be a positive number of pixels for fidelity='blurred'; "
                f"got {blur_sigma!r}"
            )
        from scipy.ndimage import gaussian_filter

        sig = [0.0] * (diff.ndim - 2) + [float(blur_sigma)] * 2
        return np.abs(gaussian_filter(diff, sigma=sig, mode="reflect"))
    raise ValueError(f"fidelity must be 'pointwise' or 'blurred' here; got {fidelity!r}")


def _resolve_bound(loss_bound, data_range, fidelity):
    if loss_bound is not None:
        return check_positive(loss_bound, "loss_bound")
    if data_range is None:
        raise ValueError(
            "loss_bound or data_range is required: conformal risk control needs B, the largest "
            "possible fidelity error, and it is never guessed; e.g. data_range=(0, 1) for images "
            "scaled to [0, 1], or loss_bound=B"
        )
    try:
        lo, hi = (float(x) for x in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be (low, high); got {data_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"data_range must be (low, high) with low < high; got {data_range!r}")
    if fidelity == "given":
        raise ValueError("data_range does not bound a given fidelity_error; pass loss_bound")
    return hi - lo


def _chunk_error(s, pc, yc, out, buf, lo, hi, limit):
    """Write ``|yc - pc|`` into ``out`` and return its largest value; None if a check fails.

    The checks: sigma finite, data inside [lo, hi], no error above ``limit``. D >= 0 after
    abs; with the data inside data_range, D <= high - low = B already (rounding is monotone),
    so only NaN (absent there too) or D > B can fail the last check.
    """
    if not np.isfinite(s.sum()):
        return None
    if lo is not None and not (pc.min() >= lo and pc.max() <= hi and yc.min() >= lo
                               and yc.max() <= hi):
        return None
    np.copyto(out, yc)
    np.copyto(buf, pc)
    np.subtract(out, buf, out=out)
    np.abs(out, out=out)
    chunk_max = out.max()
    if not chunk_max <= limit:
        return None
    return float(chunk_max)


def _pointwise_block(sigma, pred, truth, bound, data_range, tile_max):
    """(s, D) of one block without a valid mask, row chunk by row chunk; None if a check fails.

    The same arrays as the checked path (``D = |truth - prediction|`` in float64); the checks
    (finite sigma, data in data_range, D in [0, B]) are reductions of each cache-sized chunk.
    When one fails, None sends the block to the checked path, which raises with the argument's
    name. ``tile_max`` receives each tile's largest D (at least 0).
    """
    m = sigma.shape[0]
    s = np.asarray(sigma, dtype=np.float64).reshape(m, -1)
    p = np.asarray(pred).reshape(m, -1)
    y = np.asarray(truth).reshape(m, -1)
    d = s.shape[1]
    D = np.empty((m, d))
    buf = np.empty(min(d, _CHUNK))
    limit = bound * (1 + 1e-12)
    lo, hi = (None, None) if data_range is None else (float(x) for x in data_range)
    for i in range(m):
        top = 0.0
        for a in range(0, d, _CHUNK):
            b = min(a + _CHUNK, d)
            chunk_max = _chunk_error(s[i, a:b], p[i, a:b], y[i, a:b], D[i, a:b], buf[: b - a],
                                     lo, hi, limit)
            if chunk_max is None:
                return None
            top = max(top, chunk_max)
        tile_max[i] = top
    return s, D


def _check_range(block, name, data_range, v):
    lo, hi = data_range
    vals = np.asarray(block) if v is None else np.asarray(block)[v]
    if vals.size and (vals.min() < lo or vals.max() > hi):
        raise ValueError(
            f"{name} must lie inside data_range=({lo:g}, {hi:g}); got values from "
            f"{vals.min():g} to {vals.max():g} (widen data_range or clip the images)"
        )
