"""The array kernels that apply a calibration: the same arithmetic as the calibration itself.

Each calibration module calibrates with these kernels and :class:`CalibrationResult` applies
through them, so a pixel counted as covered (or trusted, or in a set) at calibration is so at
application. This module imports no calibration module and not ``_result``: nothing here can
close an import circle.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_choice, is_dask

SEGMENTATION_SCORES = ("probabilities", "logits")
_PROB_TOL = 1e-3


def calibrated_bounds(prediction, lower, upper, lam):
    """``f - lam (f - lower)`` and ``f + lam (upper - f)`` in float64 (numpy or dask)."""
    if any(is_dask(a) for a in (prediction, lower, upper)):
        import dask.array as da

        f, lo, up = (da.asarray(a).astype(np.float64) for a in (prediction, lower, upper))
    else:
        f, lo, up = (np.asarray(a, dtype=np.float64) for a in (prediction, lower, upper))
    lam = float(lam)
    return f - lam * (f - lo), f + lam * (up - f)


def trusted(sigma, t):
    """Boolean mask of trusted pixels, ``sigma <= t`` (numpy or dask)."""
    sigma = sigma if is_dask(sigma) else np.asarray(sigma)
    return sigma <= t


def calibrated_mask(mask_scores, lam, *, eps):
    """``min(1, lam / (eps + 1 - m))`` (numpy or dask), float64."""
    m = mask_scores if is_dask(mask_scores) else np.asarray(mask_scores)
    denom = eps + 1.0 - m.astype(np.float64)
    if lam == np.inf:
        return denom * 0.0 + 1.0
    return np.minimum(1.0, float(lam) / denom)


def segmentation_scores(scores, *, scores_are, axis=1):
    """Nonconformity ``1 - p`` (float64) from probabilities or logits along ``axis``.

    Probabilities must lie in [0, 1] and sum to 1 (within 1e-3) along the class axis; anything
    else is refused rather than silently normalised.

    Examples
    --------
    >>> segmentation_scores(np.array([[0.2, 0.8]]), scores_are="probabilities").tolist()
    [[0.8, 0.19999999999999996]]
    """
    check_choice(scores_are, "scores_are", SEGMENTATION_SCORES)
    s = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; got NaN or infinite values")
    if scores_are == "logits":
        s = s - s.max(axis=axis, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=axis, keepdims=True)
    else:
        if s.size and (s.min() < 0 or s.max() > 1):
            raise ValueError(
                f"scores must lie in [0, 1] when scores_are='probabilities'; got values from "
                f"{s.min():g} to {s.max():g} (pass scores_are='logits' for raw network outputs)"
            )
        total = s.sum(axis=axis)
        if total.size and np.abs(total - 1.0).max() > _PROB_TOL:
            raise ValueError(
                "scores must sum to 1 over the class axis when scores_are='probabilities'; got "
                f"sums from {total.min():g} to {total.max():g} (pass scores_are='logits' for raw "
                "network outputs)"
            )
    return 1.0 - s


def per_pixel(func, scores, *, dtype):
    """Apply ``func`` to class scores of shape (K, ...): an array of shape (...) (numpy or dask).

    ``func`` works pixel by pixel (it reads the class axis 0 of its argument and drops it), so a
    dask ``scores`` is mapped block by block, each task joining its block's class chunks (one
    ``blockwise`` layer: no task is written per block when this is called): nothing is
    computed until the result is, and a block of the result reads only its own block of scores.
    Numpy in, numpy out (``func(scores)`` itself).

    Examples
    --------
    >>> per_pixel(lambda s: s.argmax(axis=0), np.array([[0.2, 0.9], [0.8, 0.1]]),
    ...           dtype=np.int64).tolist()
    [1, 0]
    """
    if not is_dask(scores):
        return func(np.asarray(scores))
    import dask.array as da

    # one blockwise layer whose tasks concatenate the class chunks of their block (a rechunk
    # of a class axis in several chunks would write a task per block when it is called)
    index = tuple(range(scores.ndim))
    meta = np.empty((0,) * (scores.ndim - 1), dtype=dtype)
    return da.blockwise(func, index[1:], scores, index, concatenate=True, dtype=dtype,
                        meta=meta)


def _class_axis(scores):
    # a batch of tiles (n, K, ...) or one image (K, rows, columns)
    return 1 if np.ndim(scores) >= 4 else 0


def prediction_sets(scores, lam, *, scores_are):
    """Boolean sets ``{k : 1 - p_k <= lam}`` plus the top-1 class (class axis 1, or 0 for one image)."""
    axis = _class_axis(scores)
    s = segmentation_scores(scores, scores_are=scores_are, axis=axis)
    sets = s <= lam
    top = np.argmin(s, axis=axis)
    np.put_along_axis(sets, np.expand_dims(top, axis), True, axis=axis)
    return sets


def varisco(scores, lam, *, scores_are, normalize):
    """Classes in each pixel's set, divided by K ("classes"), by the largest count ("max") or not."""
    check_choice(normalize, "normalize", ("classes", "max", "none"))
    axis = _class_axis(scores)
    counts = prediction_sets(scores, lam, scores_are=scores_are).sum(axis=axis)
    if normalize == "none":
        return counts
    k = np.shape(scores)[axis]
    if normalize == "classes":
        return counts / k
    return counts / max(int(counts.max()), 1)
