"""Interval metrics of Angelopoulos et al. (2022).

Miscoverage, size, size-stratified risk, Spearman correlation of size and error, spatial
miscoverage.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._validation import (
    as_valid,
    check_choice,
    check_int,
    check_order_block,
    check_same_shape,
)
from ._common import (
    _batches,
    _f64,
    _load,
    _slices,
    _tile_mean,
    _tiles,
)


def _coverage_inputs(lower: Any, upper: Any, truth: Any | None, valid: Any) -> tuple:
    lower = _tiles(lower, "lower")
    upper = _tiles(upper, "upper")
    check_same_shape("lower", lower, upper=upper)
    if truth is not None:
        truth = _tiles(truth, "truth")
        check_same_shape("lower", lower, truth=truth)
    valid = as_valid(valid, tuple(lower.shape), "lower")
    return lower, upper, truth, valid


def _ordered_blocks(named: dict, valid: Any):
    """Yield ``(slice, blocks, valid block, lower, upper)`` with lower <= upper checked.

    Every named array must be finite on valid pixels; ``lower`` and ``upper`` come as float64.
    """
    for sl, b, v in _batches(named, valid, finite=tuple(named)):
        lo, up = _f64(b["lower"]), _f64(b["upper"])
        check_order_block(lo, up, v, sl.start)
        yield sl, b, v, lo, up


def interval_miscoverage(lower: Any, upper: Any, truth: Any, *, valid: Any = None) -> np.ndarray:
    """Fraction of each tile's pixels whose true value falls outside its interval.

    This is the per-tile miscoverage loss of Angelopoulos et al. (2022); its mean over test tiles
    is the empirical risk that the calibration controls.

    Parameters
    ----------
    lower, upper : array_like, shape (n, ...)
        Interval bounds, one tile per leading index. ``lower <= upper`` on valid pixels.
    truth : array_like, shape (n, ...)
        Ground truth.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count; the others are ignored (they may hold NaN).

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, the fraction of valid pixels with ``truth < lower`` or ``truth > upper`` (the
        interval is closed: a truth equal to a bound is covered).

    Raises
    ------
    ValueError
        On shapes that differ, NaN or inf on valid pixels, ``lower > upper``, or a tile without
        a valid pixel.

    Examples
    --------
    >>> import numpy as np
    >>> lower = np.zeros((2, 1, 4))
    >>> upper = np.ones((2, 1, 4))
    >>> truth = np.array([[[0.0, 0.5, 1.0, 2.0]], [[-1.0, 0.5, 0.5, 0.5]]])
    >>> interval_miscoverage(lower, upper, truth)
    array([0.25, 0.25])
    """
    lower, upper, truth, valid = _coverage_inputs(lower, upper, truth, valid)
    out = np.empty(int(lower.shape[0]), dtype=np.float64)
    named = {"lower": lower, "upper": upper, "truth": truth}
    for sl, b, v, lo, up in _ordered_blocks(named, valid):
        y = _f64(b["truth"])
        with np.errstate(invalid="ignore"):
            miss = (y < lo) | (y > up)
        out[sl] = _tile_mean(miss, v)
    return out


def interval_size(lower: Any, upper: Any, *, valid: Any = None) -> np.ndarray:
    """Mean interval length ``upper - lower`` over each tile's pixels.

    Parameters
    ----------
    lower, upper : array_like, shape (n, ...)
        Interval bounds, ``lower <= upper`` on valid pixels.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, the mean of ``upper - lower`` over valid pixels (computed in float64, so
        unsigned integer inputs do not wrap around).

    Raises
    ------
    ValueError
        On shapes that differ, NaN or inf on valid pixels, ``lower > upper``, or a tile without
        a valid pixel.

    Examples
    --------
    >>> import numpy as np
    >>> lower = np.array([[[0.0, 0.0], [0.0, 0.0]]])
    >>> upper = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    >>> interval_size(lower, upper)
    array([2.5])
    >>> interval_size(lower, upper, valid=np.array([[[True, True], [False, False]]]))
    array([1.5])
    """
    lower, upper, _, valid = _coverage_inputs(lower, upper, None, valid)
    out = np.empty(int(lower.shape[0]), dtype=np.float64)
    for sl, _, v, lo, up in _ordered_blocks({"lower": lower, "upper": upper}, valid):
        with np.errstate(invalid="ignore"):
            out[sl] = _tile_mean(up - lo, v)
    return out


def size_stratified_risk(
    lower: Any, upper: Any, truth: Any, *, n_strata: int = 4, valid: Any = None
) -> dict[str, np.ndarray]:
    """Miscoverage within quantile strata of interval size, pooled over pixels.

    All valid pixels of all tiles are pooled, cut into ``n_strata`` strata at the empirical
    quantiles of their interval size ``upper - lower`` (quartiles by default), and the fraction of
    uncovered pixels is reported for each stratum (Angelopoulos et al. 2022, "size-stratified
    risk"). Well-behaved intervals give bars of equal height.

    Parameters
    ----------
    lower, upper, truth : array_like, shape (n, ...)
        Interval bounds and ground truth.
    n_strata : int, default 4
        Number of strata.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.

    Returns
    -------
    dict
        ``edges`` (n_strata + 1,) float64
            ``numpy.quantile`` of the pooled sizes at ``linspace(0, 1, n_strata + 1)`` (linear
            interpolation), so ``edges[0]`` and ``edges[-1]`` are the smallest and largest size.
        ``risk`` (n_strata,) float64
            Fraction of the stratum's pixels with truth outside [lower, upper]; NaN for an empty
            stratum.
        ``count`` (n_strata,) int64
            Number of pixels in each stratum; the counts add up to the number of valid pixels.

    Notes
    -----
    Pixel ``p`` with size ``s`` goes to stratum ``k`` with ``edges[k] <= s < edges[k + 1]``; the
    last stratum also takes ``s == edges[-1]`` (the convention of ``numpy.histogram``). The
    assignment depends on the size only, never on the order of pixels, so it is deterministic.
    When many pixels share a size, several edges coincide: the tied pixels all go to the highest
    stratum whose lower edge equals their size and the strata between coinciding edges are empty
    (count 0, risk NaN). For example, intervals of one constant width put every pixel in the last
    stratum. Strata therefore hold about ``1 / n_strata`` of the pixels only when sizes are
    distinct.

    The pooled sizes (one float64 per valid pixel) are held in memory.

    Examples
    --------
    >>> import numpy as np
    >>> lower = np.zeros((1, 1, 8))
    >>> upper = np.arange(1.0, 9.0).reshape(1, 1, 8)
    >>> truth = np.array([[[0.5, 9, 0.5, 0.5, 9, 9, 0.5, 0.5]]])
    >>> result = size_stratified_risk(lower, upper, truth)
    >>> result["risk"]
    array([0.5, 0. , 1. , 0. ])
    >>> result["count"]
    array([2, 2, 2, 2])
    """
    n_strata = check_int(n_strata, "n_strata")
    lower, upper, truth, valid = _coverage_inputs(lower, upper, truth, valid)
    sizes, misses = [], []
    named = {"lower": lower, "upper": upper, "truth": truth}
    for _, b, v, lo, up in _ordered_blocks(named, valid):
        y = _f64(b["truth"])
        keep = np.ones(lo.shape, dtype=bool) if v is None else v
        with np.errstate(invalid="ignore"):
            sizes.append((up - lo)[keep])
        misses.append(((y < lo) | (y > up))[keep])
    size = np.concatenate(sizes)
    miss = np.concatenate(misses)
    edges = np.quantile(size, np.linspace(0.0, 1.0, n_strata + 1))
    stratum = np.searchsorted(edges[1:-1], size, side="right")
    count = np.bincount(stratum, minlength=n_strata).astype(np.int64)
    missed = np.bincount(stratum, weights=miss, minlength=n_strata)
    risk = np.full(n_strata, np.nan)
    np.divide(missed, count, out=risk, where=count > 0)
    return {"edges": edges, "risk": risk, "count": count}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if a.size < 2:
        raise ValueError(
            f"a rank correlation needs at least 2 points; got {a.size} (add tiles or valid pixels)"
        )
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def spearman_size_error(
    lower: Any,
    upper: Any,
    truth: Any,
    prediction: Any,
    *,
    valid: Any = None,
    per: str = "pixel",
    max_pixels: int | None = 1_000_000,
    seed: int = 0,
) -> float:
    """Spearman rank correlation between interval size and absolute error.

    Good intervals are wider where the prediction is worse, so the correlation between
    ``upper - lower`` and ``|truth - prediction|`` should be clearly positive (Angelopoulos et al.
    2022; computed with ``scipy.stats.spearmanr``, ties get average ranks).

    Parameters
    ----------
    lower, upper, truth, prediction : array_like, shape (n, ...)
        Interval bounds, ground truth and point prediction.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.
    per : {"pixel", "tile"}, default "pixel"
        ``"pixel"``: one point per valid pixel, pooled over all tiles. ``"tile"``: one point per
        tile, the tile's mean size against its mean absolute error.
    max_pixels : int or None, default 1_000_000
        With ``per="pixel"``, when there are more valid pixels than this, a uniform random sample
        of ``max_pixels`` of them (without replacement) is used. The sample depends only on
        ``seed`` and on which pixels are valid, not on how the input is chunked. None uses all.
    seed : int, default 0
        Seed of ``numpy.random.default_rng`` for that sample.

    Returns
    -------
    float
        The rank correlation in [-1, 1]; NaN when the sizes or the errors are all equal.

    Raises
    ------
    ValueError
        On shapes that differ, NaN or inf on valid pixels, ``lower > upper``, a tile without a
        valid pixel, or fewer than two points.

    Examples
    --------
    >>> import numpy as np
    >>> prediction = np.zeros((3, 1, 2))
    >>> truth = np.array([[[0.1, 0.2]], [[0.3, 0.4]], [[0.5, 0.6]]])
    >>> lower, upper = prediction - 2 * truth, prediction + 2 * truth
    >>> spearman_size_error(lower, upper, truth, prediction)
    1.0
    >>> spearman_size_error(lower, upper, truth, prediction, per="tile")
    1.0
    """
    per = check_choice(per, "per", ("pixel", "tile"))
    if max_pixels is not None:
        max_pixels = check_int(max_pixels, "max_pixels", minimum=2)
    lower, upper, truth, valid = _coverage_inputs(lower, upper, truth, valid)
    prediction = _tiles(prediction, "prediction")
    check_same_shape("lower", lower, prediction=prediction)
    n = int(lower.shape[0])
    named = {"lower": lower, "upper": upper, "truth": truth, "prediction": prediction}

    if per == "tile":
        mean_size = np.empty(n)
        mean_error = np.empty(n)
        for sl, b, v, lo, up in _ordered_blocks(named, valid):
            with np.errstate(invalid="ignore"):
                mean_size[sl] = _tile_mean(up - lo, v)
                mean_error[sl] = _tile_mean(np.abs(_f64(b["truth"]) - _f64(b["prediction"])), v)
        return _spearman(mean_size, mean_error)

    # per pixel: decide the sample (ranks among the valid pixels, in C order) before reading
    if valid is None:
        total = n * int(np.prod(lower.shape[1:]))
    else:
        total = sum(
            int(np.count_nonzero(vb))
            for sl in _slices(n, int(np.prod(valid.shape[1:])))
            for vb in _load([valid], sl)
        )
    chosen = None
    if max_pixels is not None and total > max_pixels:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(total, size=max_pixels, replace=False))
    sizes, errors = [], []
    offset = 0
    for _, b, v, lo, up in _ordered_blocks(named, valid):
        keep = np.ones(lo.shape, dtype=bool) if v is None else v
        with np.errstate(invalid="ignore"):
            size = (up - lo)[keep]
            error = np.abs(_f64(b["truth"]) - _f64(b["prediction"]))[keep]
        if chosen is not None:
            lo_i, hi_i = np.searchsorted(chosen, [offset, offset + size.size])
            pick = chosen[lo_i:hi_i] - offset
            size, error = size[pick], error[pick]
        offset += int(np.count_nonzero(keep))
        sizes.append(size)
        errors.append(error)
    return _spearman(np.concatenate(sizes), np.concatenate(errors))


def spatial_miscoverage(lower: Any, upper: Any, truth: Any, *, valid: Any = None) -> np.ndarray:
    """Per-pixel fraction of tiles in which that pixel is not covered.

    The heat map of Angelopoulos et al. (2022, Appendix A) and the "varisco" map of Mossina et
    al.: it shows whether misses gather at fixed positions of the tile (borders, a corner).

    Parameters
    ----------
    lower, upper, truth : array_like, shape (n, ...)
        Interval bounds and ground truth.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count.

    Returns
    -------
    numpy.ndarray, shape (...), float64
        The tile shape; at each position the number of tiles where the pixel is valid and
        uncovered, divided by the number of tiles where it is valid; NaN where it is never valid.

    Raises
    ------
    ValueError
        On shapes that differ, NaN or inf on valid pixels, ``lower > upper``, or a tile without
        a valid pixel.

    Examples
    --------
    >>> import numpy as np
    >>> lower, upper = np.zeros((4, 1, 2)), np.ones((4, 1, 2))
    >>> truth = np.array([[[2.0, 0.5]], [[2.0, 0.5]], [[0.5, 0.5]], [[0.5, 2.0]]])
    >>> spatial_miscoverage(lower, upper, truth)
    array([[0.5 , 0.25]])
    """
    lower, upper, truth, valid = _coverage_inputs(lower, upper, truth, valid)
    tile_shape = tuple(int(s) for s in lower.shape[1:])
    missed = np.zeros(tile_shape, dtype=np.float64)
    seen = np.zeros(tile_shape, dtype=np.float64)
    named = {"lower": lower, "upper": upper, "truth": truth}
    for _, b, v, lo, up in _ordered_blocks(named, valid):
        y = _f64(b["truth"])
        with np.errstate(invalid="ignore"):
            miss = (y < lo) | (y > up)
        if v is None:
            missed += miss.sum(axis=0)
            seen += miss.shape[0]
        else:
            missed += (miss & v).sum(axis=0)
            seen += v.sum(axis=0)
    out = np.full(tile_shape, np.nan)
    np.divide(missed, seen, out=out, where=seen > 0)
    return out
