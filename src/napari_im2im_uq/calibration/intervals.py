"""Per-pixel intervals calibrated by RCPS or conformal risk control (Angelopoulos et al. 2022)."""

from __future__ import annotations

import numpy as np

from .._validation import (
    as_tiles,
    check_choice,
    check_finite,
    check_level,
    check_same_shape,
    check_valid_block,
    is_dask,
    tile_blocks,
)
from . import _fraction
from ._common import fraction_curve, tile_phrase
from ._refining import RefiningLoss
from ._result import CalibrationResult

__all__ = ["calibrate_intervals", "interval_critical_values"]

_RULES = ("rcps", "crc")
#: Relative half-width of the exact window around the first answer. A plain quotient
#: ``q = |y - f| / width`` lies within about 4 eps (|f| + |y|) / |y - f| (relative) of its exact
#: float64 boundary c: ``f - lam (f - lower)`` rounds at an ulp of float64, twice as far on a
#: plateau. Pixels with ``|y - f| >= NEAR (|f| + |y|)`` are thus within about 1e-7 of c, and a
#: window of 1e-6 cannot miss them; the rare "near" pixels closer than that (float64 truth a
#: few ulps from the prediction; never float32-exact inputs) are made exact from the start.
_WINDOW = 1e-6
NEAR = 1e-8


def _float32_exact(dtype) -> bool:
    """Whether every value of ``dtype`` is a float32: then no pixel is "near" (see NEAR)."""
    dtype = np.dtype(dtype)
    return (dtype.kind == "f" and dtype.itemsize <= 4) or dtype.kind == "b" or (
        dtype.kind in "iu" and dtype.itemsize <= 2)


_BOUNDS = ("hoeffding", "hoeffding_bentkus", "wsr")
_CHUNK = 1 << 15  # pixels per step of the plain critical values (cache-sized)
_STORE_BYTES = 1 << 30  # critical values of lazy inputs kept in memory up to this size


def _smallest_covering(c, covered_at, done):
    """Move critical values to the smallest float at which their pixel is covered.

    ``covered_at(values, idx)`` says whether pixels ``idx`` (flat indices) are covered at
    ``values``; it is monotone in the value. ``done`` marks pixels already known to sit exactly
    on their boundary. Non-negative floats are ordered like their bit patterns, so the search
    runs on integers: up until covered, then an exponential and a binary search down to the
    boundary (``f + lam w`` can stay on one float over a plateau of many ulps of lam).
    """
    bits = c.view(np.int64)
    idx = np.flatnonzero(~done)
    idx = idx[np.isfinite(c[idx])]
    up = idx[~covered_at(c[idx], idx)]
    step = 1
    while up.size:  # 1. up until covered
        bits[up] += step
        up = up[~covered_at(c[up], up)]
        step *= 2
    idx = idx[c[idx] > 0]
    hi = bits[idx].copy()  # covered
    lo = np.full(hi.shape, -1, dtype=np.int64)  # not covered (-1: none found yet)
    active, step = np.arange(idx.size), 1
    while active.size:  # 2. exponential search down for an uncovered value
        cand = np.maximum(hi[active] - step, 0)
        cov = covered_at(cand.view(np.float64), idx[active])
        lo[active[~cov]] = cand[~cov]
        hi[active[cov]] = cand[cov]
        active = active[cov & (cand > 0)]
        step *= 2
    active = np.flatnonzero((lo >= 0) & (hi - lo > 1))
    while active.size:  # 3. binary search between them
        mid = lo[active] + (hi[active] - lo[active]) // 2
        cov = covered_at(mid.view(np.float64), idx[active])
        hi[active[cov]] = mid[cov]
        lo[active[~cov]] = mid[~cov]
        active = active[hi[active] - lo[active] > 1]
    bits[idx] = hi
    return c


def interval_critical_values(prediction, lower, upper, truth, *, exact=True):
    """Smallest lam at which each pixel's calibrated interval contains the truth.

    The value is exact for the floating-point arithmetic of
    :meth:`CalibrationResult.intervals`: the interval at lam contains the truth if and only if
    ``lam >= c``. Pixels no lam can cover (zero heuristic width on the side of the truth) get
    ``+inf``.

    Parameters
    ----------
    prediction, lower, upper, truth : ndarray, same shape
        Point prediction, heuristic lower and upper bounds (lower <= prediction <= upper), and
        ground truth.

    exact : bool or (float, float), default True
        True: every value is moved onto its exact floating-point boundary. False: the plain
        quotient ``|y - f| / width`` (within a few ulps of it, or up to ~1e-13 relative when
        ``f + lam w`` stays on one float for many lam). A window (lo, hi): exact only for the
        values inside it; the calibration uses this to pay for exactness only near lam_hat.

    Returns
    -------
    crit : ndarray of float64, same shape

    Examples
    --------
    >>> interval_critical_values(np.array([1.0]), np.array([0.0]), np.array([3.0]),
    ...                          np.array([2.0]))
    array([0.5])
    """
    f, lo, up, y = (np.asarray(a, dtype=np.float64).ravel() for a in
                    (prediction, lower, upper, truth))
    shape = np.shape(prediction)
    lw, uw = f - lo, up - f
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = y - f
        crit = np.abs(d)
        crit /= np.where(d > 0, uw, lw)  # |y - f| / width: +inf where the width is 0
        crit[np.isnan(crit)] = 0.0  # 0 / 0: the truth equals the prediction

        def covered_at(values, idx):
            fi = f[idx]
            return (fi - values * lw[idx] <= y[idx]) & (y[idx] <= fi + values * uw[idx])

        if exact is not False:
            done = ~np.isfinite(crit) | (crit == 0)
            if exact is not True:  # outside the window, unless near (see NEAR)
                near = np.abs(d) < NEAR * (np.abs(f) + np.abs(y))
                done |= ((crit < exact[0]) | (crit > exact[1])) & ~near
            crit = _smallest_covering(crit, covered_at, done)
    return crit.reshape(shape)


def _plain_block(f, lo, up, y, v, near_exact=False):
    """Plain critical values of one block, (m, d) float64, row chunk by row chunk.

    The same values as ``interval_critical_values(..., exact=False)`` (``|y - f| / width`` is
    ``max((y - f) / (up - f), (f - y) / (f - lo))``, each quotient computed alike; 0 where both
    are NaN), with invalid pixels at -inf. Returns None, without raising, when a quick check
    finds non-finite inputs or a bound on the wrong side of the prediction at a counted pixel:
    the caller then takes the checked path, which names the argument. With ``near_exact``,
    the values of "near" pixels (``|y - f| < NEAR (|f| + |y|)``) are exact instead of plain.
    """
    m = f.shape[0]
    f, lo, up, y = (np.reshape(a, (m, -1)) for a in (f, lo, up, y))
    v = None if v is None else np.reshape(v, (m, -1))
    d = f.shape[1]
    crit = np.empty((m, d))
    size = min(d, _CHUNK)
    ff, yy, lw, uw, dp, dn = (np.empty(size) for _ in range(6))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(m):
            for a in range(0, d, _CHUNK):
                b = min(a + _CHUNK, d)
                k = b - a
                f_, y_, lw_, uw_, dp_, dn_ = (x[:k] for x in (ff, yy, lw, uw, dp, dn))
                np.copyto(f_, f[i, a:b])
                np.copyto(y_, y[i, a:b])
                np.copyto(lw_, lo[i, a:b])
                np.subtract(f_, lw_, out=lw_)
                np.copyto(uw_, up[i, a:b])
                np.subtract(uw_, f_, out=uw_)
                np.subtract(y_, f_, out=dp_)
                np.subtract(f_, y_, out=dn_)
                if v is not None:
                    out = ~v[i, a:b]
                    for x in (lw_, uw_, dp_, dn_):
                        x[out] = 0.0
                total = lw_.sum() + uw_.sum() + dp_.sum()
                if not (np.isfinite(total) and lw_.min() >= 0 and uw_.min() >= 0):
                    return None
                near = None
                if near_exact:
                    near = np.abs(dp_) < NEAR * (np.abs(f_) + np.abs(y_))
                    near &= dp_ != 0
                np.divide(dp_, uw_, out=dp_)
                np.divide(dn_, lw_, out=dn_)
                c = crit[i, a:b]
                np.fmax(dp_, dn_, out=c)
                np.fmax(c, 0.0, out=c)  # 0 / 0 on both sides: the truth equals the prediction
                if near is not None and near.any():
                    j = np.flatnonzero(near)
                    c[j] = interval_critical_values(*(x[i, a + j] for x in (f, lo, up, y)))
                if v is not None:
                    c[out] = -np.inf
    return crit


def _interval_blocks(prediction, lower, upper, truth, valid, n, block_tiles, exact):
    arrays = {"f": prediction, "lo": lower, "up": upper, "y": truth, "valid": valid}
    near_exact = not all(_float32_exact(a.dtype) for a in (prediction, lower, upper, truth))

    def blocks():
        for start, b in tile_blocks(n, arrays, block_tiles=block_tiles):
            m = b["f"].shape[0]
            v = check_valid_block(b["valid"], start)
            if exact is False:
                crit = _plain_block(b["f"], b["lo"], b["up"], b["y"], v, near_exact)
                if crit is not None:
                    if v is None:
                        weight = np.full((m, 1), 1.0 / crit.shape[1])
                    else:
                        weight = (1.0 / v.reshape(m, -1).sum(axis=1))[:, None]
                    yield start, crit, weight
                    continue
            for name, key in (("prediction", "f"), ("lower", "lo"), ("upper", "up"),
                              ("truth", "y")):
                check_finite(b[key], name, where=v, offset=start)
            f, lo, up = (np.asarray(b[k], dtype=np.float64) for k in ("f", "lo", "up"))
            inside = np.ones(f.shape, bool) if v is None else v
            if np.any((lo > f) & inside):
                bad = int(np.count_nonzero((lo > f) & inside))
                raise ValueError(
                    f"lower must be at most prediction at every pixel; got {bad} pixel(s) with "
                    "lower > prediction (pass the heuristic's lower bound, not a width)"
                )
            if np.any((up < f) & inside):
                bad = int(np.count_nonzero((up < f) & inside))
                raise ValueError(
                    f"upper must be at least prediction at every pixel; got {bad} pixel(s) with "
                    "upper < prediction (pass the heuristic's upper bound, not a width)"
                )
            crit = interval_critical_values(f, lo, up, b["y"], exact=exact).reshape(m, -1)
            if v is None:
                weight = np.full((m, 1), 1.0 / crit.shape[1])
            else:
                vflat = v.reshape(m, -1)
                crit[~vflat] = -np.inf
                weight = (1.0 / vflat.sum(axis=1))[:, None]
            yield start, crit, weight

    return blocks


def _in_window(crit, lo, hi):
    """(rows, cols) of the values in [lo, hi] (0 < lo <= hi < inf), row chunk by row chunk."""
    rows, cols = [], []
    d = crit.shape[1]
    for i in range(crit.shape[0]):
        for a in range(0, d, _CHUNK):
            c = crit[i, a : a + _CHUNK]
            sel = c >= lo
            sel &= c <= hi
            if sel.any():
                j = np.flatnonzero(sel) + a
                rows.append(np.full(j.size, i))
                cols.append(j)
    if not rows:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    return np.concatenate(rows), np.concatenate(cols)


def _refine(crit, start, exact, prediction, lower, upper, truth):
    """Make the cached values of one block exact in place (inside ``exact`` if a window).

    Returns the (rows, cols) of the values it touched.
    """
    if exact is not True and 0 < exact[0] <= exact[1] < np.inf:
        rows, cols = _in_window(crit, exact[0], exact[1])  # finite and positive already
    else:
        sel = np.isfinite(crit) & (crit > 0)
        if exact is not True:
            sel &= (crit >= exact[0]) & (crit <= exact[1])
        rows, cols = np.nonzero(sel)
    if not rows.size:
        return rows, cols
    m = crit.shape[0]
    picks = [np.asarray(a[start : start + m]).reshape(m, -1)[rows, cols]
             for a in (prediction, lower, upper, truth)]
    crit[rows, cols] = interval_critical_values(*picks, exact=True)
    return rows, cols


def _exact_picks(prediction, lower, upper, truth):
    """(start, rows, cols) -> exact critical values of those pixels of the block at ``start``."""

    def exact(start, rows, cols):
        m = int(rows.max()) + 1
        picks = [np.asarray(a[start : start + m]).reshape(m, -1)[rows, cols]
                 for a in (prediction, lower, upper, truth)]
        return interval_critical_values(*picks, exact=True)

    return exact


def _stats_after_window(stats, touched, window, n):
    """Update the plain values' stats after the values in ``window`` were made exact in place.

    Refinement keeps +inf, 0 and positive values what they are, so the weights above 0 and at
    +inf stay; the largest finite value changes only through touched values (it is recomputed
    when its own pixel may have been touched: None is returned); the subsample is gathered and
    sorted again only if a touched value lies on its stride.
    """
    w_inf, w_pos, cmax, sub = stats
    if not any(rows.size for _, _, rows, _ in touched):
        return stats
    if cmax <= window[1]:
        return None
    cmax = max([cmax] + [float(crit[rows, cols].max()) for crit, _, rows, cols in touched
                         if rows.size])
    per_tile = _fraction.subsample_per_tile(n)
    if any(np.any(cols % _fraction.subsample_stride(crit.shape[1], per_tile) == 0)
           for crit, _, _, cols in touched):
        parts = [_fraction.block_subsample(crit, weight, per_tile)
                 for crit, weight, _, _ in touched]
        sub = _fraction.sorted_subsample([v for v, _ in parts], [w for _, w in parts])
    return w_inf, w_pos, cmax, sub


def calibrate_intervals(prediction, lower, upper, truth, *, alpha, delta=0.1, rule="rcps",
                        bound="hoeffding_bentkus", valid=None, seed=0, block_tiles=16,
                        curve=True):
    """Calibrate per-pixel intervals so few pixels fall outside them.

    The intervals are ``T_lam = [f - lam (f - lower), f + lam (upper - f)]`` (Eq. 1 of
    Angelopoulos et al. 2022) and the loss of a tile is the fraction of its valid pixels whose
    truth falls outside its interval. ``lam_hat`` is computed exactly from the pixels' own
    critical values, never read off a grid.

    Parameters
    ----------
    prediction, lower, upper, truth : array_like, shape (n, ...)
        One calibration tile per leading index (numpy or dask; dask inputs are streamed chunk
        by chunk along the leading axis, so memory holds a few chunks, not n tiles). ``lower``
        and ``upper`` are the heuristic's bounds (for a symmetric heuristic with scale s:
        ``prediction - s`` and ``prediction + s``).
    alpha : float
        Tolerated fraction of pixels outside their interval, in (0, 1).
    delta : float, default 0.1
        For ``rule="rcps"``: the probability, over the calibration draw, that the guarantee
        fails. Ignored by "crc".
    rule : {"rcps", "crc"}
        "rcps": risk-controlling prediction sets, ``P(E[loss] > alpha) <= delta``.
        "crc": conformal risk control, ``E[loss] <= alpha`` on average over calibration draws.
    bound : {"hoeffding_bentkus", "hoeffding", "wsr"}
        Concentration bound for "rcps".
    valid : array_like of bool, optional
        Pixels that count (e.g. where ground truth exists); each tile needs at least one.
    seed : int, default 0
        Seed of the fixed random order of the tiles in the WSR running product.
    block_tiles : int, default 16
        Tiles processed together for in-memory inputs (bounds temporary memory).
    curve : bool, default True
        Compute the risk curve (``result.curve``; an empty dict without it). Diagnostics that
        recalibrate many times and read only ``lam`` leave it out.

    Returns
    -------
    CalibrationResult
        With ``method="intervals"``; apply it with ``result.intervals(prediction, lower, upper)``.

    Raises
    ------
    InfeasibleCalibrationError
        When too few tiles are given for (alpha, delta), or alpha is not reachable.
    ValueError
        For inputs of the wrong shape or values (the message names the argument).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(200, 16, 16))
    >>> pred = np.zeros_like(truth)
    >>> res = calibrate_intervals(pred, pred - 1, pred + 1, truth, alpha=0.1, delta=0.1)
    >>> 1.6 < res.lam < 2.0
    True
    """
    alpha = check_level(alpha, "alpha")
    check_choice(rule, "rule", _RULES)
    if rule == "rcps":
        delta = check_level(delta, "delta")
        check_choice(bound, "bound", _BOUNDS)
    prediction = as_tiles(prediction, "prediction")
    lower = as_tiles(lower, "lower")
    upper = as_tiles(upper, "upper")
    truth = as_tiles(truth, "truth")
    check_same_shape("prediction", prediction, lower=lower, upper=upper, truth=truth)
    if valid is not None:
        valid = valid if is_dask(valid) else np.asarray(valid)
        check_same_shape("prediction", prediction, valid=valid)
    n = int(prediction.shape[0])
    lazy = any(is_dask(a) for a in (prediction, lower, upper, truth, valid) if a is not None)
    # Lazy inputs are read once: their critical values are kept (8 bytes a pixel) and every
    # later step, the risk curve included, replays them; only the pixels near lam_hat are read
    # again to be made exact. Beyond _STORE_BYTES the blocks are streamed at every pass instead.
    stream = lazy and n * int(np.prod(prediction.shape[1:])) * 8 > _STORE_BYTES
    wsr = rule == "rcps" and bound == "wsr"

    plain = None  # the plain quotients, computed once and refined in place
    plain_exact = False  # whether they were computed exact from the start (lazy WSR)
    previous = None  # the last stored loss: its stats are updated, not recomputed

    def make_loss(exact):
        nonlocal plain, plain_exact, previous
        if stream:
            blocks = _interval_blocks(prediction, lower, upper, truth, valid, n, block_tiles,
                                      exact)
            return _fraction.FractionLoss(blocks, n)
        if plain is None:
            plain_exact = lazy and exact is True  # one read, exact at once
            plain = list(_interval_blocks(prediction, lower, upper, truth, valid, n,
                                          block_tiles, plain_exact)())
        stats = None if previous is None else previous._cached_stats
        if exact is not False and not plain_exact:
            touched = []
            for start, crit, weight in plain:
                rows, cols = _refine(crit, start, exact, prediction, lower, upper, truth)
                touched.append((crit, weight, rows, cols))
            if exact is True or stats is None:
                stats = None
            else:
                stats = _stats_after_window(stats, touched, exact, n)
        stored = plain

        def replay():
            yield from stored

        previous = _fraction.FractionLoss(replay, n, _cached_stats=stats, in_memory=True)
        return previous

    def solve(loss):
        if rule == "crc":
            return _fraction.crc(loss, alpha), None
        return _fraction.rcps(loss, alpha, delta, bound=bound, seed=seed)

    # Mean-risk controllers only need exact critical values near lam_hat: solve on the plain
    # quotients (exact for "near" pixels, see NEAR), make the values within 1e-6 of that answer
    # exact, and solve again. The second answer is exact when it falls inside the window (values
    # outside it cannot change sides of any lam in it); otherwise, and always for WSR, every
    # value is made exact.
    if wsr and not (lazy or stream):
        # In memory, WSR asks about many lams: the plain values are made exact only near the
        # numbers its questions compare them with, and inside the ranges whose values it reads.
        make_loss(False)
        loss = RefiningLoss(plain, n, _exact_picks(prediction, lower, upper, truth), _WINDOW)
        lam, order = solve(loss)
    elif wsr:
        loss = make_loss(True)
        lam, order = solve(loss)
    else:
        lam0, _ = solve(make_loss(False))
        if lam0 == 0:
            loss, lam, order = make_loss(False), 0.0, None  # only y == f pixels: already exact
        else:
            window = (lam0 * (1 - _WINDOW), lam0 * (1 + _WINDOW))
            loss = make_loss(window)
            lam, order = solve(loss)
            if not window[0] < lam < window[1]:
                loss = make_loss(True)
                lam, order = solve(loss)
    at_hat = loss.tile_losses([lam])[:, 0]
    risk = float(at_hat.mean())
    if curve:
        curve = fraction_curve(loss, lam, at_hat, rule=rule, alpha=alpha, delta=delta,
                               bound=bound, order=order)
    tile = tile_phrase(prediction.shape[1:])
    if rule == "rcps":
        guarantee = (
            f"With probability at least {1 - delta:.0%} over the draw of the {n} calibration "
            f"tiles, a new {tile} tile from the same population has, in expectation, at most "
            f"{alpha:.1%} of its pixels outside their intervals."
        )
    else:
        guarantee = (
            f"On average over the calibration draw and a new {tile} tile from the same population "
            f"as the {n} calibration tiles, at most {alpha:.1%} of the new tile's pixels fall "
            "outside their intervals."
        )
    guarantee += (
        " It holds for tiles exchangeable with the calibration tiles; it says nothing about "
        "regions unlike them."
    )
    return CalibrationResult(
        method="intervals",
        lam=float(lam),
        alpha=alpha,
        delta=delta if rule == "rcps" else None,
        n=n,
        rule=rule,
        bound=bound if rule == "rcps" else None,
        valid=True,
        guarantee=guarantee,
        loss="miscoverage",
        loss_bound=1.0,
        tile_shape=tuple(int(s) for s in prediction.shape[1:]),
        empirical_risk=risk,
        curve=curve or {},
        params={"seed": int(seed)} if rule == "rcps" and bound == "wsr" else {},
    )
