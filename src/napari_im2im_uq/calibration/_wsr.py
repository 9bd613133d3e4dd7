"""The exact RCPS scan of the Waudby-Smith-Ramdas bound, certifying whole ranges of lam at once.

RCPS returns ``inf{lam : every lam' >= lam is certified}``; the WSR p-value is not monotone in
the losses, so every breakpoint above the answer has to be certified. Checking each one costs
O(n) and there are about alpha N of them (N pixels). Here a range of lam ``(a, b]`` is certified
at once when a lower bound of the log-wealth, valid for every loss vector between ``L(b)`` and
``L(a)`` (the per-tile losses are non-increasing in lam), clears ``log(1 / delta)`` with a
margin far above rounding; only ranges the bound cannot settle are split (recursively, on the
breakpoints they hold) and, once small, checked breakpoint by breakpoint as before. The answer
is the same breakpoint the one-by-one scan finds.
"""

from __future__ import annotations

import numpy as np

from . import bounds as _bounds

_LEAF = 64  # breakpoints checked one by one below this many in a range
_SPLIT = 32  # sub-ranges a range the bound cannot settle is split into
_MARGIN = 1e-6  # log-wealth margin of the bound over log(1 / delta) (rounding is ~1e-12)


def certified_by_bound(lo, hi, alpha, delta, order) -> np.ndarray:
    """Whether every loss vector between ``lo`` and ``hi`` (rows, shape (k, n)) is certified.

    Each quantity of the betting rule (running mean, variance, betting fraction, factor) is
    bounded over the box of losses, so the bound on the log-wealth is valid for every vector in
    it; ``True`` only with the margin ``_MARGIN``.
    """
    lo = np.asarray(lo, np.float64)[..., order]
    hi = np.asarray(hi, np.float64)[..., order]
    n = lo.shape[-1]
    counts = np.arange(1, n + 1, dtype=np.float64) + 1.0
    mu_lo = (0.5 + np.cumsum(lo, axis=-1)) / counts
    mu_hi = (0.5 + np.cumsum(hi, axis=-1)) / counts
    dl, dh = lo - mu_hi, hi - mu_lo
    sq_hi = np.maximum(dl * dl, dh * dh)
    sq_lo = np.where((dl <= 0) & (dh >= 0), 0.0, np.minimum(dl * dl, dh * dh))
    s2_lo = (0.25 + np.cumsum(sq_lo, axis=-1)) / counts
    s2_hi = (0.25 + np.cumsum(sq_hi, axis=-1)) / counts
    quarter = np.full(lo.shape[:-1] + (1,), 0.25)
    s2_lo = np.concatenate([quarter, s2_lo[..., :-1]], axis=-1)
    s2_hi = np.concatenate([quarter, s2_hi[..., :-1]], axis=-1)
    c = 2.0 * np.log(1.0 / delta) / n
    nu_lo = np.minimum(1.0, np.sqrt(c / s2_hi))
    nu_hi = np.minimum(1.0, np.sqrt(c / s2_lo))
    xl, xh = lo - alpha, hi - alpha
    worst = np.maximum(np.maximum(nu_lo * xl, nu_lo * xh), np.maximum(nu_hi * xl, nu_hi * xh))
    factor = 1.0 - worst
    with np.errstate(divide="ignore", invalid="ignore"):
        log_wealth = np.cumsum(np.log(np.where(factor > 0, factor, 0.0)), axis=-1)
    top = np.max(log_wealth, axis=-1)
    return top > np.log(1.0 / delta) + _MARGIN * (1.0 + np.abs(top))


def _certified(rows, alpha, delta, order) -> np.ndarray:
    return _bounds.wsr_pvalue(rows, alpha, delta, order=order) <= delta


def first_failure(top, uniq, group, tiles, wts, alpha, delta, order):
    """Index k of the first uncertified segment, scanning the breakpoints ``uniq`` downwards.

    ``uniq`` holds the distinct breakpoints of a range in decreasing order; the values (their
    ``group``: the index of their breakpoint, with ``tiles`` and weights ``wts``) enter the
    losses below their breakpoint. Segment k is ``[uniq[k], uniq[k - 1])``; its per-tile losses
    are ``top`` plus every value of the groups before k. Returns None when all are certified.
    """
    n = top.size
    g = uniq.size
    if g <= _LEAF:
        inc = np.zeros((g + 1, n))
        np.add.at(inc, (group + 1, tiles), wts)
        rows = top + np.cumsum(inc, axis=0)[:-1]
        bad = np.flatnonzero(~_certified(rows, alpha, delta, order))
        return int(bad[0]) if bad.size else None
    cuts = np.unique(np.linspace(0, g, _SPLIT + 1).astype(np.intp))  # sub-range s: groups
    part = np.searchsorted(cuts, group, side="right") - 1  # [cuts[s], cuts[s + 1])
    k = cuts.size - 1
    inc = np.zeros((k + 1, n))
    np.add.at(inc, (part + 1, tiles), wts)
    starts = top + np.cumsum(inc, axis=0)  # starts[s]: losses at the first segment of s
    ok = certified_by_bound(starts[:-1], starts[1:], alpha, delta, order)
    for s in range(k):
        if ok[s]:
            continue
        sel = part == s
        found = first_failure(starts[s], uniq[cuts[s]:cuts[s + 1]], group[sel] - cuts[s],
                              tiles[sel], wts[sel], alpha, delta, order)
        if found is not None:
            return int(cuts[s]) + found
    return None


def rcps_wsr(loss, alpha, delta, order, *, grid: int = 512) -> float:
    """RCPS lam_hat with WSR for a FractionLoss whose values above 0 are finite or +inf.

    A uniform grid of per-tile losses (one pass) finds the highest failing grid point; above it,
    each grid range is certified by the bound or split and scanned (:func:`first_failure`),
    from the top down. Same answer as checking every breakpoint above that point.
    """
    _, _, cmax, _ = loss._stats()
    edges = np.linspace(0.0, cmax, grid + 1)
    edges[-1] = cmax
    at_edges = loss.binned_tile_losses(edges).T  # (grid + 1, n): losses at each edge
    cert = _certified(at_edges, alpha, delta, order)
    failing = np.flatnonzero(~cert)
    floor = int(failing.max()) if failing.size else 0
    if floor == grid:
        return float("inf")  # only lam above every finite breakpoint is certified
    ok = certified_by_bound(at_edges[floor:-1], at_edges[floor + 1:], alpha, delta, order)
    for j in range(grid - 1, floor - 1, -1):  # range (edges[j], edges[j + 1]], top down
        if ok[j - floor]:
            continue
        vals, tiles, wts = loss.values_in(edges[j], edges[j + 1])
        if not vals.size:
            continue
        desc = np.argsort(-vals, kind="stable")
        vals, tiles, wts = vals[desc], tiles[desc], wts[desc]
        start = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
        uniq = vals[start]
        group = np.repeat(np.arange(uniq.size), np.diff(np.r_[start, vals.size]))
        k = first_failure(at_edges[j + 1], uniq, group, tiles, wts, alpha, delta, order)
        if k is not None:  # the answer: the lowest certified breakpoint above the failure
            return float(uniq[k - 1]) if k > 0 else _smallest_above(loss, float(uniq[0]))
    if failing.size:
        return _smallest_above(loss, float(edges[floor]))
    return 0.0  # certified down to lam = 0


def _smallest_above(loss, value) -> float:
    """Return the smallest finite breakpoint above ``value`` (+inf if none)."""
    lowest = loss.smallest_above(value)
    return float("inf") if lowest is None else lowest
