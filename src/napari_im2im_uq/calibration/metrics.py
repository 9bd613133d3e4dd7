"""Evaluation metrics of the papers this project implements, on stacks of tiles.

Every function takes arrays of shape ``(n, ...)``: one tile per leading index, any number of pixel
axes after it (rows, columns, planes ...). Options are keyword-only and inputs are never mutated.

``valid``
    An optional boolean array of the same shape as the tiles. Pixels where it is False are
    ignored everywhere: they may hold NaN or inf, and they take no part in means, maxima, ranks
    or strata. A tile without a single valid pixel is refused with a ValueError.

Intervals are closed: a pixel is covered when ``lower <= truth <= upper``, as everywhere in this
project.

Lazy inputs (dask arrays, zarr arrays, anything that can be sliced along the first axis and
converted with ``np.asarray``) are read a batch of whole tiles at a time (a few million pixels per
batch), so the per-tile metrics never hold the whole stack in memory. When several arguments are
dask arrays, each batch is computed with a single ``dask.compute`` call so that a shared graph (for
example lower, point and upper from one model) runs once per batch; dask is imported only in that
case. Two metrics pool pixels across tiles and keep one float per valid pixel:
:func:`size_stratified_risk` (interval sizes, to find the quantile edges) and, up to ``max_pixels``
values, :func:`spearman_size_error`.

Sources: Angelopoulos et al. 2022 (risk histograms, interval size, size-stratified risk, Spearman
correlation, spatial miscoverage, MSE), Kutiel et al. (mask size, masked distortion, the oracle
mask "Opt"), Adame et al. (fidelity error and PSNR inside the trust mask), Mossina et al.
(activation ratio, their Eq. 17).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "activation_ratio",
    "fidelity_error",
    "interval_miscoverage",
    "interval_size",
    "mask_size",
    "masked_distortion",
    "mse",
    "oracle_mask_size",
    "psnr",
    "risk_histogram",
    "size_stratified_risk",
    "spatial_miscoverage",
    "spearman_size_error",
]

#: Number of array elements loaded per batch (over all arguments together).
_BATCH_ELEMENTS = 1 << 22

_NUMERIC = "iuf"
_MASK_KINDS = "biuf"


# --------------------------------------------------------------------------------------------
# private validation and batching helpers
# --------------------------------------------------------------------------------------------


def _describe_kind(kinds: str) -> str:
    if kinds == "b":
        return "a boolean"
    if kinds == _NUMERIC:
        return "a real-valued (integer or floating-point)"
    return "a boolean or real-valued"


def _as_tiles(x: Any, name: str, *, kinds: str = _NUMERIC, min_ndim: int = 2) -> Any:
    """Check that ``x`` is a stack of tiles; keep lazy arrays lazy, convert anything else."""
    if x is None:
        raise ValueError(f"{name} is required; got None")
    if not all(hasattr(x, attr) for attr in ("shape", "dtype", "ndim", "__getitem__")):
        x = np.asarray(x)
    try:
        kind = np.dtype(x.dtype).kind
    except TypeError:
        kind = "O"
    if kind not in kinds:
        raise ValueError(f"{name} must be {_describe_kind(kinds)} array; got dtype {x.dtype}")
    shape = tuple(int(s) for s in x.shape)
    if len(shape) < min_ndim:
        layout = "(n, ...)" if min_ndim == 2 else "(n, K, ...)"
        raise ValueError(
            f"{name} must have shape {layout}: one tile per leading index and at least "
            f"{min_ndim - 1} more axis; got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"{name} must hold at least one tile; got shape {shape}")
    if 0 in shape[1:]:
        raise ValueError(f"{name} has tiles without pixels; got shape {shape}")
    return x


def _same_shape(ref_name: str, ref: Any, **others: Any) -> None:
    for name, arr in others.items():
        if arr is not None and tuple(arr.shape) != tuple(ref.shape):
            raise ValueError(
                f"{name} must have the same shape as {ref_name}, {tuple(ref.shape)}; "
                f"got {tuple(arr.shape)}"
            )


def _as_valid(valid: Any, shape: tuple[int, ...], ref_name: str) -> Any:
    if valid is None:
        return None
    if not all(hasattr(valid, attr) for attr in ("shape", "dtype", "ndim", "__getitem__")):
        valid = np.asarray(valid)
    if np.dtype(valid.dtype).kind != "b":
        raise ValueError(
            f"valid must be a boolean array (True where a pixel counts); got dtype {valid.dtype}"
        )
    if tuple(valid.shape) != tuple(shape):
        raise ValueError(
            f"valid must have the shape of {ref_name}, {tuple(shape)}; got {tuple(valid.shape)}"
        )
    return valid


def _is_dask(x: Any) -> bool:
    return hasattr(x, "__dask_graph__") and callable(getattr(x, "compute", None))


def _slices(n: int, elements_per_tile: int) -> Iterator[slice]:
    step = max(1, _BATCH_ELEMENTS // max(1, elements_per_tile))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _load(arrays: Sequence[Any], sl: slice) -> list[np.ndarray | None]:
    """Read one batch of tiles from every array (computing dask blocks together)."""
    blocks = [None if a is None else a[sl] for a in arrays]
    lazy = [i for i, b in enumerate(blocks) if b is not None and _is_dask(b)]
    if lazy:
        import dask  # only reached when the caller passed dask arrays

        computed = dask.compute(*(blocks[i] for i in lazy))
        for i, value in zip(lazy, computed, strict=True):
            blocks[i] = value
    return [None if b is None else np.asarray(b) for b in blocks]


def _flat(block: np.ndarray) -> np.ndarray:
    return block.reshape(block.shape[0], -1)


def _first_bad_tile(bad: np.ndarray, start: int) -> tuple[int, int]:
    per_tile = _flat(bad).sum(axis=1)
    i = int(np.flatnonzero(per_tile)[0])
    return start + i, int(per_tile[i])


def _check_valid_block(v: np.ndarray | None, start: int) -> None:
    if v is None:
        return
    empty = ~_flat(v).any(axis=1)
    if empty.any():
        tile = start + int(np.flatnonzero(empty)[0])
        raise ValueError(
            f"valid must keep at least one pixel in every tile; tile {tile} has no valid pixel"
        )


def _check_finite_block(name: str, b: np.ndarray, v: np.ndarray | None, start: int) -> None:
    if b.dtype.kind != "f":
        return
    bad = ~np.isfinite(b)
    if v is not None:
        bad &= v
    if bad.any():
        tile, count = _first_bad_tile(bad, start)
        where = "valid pixels" if v is not None else "every pixel"
        raise ValueError(
            f"{name} must be finite on {where}; tile {tile} has {count} NaN or inf value(s)"
        )


def _check_order_block(lo: np.ndarray, up: np.ndarray, v: np.ndarray | None, start: int) -> None:
    bad = lo > up
    if v is not None:
        bad &= v
    if bad.any():
        tile, count = _first_bad_tile(bad, start)
        raise ValueError(
            f"lower must not exceed upper; tile {tile} has {count} pixel(s) with lower > upper"
        )


def _check_unit_block(name: str, b: np.ndarray, v: np.ndarray | None, start: int) -> None:
    if b.dtype.kind == "b":
        return
    bad = (b < 0) | (b > 1)
    if v is not None:
        bad &= v
    if bad.any():
        tile, count = _first_bad_tile(bad, start)
        raise ValueError(
            f"{name} must lie in [0, 1]; tile {tile} has {count} value(s) outside [0, 1]"
        )


def _batches(
    named: dict[str, Any], valid: Any, *, finite: Sequence[str] = ()
) -> Iterator[tuple[slice, dict[str, np.ndarray | None], np.ndarray | None]]:
    """Yield (slice, blocks, valid block) for every batch of tiles, checked."""
    names = list(named)
    arrays = [named[k] for k in names]
    present = [a for a in arrays if a is not None]
    n = int(present[0].shape[0])
    per_tile = sum(int(np.prod(a.shape[1:])) for a in present)
    for sl in _slices(n, per_tile):
        loaded = _load([*arrays, valid], sl)
        v = loaded[-1]
        _check_valid_block(v, sl.start)
        blocks = dict(zip(names, loaded[:-1], strict=True))
        for name in finite:
            if blocks[name] is not None:
                _check_finite_block(name, blocks[name], v, sl.start)
        yield sl, blocks, v


def _f64(b: np.ndarray) -> np.ndarray:
    return np.asarray(b, dtype=np.float64)


def _tile_mean(x: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """Mean over each tile's (valid) pixels of a (k, ...) block, in float64."""
    x = _flat(x)
    if v is None:
        return x.mean(axis=1, dtype=np.float64)
    v = _flat(v)
    total = np.where(v, x, 0).sum(axis=1, dtype=np.float64)
    return total / v.sum(axis=1)


def _positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def _choice(value: Any, name: str, options: Sequence[str]) -> str:
    if value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def _coverage_inputs(lower: Any, upper: Any, truth: Any | None, valid: Any) -> tuple:
    lower = _as_tiles(lower, "lower")
    upper = _as_tiles(upper, "upper")
    _same_shape("lower", lower, upper=upper)
    if truth is not None:
        truth = _as_tiles(truth, "truth")
        _same_shape("lower", lower, truth=truth)
    valid = _as_valid(valid, tuple(lower.shape), "lower")
    return lower, upper, truth, valid


# --------------------------------------------------------------------------------------------
# interval metrics (Angelopoulos et al.)
# --------------------------------------------------------------------------------------------


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
    for sl, b, v in _batches(named, valid, finite=tuple(named)):
        lo, up, y = _f64(b["lower"]), _f64(b["upper"]), _f64(b["truth"])
        _check_order_block(lo, up, v, sl.start)
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
    for sl, b, v in _batches({"lower": lower, "upper": upper}, valid, finite=("lower", "upper")):
        lo, up = _f64(b["lower"]), _f64(b["upper"])
        _check_order_block(lo, up, v, sl.start)
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
    n_strata = _positive_int(n_strata, "n_strata")
    lower, upper, truth, valid = _coverage_inputs(lower, upper, truth, valid)
    sizes, misses = [], []
    named = {"lower": lower, "upper": upper, "truth": truth}
    for sl, b, v in _batches(named, valid, finite=tuple(named)):
        lo, up, y = _f64(b["lower"]), _f64(b["upper"]), _f64(b["truth"])
        _check_order_block(lo, up, v, sl.start)
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
    per = _choice(per, "per", ("pixel", "tile"))
    if max_pixels is not None:
        max_pixels = _positive_int(max_pixels, "max_pixels", minimum=2)
    lower, upper, truth, valid = _coverage_inputs(lower, upper, truth, valid)
    prediction = _as_tiles(prediction, "prediction")
    _same_shape("lower", lower, prediction=prediction)
    n = int(lower.shape[0])
    named = {"lower": lower, "upper": upper, "truth": truth, "prediction": prediction}

    if per == "tile":
        mean_size = np.empty(n)
        mean_error = np.empty(n)
        for sl, b, v in _batches(named, valid, finite=tuple(named)):
            lo, up = _f64(b["lower"]), _f64(b["upper"])
            _check_order_block(lo, up, v, sl.start)
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
    for sl, b, v in _batches(named, valid, finite=tuple(named)):
        lo, up = _f64(b["lower"]), _f64(b["upper"])
        _check_order_block(lo, up, v, sl.start)
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
    for sl, b, v in _batches(named, valid, finite=tuple(named)):
        lo, up, y = _f64(b["lower"]), _f64(b["upper"]), _f64(b["truth"])
        _check_order_block(lo, up, v, sl.start)
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


# --------------------------------------------------------------------------------------------
# masks (Kutiel et al., Adame et al.)
# --------------------------------------------------------------------------------------------


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
    mask = _as_tiles(mask, "mask", kinds=_MASK_KINDS)
    valid = _as_valid(valid, tuple(mask.shape), "mask")
    out = np.empty(int(mask.shape[0]), dtype=np.float64)
    for sl, b, v in _batches({"mask": mask}, valid, finite=("mask",)):
        _check_unit_block("mask", b["mask"], v, sl.start)
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
    mask = _as_tiles(mask, "mask", kinds="b")
    error_map = _as_tiles(error_map, "error_map")
    _same_shape("mask", mask, error_map=error_map)
    valid = _as_valid(valid, tuple(mask.shape), "mask")
    out = np.empty(int(mask.shape[0]), dtype=np.float64)
    for sl, b, v in _batches({"mask": mask, "error_map": error_map}, valid, finite=("error_map",)):
        err = _f64(b["error_map"])
        negative = err < 0
        if v is not None:
            negative &= v
        if negative.any():
            tile, count = _first_bad_tile(negative, sl.start)
            raise ValueError(
                f"error_map must be >= 0 (a distance); tile {tile} has {count} negative value(s)"
            )
        inside = b["mask"] if v is None else b["mask"] & v
        out[sl] = _flat(np.where(inside, err, 0.0)).max(axis=1)
    return out


def _masked_mse(prediction: Any, truth: Any, mask: Any, valid: Any) -> np.ndarray:
    prediction = _as_tiles(prediction, "prediction")
    truth = _as_tiles(truth, "truth")
    _same_shape("prediction", prediction, truth=truth)
    if mask is not None:
        mask = _as_tiles(mask, "mask", kinds="b")
        _same_shape("prediction", prediction, mask=mask)
    valid = _as_valid(valid, tuple(prediction.shape), "prediction")
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


def activation_ratio(sets: Any, *, valid: Any = None) -> np.ndarray:
    """Mean number of classes in the prediction set of each valid pixel (Mossina et al., Eq. 17).

    Parameters
    ----------
    sets : array_like of bool, shape (n, K, ...)
        Multi-label prediction sets: ``sets[i, k, ...]`` is True when class ``k`` is in the set
        of that pixel. Classes are on axis 1.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count (labelled, not void); the shape of ``sets`` without axis 1.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, ``sum over valid pixels and classes of sets / number of valid pixels``: 1 for a
        plain segmentation, K when every class is in every set.

    Raises
    ------
    ValueError
        On a ``sets`` that is not boolean or has no class axis, a ``valid`` of another shape, or a
        tile without a valid pixel.

    Examples
    --------
    >>> import numpy as np
    >>> sets = np.zeros((1, 3, 1, 2), dtype=bool)
    >>> sets[0, 0, 0, 0] = True
    >>> sets[0, :, 0, 1] = True
    >>> activation_ratio(sets)
    array([2.])
    """
    sets = _as_tiles(sets, "sets", kinds="b", min_ndim=3)
    pixel_shape = (int(sets.shape[0]), *(int(s) for s in sets.shape[2:]))
    if valid is not None:
        valid = _as_valid(valid, pixel_shape, "sets without its class axis 1")
    out = np.empty(int(sets.shape[0]), dtype=np.float64)
    for sl, b, v in _batches({"sets": sets}, valid):
        per_pixel = b["sets"].sum(axis=1, dtype=np.int64)
        out[sl] = _tile_mean(per_pixel, v)
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
    distance = _choice(distance, "distance", ("l1", "l2", "ssim"))
    mask = _as_tiles(mask, "mask", kinds=_MASK_KINDS)
    prediction = _as_tiles(prediction, "prediction")
    truth = _as_tiles(truth, "truth")
    _same_shape("mask", mask, prediction=prediction, truth=truth)
    valid = _as_valid(valid, tuple(mask.shape), "mask")
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
        _check_unit_block("mask", b["mask"], v, sl.start)
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
    distance = _choice(distance, "distance", ("l1", "l2"))
    if (
        alpha is None
        or isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not np.isfinite(alpha)
        or alpha < 0
    ):
        raise ValueError(f"alpha must be a finite number >= 0 (a distortion); got {alpha!r}")
    prediction = _as_tiles(prediction, "prediction")
    truth = _as_tiles(truth, "truth")
    _same_shape("prediction", prediction, truth=truth)
    valid = _as_valid(valid, tuple(prediction.shape), "prediction")
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


# --------------------------------------------------------------------------------------------
# risk over repeated splits
# --------------------------------------------------------------------------------------------


def risk_histogram(
    risks: Any,
    *,
    bins: int = 20,
    limits: tuple[float, float] | None = None,
    alpha: float | None = None,
) -> dict[str, Any]:
    """Histogram of test risks over repeated calibration/test splits, and the violation rate.

    Angelopoulos et al. plot, for each method, the test risk of many random splits: the risk
    should fall below ``alpha`` in at least a ``1 - delta`` fraction of them.

    Parameters
    ----------
    risks : array_like, shape (m,)
        One test risk per split, finite.
    bins : int, default 20
        Number of equal-width bins.
    limits : (float, float), optional
        Range of the bins. Defaults to (0, 1) when every risk lies in [0, 1] (risks of fraction
        losses, comparable across methods), else to the smallest and largest risk.
    alpha : float, optional
        The risk level; when given, ``violation_rate`` is the fraction of risks above it.

    Returns
    -------
    dict
        ``counts`` (bins,) int64, ``edges`` (bins + 1,) float64, as ``numpy.histogram``, and
        ``violation_rate``: a float, or None when ``alpha`` is not given.

    Raises
    ------
    ValueError
        On an empty or non-1-D ``risks``, NaN or inf in it, ``bins < 1``, or ``limits`` that are
        not two finite increasing numbers.

    Examples
    --------
    >>> import numpy as np
    >>> result = risk_histogram([0.02, 0.06, 0.09, 0.12], bins=4, limits=(0.0, 0.2), alpha=0.1)
    >>> result["counts"]
    array([1, 2, 1, 0])
    >>> result["violation_rate"]
    0.25
    """
    bins = _positive_int(bins, "bins")
    arr = np.asarray(risks)
    if arr.dtype.kind not in _NUMERIC or arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            "risks must be a non-empty 1-D array of numbers, one risk per split; got "
            f"shape {arr.shape} and dtype {arr.dtype}"
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"risks must be finite; got {int(np.count_nonzero(~np.isfinite(arr)))} NaN or inf"
        )
    if limits is None:
        low, high = float(arr.min()), float(arr.max())
        limits = (0.0, 1.0) if low >= 0 and high <= 1 else (low, high)
    else:
        lim = np.asarray(limits, dtype=np.float64)
        if lim.shape != (2,) or not np.all(np.isfinite(lim)) or lim[0] >= lim[1]:
            raise ValueError(
                f"limits must be two finite numbers (low, high) with low < high; got {limits!r}"
            )
        limits = (float(lim[0]), float(lim[1]))
    counts, edges = np.histogram(arr, bins=bins, range=limits)
    rate = None
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not np.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number; got {alpha!r}")
        rate = float(np.mean(arr > alpha))
    return {"counts": counts.astype(np.int64), "edges": edges, "violation_rate": rate}
