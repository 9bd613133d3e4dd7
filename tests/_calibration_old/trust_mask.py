"""Binary trust masks ``{sigma <= t}`` calibrated by conformal risk control (Adame et al. 2025).

The loss of a tile is its *fidelity error*, the supremum of a local error ``D_p`` over the pixels
it trusts: ``L_i(t) = max{D_p : sigma_p <= t}`` (0 for an empty mask), which grows with t. The
threshold is Eq. (1) of the paper,

    t_hat = sup{t : (sum_i L_i(t) + B) / (n + 1) <= alpha},

returned, as the paper's Algorithms 1 and 2 do, as the largest observed sigma value at which the
condition holds (+inf when it holds at every sigma: trust everything; -inf when it holds at none:
trust nothing). Masks use ``sigma <= t_hat`` at calibration and application alike.

The computation is exact and never sorts all pixels: a strided subsample's records bound the
answer from above (the subsample's fidelity error can only be smaller), one exact pass bounds it
from below, and only the pixels between the two bounds that can raise a tile's running maximum
are sorted and swept.
"""

from __future__ import annotations

import numpy as np

from napari_im2im_uq._validation import (
    as_tiles,
    check_choice,
    check_finite,
    check_same_shape,
    check_valid_block,
    is_dask,
    tile_blocks,
)
from napari_im2im_uq.calibration._errors import crc_threshold
from napari_im2im_uq.calibration._fidelity import (
    _CHUNK,
    _check_range,
    _chunk_error,
    _pointwise_block,
    _resolve_bound,
    fidelity_error_map,
)
from napari_im2im_uq.calibration._result import CalibrationResult

from ._common import tile_phrase

__all__ = ["calibrate_trust_mask", "fidelity_error_map"]

_FIDELITY = ("pointwise", "blurred", "given")
_SUBSAMPLE_PIXELS = 1 << 12  # per tile, for the upper bound
_TOP_SHARE = 1 / 128  # share of each tile's pixels its first top set aims at
_TOP_LIMIT = 1 << 23  # pixels all top sets may hold together before the bracketed search


def _records(sigma, D):
    """Per-row records of the running max of D in sigma order: (t, jump, row) arrays."""
    order = np.argsort(sigma, axis=1, kind="stable")
    s = np.take_along_axis(sigma, order, axis=1)
    d = np.take_along_axis(D, order, axis=1)
    run = np.maximum.accumulate(np.maximum(d, 0.0), axis=1)
    prev = np.concatenate([np.zeros((run.shape[0], 1)), run[:, :-1]], axis=1)
    jump = run - prev
    rows, cols = np.nonzero(jump > 0)
    return s[rows, cols], jump[rows, cols], rows


def calibrate_trust_mask(sigma, prediction=None, truth=None, *, alpha, fidelity="pointwise",
                         blur_sigma=None, fidelity_error=None, loss_bound=None, data_range=None,
                         valid=None, block_tiles=16, curve_points=16):
    """Calibrate a binary trust mask ``{sigma <= t}`` that bounds the worst trusted error.

    Guarantee (Theorem 2.1 of Adame et al.): for a new tile from the same population,
    ``E[max over trusted pixels of D_p] <= alpha``, in expectation over the calibration draw
    and the new tile.

    Parameters
    ----------
    sigma : array_like, shape (n, ...)
        Any per-pixel indecision score (calibrated interval width, sample variance, a user
        layer); lower means more trustworthy. Numpy or dask (streamed along the leading axis).
    prediction, truth : array_like, shape (n, ...), optional
        Needed for ``fidelity="pointwise"`` or ``"blurred"``.
    alpha : float
        Tolerated expected fidelity error, in the units of D (e.g. intensity), in (0, B).
    fidelity : {"pointwise", "blurred", "given"}
        How D_p is measured: ``|y - yhat|``, ``|K*y - K*yhat|`` (Gaussian K of ``blur_sigma``
        pixels), or the user's own ``fidelity_error`` map (the paper's annotated D_p).
    blur_sigma : float, optional
        Standard deviation of K for "blurred".
    fidelity_error : array_like, shape (n, ...), optional
        D_p itself, for ``fidelity="given"``.
    loss_bound : float, optional
        B, the largest possible D_p. Give it, or ``data_range``; it is never guessed.
    data_range : (float, float), optional
        (low, high) range of the images: B = high - low for pointwise and blurred errors (a
        Gaussian blur with unit mass keeps the same bound). Data outside it are refused.
    valid : array_like of bool, optional
        Pixels with ground truth; the others are neither trusted nor counted at calibration.
    block_tiles : int, default 16
        Tiles processed together for in-memory inputs.
    curve_points : int, default 16
        Extra exact points of the risk curve (each costs one pass over the data).

    Returns
    -------
    CalibrationResult
        ``method="trust_mask"``, ``lam`` = t_hat; apply with ``result.trust_mask(sigma)``;
        ``result.leakage_bound(k)`` gives the bound of Prop. 3.2 if k tiles leaked.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> err = np.abs(rng.normal(size=(100, 8, 8))) * 0.1
    >>> sigma = err + rng.normal(scale=0.02, size=err.shape)
    >>> res = calibrate_trust_mask(sigma, np.zeros_like(err), err, alpha=0.2, data_range=(0, 1))
    >>> bool(np.isfinite(res.lam))
    True
    """
    check_choice(fidelity, "fidelity", _FIDELITY)
    sigma = as_tiles(sigma, "sigma")
    if fidelity == "given":
        if fidelity_error is None:
            raise ValueError("fidelity_error is required for fidelity='given'; got None")
        fidelity_error = as_tiles(fidelity_error, "fidelity_error")
        check_same_shape("sigma", sigma, fidelity_error=fidelity_error)
        if loss_bound is None:
            raise ValueError(
                "loss_bound is required with fidelity='given': state the largest value your "
                "fidelity_error map can take (B of the CRC correction); got None"
            )
    else:
        if fidelity_error is not None:
            raise ValueError(
                f"fidelity_error was given but fidelity={fidelity!r}; pass fidelity='given' to "
                "use your own error map"
            )
        if prediction is None or truth is None:
            raise ValueError(
                f"prediction and truth are required for fidelity={fidelity!r}; got "
                f"prediction={'None' if prediction is None else 'an array'}, "
                f"truth={'None' if truth is None else 'an array'}"
            )
        prediction = as_tiles(prediction, "prediction")
        truth = as_tiles(truth, "truth")
        check_same_shape("sigma", sigma, prediction=prediction, truth=truth)
        if fidelity == "blurred":
            fidelity_error_map(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), fidelity="blurred",
                               blur_sigma=blur_sigma)  # validates blur_sigma early
    bound = _resolve_bound(loss_bound, data_range, fidelity)
    alpha_max = bound
    if isinstance(alpha, bool) or not np.isscalar(alpha) or not (0 < float(alpha) < alpha_max):
        raise ValueError(f"alpha must be in (0, B) = (0, {alpha_max:g}); got {alpha!r}")
    alpha = float(alpha)
    if valid is not None:
        valid = valid if is_dask(valid) else np.asarray(valid)
        check_same_shape("sigma", sigma, valid=valid)

    n = int(sigma.shape[0])
    arrays = {"sigma": sigma, "pred": prediction, "truth": truth, "D": fidelity_error,
              "valid": valid}
    lazy = any(a is not None and is_dask(a) for a in arrays.values())

    tile_max = np.zeros(n)  # each tile's largest D, written by compute_blocks

    def compute_blocks():
        for start, b in tile_blocks(n, arrays, block_tiles=block_tiles):
            m = b["sigma"].shape[0]
            v = check_valid_block(b["valid"], start)
            if v is None and fidelity == "pointwise":
                quick = _pointwise_block(b["sigma"], b["pred"], b["truth"], bound, data_range,
                                         tile_max[start : start + m])
                if quick is not None:
                    yield start, *quick
                    continue
            check_finite(b["sigma"], "sigma", where=v, offset=start)
            if fidelity == "given":
                check_finite(b["D"], "fidelity_error", where=v, offset=start)
                D = np.asarray(b["D"], dtype=np.float64)
            else:
                if data_range is not None:
                    _check_range(b["pred"], "prediction", data_range, v)
                    _check_range(b["truth"], "truth", data_range, v)
                D = fidelity_error_map(b["pred"], b["truth"], fidelity=fidelity,
                                       blur_sigma=blur_sigma)
                if v is None and not np.isfinite(D.max()):  # NaN or inf in either input
                    check_finite(b["pred"], "prediction", offset=start)
                    check_finite(b["truth"], "truth", offset=start)
                elif v is not None:
                    check_finite(b["pred"], "prediction", where=v, offset=start)
                    check_finite(b["truth"], "truth", where=v, offset=start)
            D = D.reshape(m, -1)
            s = np.asarray(b["sigma"], dtype=np.float64).reshape(m, -1)
            if v is not None:
                vflat = v.reshape(m, -1)
                D = np.where(vflat, D, -np.inf)
                s = np.where(vflat, s, np.inf)
                check = D[vflat]
            else:
                check = D
            if check.size and (check.min() < 0 or check.max() > bound * (1 + 1e-12)):
                raise ValueError(
                    f"fidelity_error must lie in [0, B] = [0, {bound:g}]; got values from "
                    f"{check.min():g} to {check.max():g} (state a larger loss_bound)"
                )
            tile_max[start : start + m] = np.maximum(D.max(axis=1), 0.0)
            yield start, s, D

    threshold = crc_threshold(n, alpha, bound, what="a trust mask")
    scan = None
    if not lazy and valid is None and fidelity == "pointwise":
        scan = _scan_pointwise(sigma, prediction, truth, n, bound, data_range, block_tiles,
                               store=curve_points > 0)
    if scan is not None:
        full, subs, first, blocks, sigmas = scan
        t_hat, at_hat = _solve(blocks, n, threshold, top_sets=True, full=full, subs=subs,
                               first=first, sigmas=sigmas)
    else:
        if lazy:
            blocks = compute_blocks
        else:
            stored = list(compute_blocks())  # raises on bad input

            def blocks():
                yield from stored

        t_hat, at_hat = _solve(blocks, n, threshold, top_sets=not lazy,
                               full=None if lazy else tile_max)
    risk = float(at_hat.mean())
    curve = _curve(blocks, n, t_hat, bound, curve_points, at_hat)
    tile = tile_phrase(sigma.shape[1:])
    error_words = {
        "pointwise": "absolute error |truth - prediction|",
        "blurred": f"absolute error after a Gaussian blur of {blur_sigma:g} px" if blur_sigma
        else "",
        "given": "fidelity error (your map)",
    }[fidelity]
    guarantee = (
        f"On average over the calibration draw and a new {tile} tile from the same population as "
        f"the {n} calibration tiles, the largest {error_words} among the pixels the mask trusts "
        f"is at most {alpha:g}."
    )
    if t_hat == np.inf:
        guarantee += " Every pixel is trusted at this level."
    elif t_hat == -np.inf:
        guarantee += " No pixel can be trusted at this level."
    guarantee += (
        " It holds for tiles exchangeable with the calibration tiles and a model and score that "
        "never saw them; if k of them leaked into training the bound becomes "
        "alpha (n + 1) / (n - k + 1) (result.leakage_bound(k))."
    )
    return CalibrationResult(
        method="trust_mask",
        lam=float(t_hat),
        alpha=alpha,
        n=n,
        rule="crc",
        valid=True,
        guarantee=guarantee,
        loss=f"fidelity_{fidelity}",
        loss_bound=float(bound),
        tile_shape=tuple(int(s) for s in sigma.shape[1:]),
        empirical_risk=risk,
        curve=curve,
        params={"fidelity": fidelity, "blur_sigma": blur_sigma,
                "data_range": None if data_range is None else [float(x) for x in data_range]},
    )


def _scan_pointwise(sigma, pred, truth, n, bound, data_range, block_tiles, store):
    """One pass over in-memory pointwise data without a valid mask; None if a check fails.

    Per cache-sized chunk it does what ``_pointwise_block`` does (the checks, D and each tile's
    largest D) and also collects each tile's first top set ``{D >= q_i}`` (see ``_solve_top``;
    q_i is read off the tile's strided subsample first). D is kept only with ``store`` (the
    risk curve reads it again); otherwise later passes recompute it. Returns (tile maxima,
    subsamples, (levels, top set or None past _TOP_LIMIT), blocks).
    """
    full = np.zeros(n)
    subs, levels, stored = [], [], []
    s_top, d_top, tile_top = [], [], []
    count = 0
    limit = bound * (1 + 1e-12)
    lo, hi = (None, None) if data_range is None else (float(x) for x in data_range)
    arrays = {"sigma": sigma, "pred": pred, "truth": truth}
    for start, b in tile_blocks(n, arrays, block_tiles=block_tiles):
        m = b["sigma"].shape[0]
        s = np.asarray(b["sigma"], dtype=np.float64).reshape(m, -1)
        p = np.asarray(b["pred"]).reshape(m, -1)
        y = np.asarray(b["truth"]).reshape(m, -1)
        d = s.shape[1]
        stride = max(1, d // _SUBSAMPLE_PIXELS)
        with np.errstate(invalid="ignore", over="ignore"):  # bad values are refused below
            dd = np.abs(np.subtract(y[:, ::stride], p[:, ::stride], dtype=np.float64))
        subs.append((s[:, ::stride].copy(), dd))
        q = _top_levels(dd, _TOP_SHARE)
        levels.append(q)
        D = np.empty((m, d)) if store else None
        buf = np.empty(min(d, _CHUNK))
        work = None if store else np.empty(min(d, _CHUNK))
        for i in range(m):
            top = 0.0
            for a in range(0, d, _CHUNK):
                e = min(a + _CHUNK, d)
                out = D[i, a:e] if store else work[: e - a]
                chunk_max = _chunk_error(s[i, a:e], p[i, a:e], y[i, a:e], out, buf[: e - a],
                                         lo, hi, limit)
                if chunk_max is None:
                    return None
                top = max(top, chunk_max)
                if count <= _TOP_LIMIT:
                    idx = np.flatnonzero(out >= q[i] if q[i] > 0 else out > 0)
                    count += idx.size
                    if idx.size and count <= _TOP_LIMIT:
                        s_top.append(s[i, a + idx])
                        d_top.append(out[idx])
                        tile_top.append(np.full(idx.size, start + i))
            full[start + i] = top
        if store:
            stored.append((start, s, D))
    top_set = None
    if count <= _TOP_LIMIT:
        top_set = tuple(np.concatenate(x) if x else np.empty(0, dt) for x, dt in
                        ((s_top, np.float64), (d_top, np.float64), (tile_top, np.intp)))
    if store:
        def blocks():
            yield from stored
    else:
        def blocks():
            for start, b in tile_blocks(n, arrays, block_tiles=block_tiles):
                m = b["sigma"].shape[0]
                s = np.asarray(b["sigma"], dtype=np.float64).reshape(m, -1)
                yield start, s, fidelity_error_map(b["pred"], b["truth"]).reshape(m, -1)

    def sigmas():
        for _, b in tile_blocks(n, {"sigma": sigma}, block_tiles=block_tiles):
            yield np.asarray(b["sigma"], dtype=np.float64).reshape(b["sigma"].shape[0], -1)

    return full, subs, (np.concatenate(levels), top_set), blocks, sigmas


def _tile_losses(blocks, n, t):
    out = np.zeros(n)
    for start, s, D in blocks():
        out[start : start + s.shape[0]] = np.max(D, axis=1, where=s <= t, initial=0.0)
    return out


def _solve(blocks, n, threshold, *, top_sets=False, full=None, subs=None, first=None,
           sigmas=None):
    """Return (t_hat, per-tile losses at t_hat).

    With ``top_sets`` (in-memory inputs) the top-set method is tried first; the bracketed
    method below answers when it declines. ``full`` (each tile's largest D, at least 0),
    ``subs`` (the strided subsamples) and ``first`` (the first levels and top set) are used
    when a scan already computed them; ``sigmas`` yields the sigma blocks alone.
    """
    # pass 1: per-tile fidelity error with everything trusted, and a strided subsample
    if full is None or subs is None:
        known = full is not None
        full = full.copy() if known else np.zeros(n)
        subs = []
        for start, s, D in blocks():
            if not known:
                full[start : start + s.shape[0]] = np.maximum(D.max(axis=1), 0.0)
            stride = max(1, s.shape[1] // _SUBSAMPLE_PIXELS)
            subs.append((s[:, ::stride].copy(), D[:, ::stride].copy()))
    if full.sum() <= threshold:
        return np.inf, full
    if top_sets:
        got = _solve_top(blocks, n, threshold, np.concatenate([dd for _, dd in subs]), first,
                         sigmas)
        if got is not None:
            return got
    return _solve_bracketed(blocks, n, threshold, subs)


def _top_levels(sub_d, share):
    """Per tile, the level whose top set {D >= q} holds about ``share`` of the tile's pixels.

    Read off the tile's subsample of D (-inf marks pixels that do not count); 0 when the
    subsample has no counted pixel (the top set is then {D > 0}).
    """
    ordered = -np.sort(-sub_d, axis=1)  # decreasing; -inf (not counted) last
    counted = np.count_nonzero(sub_d >= 0, axis=1)
    k = np.maximum(1, np.ceil(share * counted).astype(np.intp))
    q = ordered[np.arange(sub_d.shape[0]), np.minimum(k, sub_d.shape[1]) - 1]
    return np.where(counted > 0, q, 0.0)


def _collect_top(blocks, q, limit):
    """(sigma, D, tile) of every pixel in a top set, in tile order; None past ``limit`` pixels.

    The top set of tile i is {D >= q_i} when q_i > 0, else {D > 0}.
    """
    s_all, d_all, tiles = [], [], []
    total = 0
    for start, s, D in blocks():
        for i in range(s.shape[0]):
            level = q[start + i]
            sel = D[i] >= level if level > 0 else D[i] > 0
            idx = np.flatnonzero(sel)
            total += idx.size
            if total > limit:
                return None
            s_all.append(s[i, idx])
            d_all.append(D[i, idx])
            tiles.append(np.full(idx.size, start + i))
    return np.concatenate(s_all), np.concatenate(d_all), np.concatenate(tiles)


def _per_tile(values, tiles, n, reduce, empty):
    """``reduce`` of ``values`` within each tile (``tiles`` sorted), ``empty`` for none."""
    out = np.full(n, empty)
    if values.size:
        cuts = np.flatnonzero(np.r_[True, tiles[1:] != tiles[:-1]])
        out[tiles[cuts]] = reduce.reduceat(values, cuts)
    return out


def _solve_top(blocks, n, threshold, sub_d, first=None, sigmas=None):
    """Exact t_hat from each tile's top set {D >= q_i}, or None to leave it to the bracket.

    If a tile's top set holds a pixel with sigma <= t, the tile's loss at t is the largest D of
    its top set up to t (every other pixel has a smaller D); with q_i <= 0 the top set is
    {D > 0} and the loss is 0 below its smallest sigma. So above t* (the largest smallest-sigma
    of the tiles with q_i > 0) the top sets give the exact losses, and every record above t* is
    in them. If the total at t* is within the threshold, the answer lies above t* and is found
    by sweeping the few top-set pixels above t* that raise a tile's maximum; otherwise the
    levels are lowered (larger top sets), and past ``_TOP_LIMIT`` pixels None is returned.
    ``first``: the levels and top set of the first share, if a scan already collected them;
    ``sigmas``: the sigma blocks alone (default: from ``blocks``).
    """
    share = _TOP_SHARE
    while True:
        if first is not None and share == _TOP_SHARE:
            q, top = first
        else:
            q = _top_levels(sub_d, share)
            top = _collect_top(blocks, q, _TOP_LIMIT)
        if top is None:
            return None
        s_t, d_t, tile_t = top
        tau = _per_tile(s_t, tile_t, n, np.minimum, np.inf)
        need = q > 0
        t_star = float(tau[need].max()) if need.any() else -np.inf
        below = s_t <= t_star
        base = np.maximum(_per_tile(np.where(below, d_t, 0.0), tile_t, n, np.maximum, 0.0), 0.0)
        if base.sum() <= threshold:
            break
        if share >= 1 / 8:
            return None
        share *= 8
    sel = ~below & (d_t > base[tile_t])
    swept = _sweep(s_t[sel], d_t[sel], tile_t[sel], base, threshold)
    if swept is None:
        return None
    t_fail, cand_t, cand_tile, run_all = swept
    below = s_t[s_t < t_fail]  # observed values below the failure: t* at least
    if sigmas is None:
        def sigmas():
            for _, s, _ in blocks():
                yield s
    best = _largest_below(sigmas, t_fail, float(below.max()) if below.size else -np.inf)
    losses = base.copy()
    reached = cand_t <= best
    np.maximum.at(losses, cand_tile[reached], run_all[reached])
    return best, losses


def _sweep(cand_t, cand_d, cand_tile, base, threshold):
    """First sigma value at which the total exceeds the threshold, sweeping the candidates.

    ``base`` holds the tiles' losses below every candidate; the candidates come grouped by tile
    (in pixel order within a tile). Each tile's candidates are sorted by sigma on their own
    (stable), and only its records (the candidates that raise its running maximum) enter the
    global sort: the others add exact zeros to the running total. Returns (t_fail, the records'
    sigma, tiles and running maxima); None when the total never exceeds the threshold.
    """
    if cand_tile.size and np.any(cand_tile[1:] < cand_tile[:-1]):
        order = np.argsort(cand_tile, kind="stable")
        cand_t, cand_d, cand_tile = cand_t[order], cand_d[order], cand_tile[order]
    rec_t, rec_jump, rec_run, rec_tile = [], [], [], []
    cuts = np.flatnonzero(np.r_[True, cand_tile[1:] != cand_tile[:-1], True])
    for a, b in zip(cuts[:-1], cuts[1:]):
        tile = cand_tile[a]
        order = np.argsort(cand_t[a:b], kind="stable")
        t = cand_t[a:b][order]
        run = np.maximum.accumulate(np.maximum(cand_d[a:b][order], base[tile]))
        jump = run - np.r_[base[tile], run[:-1]]
        keep = jump != 0
        rec_t.append(t[keep])
        rec_jump.append(jump[keep])
        rec_run.append(run[keep])
        rec_tile.append(np.full(np.count_nonzero(keep), tile))
    if not rec_t:
        return None
    rec_t, rec_jump, rec_run, rec_tile = (np.concatenate(x) for x in
                                          (rec_t, rec_jump, rec_run, rec_tile))
    order = np.argsort(rec_t, kind="stable")
    t_sorted, total = rec_t[order], base.sum() + np.cumsum(rec_jump[order])
    last_of_group = np.r_[t_sorted[1:] != t_sorted[:-1], True]
    over = np.flatnonzero(last_of_group & (total > threshold))
    if not over.size:
        return None
    return float(t_sorted[over[0]]), rec_t, rec_tile, rec_run


def _largest_below(sigmas, t, floor):
    """Largest observed sigma strictly below ``t``; ``floor`` (< t) is an observed sigma value.

    Only values in (floor, t) can beat the floor: each cache-sized chunk is first asked how
    many it holds (two counts), and only chunks holding some are searched.
    """
    best = floor
    for s in sigmas():
        for row in s:
            for a in range(0, row.size, _CHUNK):
                c = row[a : a + _CHUNK]
                if np.count_nonzero(c > best) > np.count_nonzero(c >= t):
                    inside = c[(c > best) & (c < t)]
                    best = float(inside.max())
    return best


def _solve_bracketed(blocks, n, threshold, subs):
    """Exact t_hat by a subsample-proposed bracket and a sweep of the pixels inside it."""
    sub_t, sub_j, sub_sigma = [], [], []
    for ss, dd in subs:
        t, j, _ = _records(ss, dd)
        sub_t.append(t)
        sub_j.append(j)
        sub_sigma.append(ss[np.isfinite(ss)])
    sub_t, sub_j = np.concatenate(sub_t), np.concatenate(sub_j)
    t_hi = np.inf
    if sub_t.size:
        order = np.argsort(sub_t, kind="stable")
        t_sorted, total = sub_t[order], np.cumsum(sub_j[order])
        last_of_group = np.r_[t_sorted[1:] != t_sorted[:-1], True]
        over = np.flatnonzero(last_of_group & (total > threshold))
        if over.size:
            t_hi = float(t_sorted[over[0]])  # the full data fails here too
    # lower bound: an exact pass at a subsample quantile a little below t_hi
    pool = np.sort(np.concatenate(sub_sigma))
    pos = np.searchsorted(pool, t_hi, side="left") if np.isfinite(t_hi) else pool.size
    gap = max(64, pool.size // 32)
    t_lo, base = -np.inf, np.zeros(n)
    while pos - gap > 0:
        candidate = float(pool[pos - gap])
        losses = _tile_losses(blocks, n, candidate)
        if losses.sum() <= threshold:
            t_lo, base = candidate, losses
            break
        pos -= gap
        gap *= 4
    # one pass: the pixels between the bounds that can raise a running maximum, and every
    # sigma value between the bounds (for the answer, the largest sigma below the failure)
    cand_t, cand_d, cand_tile, between = [], [], [], []
    keep_between = np.isfinite(t_lo)
    for start, s, D in blocks():
        inside = (s > t_lo) & (s <= t_hi)
        sel = inside & (D > base[start : start + s.shape[0], None])
        rows, _ = np.nonzero(sel)
        cand_t.append(s[sel])
        cand_d.append(D[sel])
        cand_tile.append(rows + start)
        if keep_between:
            between.append(s[inside])
    cand_t, cand_d, cand_tile = (np.concatenate(a) for a in (cand_t, cand_d, cand_tile))
    t_fail, cand_t, cand_tile, run_all = _sweep(cand_t, cand_d, cand_tile, base, threshold)
    # the answer is the largest observed sigma below the first failing value
    if keep_between:
        values = np.concatenate(between)
        below = values[values < t_fail]
        best = float(below.max()) if below.size else t_lo  # t_lo is an observed sigma value
    else:
        best = -np.inf
        for _, s, _ in blocks():
            below = s[s < t_fail]
            if below.size:
                best = max(best, float(below.max()))
    # per-tile fidelity error at the answer, from the sweep: base raised by candidates <= best
    losses = base.copy()
    reached = cand_t <= best
    np.maximum.at(losses, cand_tile[reached], run_all[reached])
    return best, losses


def _curve(blocks, n, t_hat, bound, points, at_hat):
    lams = [t_hat] if np.isfinite(t_hat) else []
    if points:
        pool = []
        for _, s, _ in blocks():
            stride = max(1, s.size // 4096)
            flat = s.ravel()[::stride]
            pool.append(flat[np.isfinite(flat)])
        pool = np.concatenate(pool)
        if pool.size:
            lams += list(np.quantile(pool, np.linspace(0.0, 1.0, points)))
    lams = np.unique(np.asarray(lams, dtype=np.float64))
    risks = np.array([at_hat.mean() if t == t_hat else _tile_losses(blocks, n, t).mean()
                      for t in lams])
    controlled = (n * risks + bound) / (n + 1)
    return {"lam": lams.tolist(), "risk": risks.tolist(), "bound": controlled.tolist()}
