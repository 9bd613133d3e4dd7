"""Exact controllers for "fraction" losses held as per-pixel critical values.

A calibration tile i contributes pixels p with a critical value ``c_p`` (the smallest lam at which
the pixel is covered; +inf if it never is, -inf for pixels that do not count) and a weight ``w_p``;
its loss is ``L_i(lam) = sum_p w_p 1{c_p > lam}``, non-increasing and right-continuous in lam, in
[0, 1]. Per-unit threshold losses (one critical value per tile) are the special case of one pixel
of weight 1.

All answers are read off the data's own breakpoints: ``lam_hat`` is always 0 or one of the
critical values. The mean-risk controllers (CRC, Hoeffding, Hoeffding-Bentkus) need the smallest
lam whose pooled weight above lam is at most a threshold; this is an exact weighted selection done
by a few streaming passes (uniform bins to bracket, exact counts at the bin edges, then a sort of
the few values left in the bracket), so memory stays bounded by a block of tiles. WSR is not a
function of the mean alone, so every breakpoint above lam_hat is checked, in vectorised chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from napari_im2im_uq.calibration import bounds as _bounds
from napari_im2im_uq.calibration._errors import InfeasibleCalibrationError, crc_threshold

# Values inside the current bracket are sorted exactly once there are at most this many.
_COLLECT_LIMIT = 1 << 20
_BINS = 1024
_SUBSAMPLE = 1 << 17  # values kept by the stats pass to propose a bracket
_CHUNK = 1 << 15  # values per step of the streaming kernels (they and their temporaries fit in L2)

Block = tuple[int, np.ndarray, np.ndarray]  # (first tile index, crit (m, d), weight (m, d) or (m, 1))


@dataclass
class FractionLoss:
    """A stream of critical-value blocks and the number of tiles they cover."""

    blocks: Callable[[], Iterator[Block]]
    n: int
    _cached_stats: tuple | None = None

    @classmethod
    def cached(cls, blocks: Callable[[], Iterator[Block]], n: int) -> FractionLoss:
        """Compute the blocks once and keep them (for in-memory inputs)."""
        stored = list(blocks())

        def replay():
            yield from stored

        return cls(replay, n)

    # ------------------------------------------------------------------ evaluations
    def tile_losses(self, lams) -> np.ndarray:
        """Per-tile losses at each lam: array (n, len(lams)). Exact; O(N) per lam."""
        lams = np.atleast_1d(np.asarray(lams, dtype=np.float64))
        out = np.zeros((self.n, lams.size))
        for start, crit, weight in self.blocks():
            if weight.shape[1] == 1:  # one weight per tile: row by row (the same sums)
                for i, row in enumerate(crit):
                    for j, lam in enumerate(lams):
                        out[start + i, j] = np.multiply(row > lam, weight[i, 0]).sum()
                continue
            w = np.broadcast_to(weight, crit.shape)
            for j, lam in enumerate(lams):
                out[start : start + crit.shape[0], j] = np.where(crit > lam, w, 0.0).sum(axis=1)
        return out

    def binned_tile_losses(self, edges: np.ndarray, *, pooled: bool = False) -> np.ndarray:
        """Per-tile losses at every edge of a uniform grid, in one pass: array (n, len(edges)).

        Exact at the edges (values on an edge are counted as not above it), at the cost of one
        streaming pass whatever the number of edges. With ``pooled`` the sum over tiles,
        shape (len(edges),), is returned and memory does not grow with n.
        """
        edges = np.asarray(edges, dtype=np.float64)
        g = edges.size - 1
        out = np.zeros(g + 2) if pooled else np.zeros((self.n, g + 2))
        for start, crit, weight in self.blocks():
            m = crit.shape[0]
            idx = _bin_index(crit, edges)  # 0: <= e0, j: (e_{j-1}, e_j], g+1: > e_g
            w = np.broadcast_to(weight, crit.shape)
            if pooled:
                out += np.bincount(idx.ravel(), weights=w.ravel(), minlength=g + 2)
                continue
            keys = (np.arange(m)[:, None] * (g + 2) + idx).ravel()
            counts = np.bincount(keys, weights=w.ravel(), minlength=m * (g + 2))
            out[start : start + m] = counts.reshape(m, g + 2)
        # weight above edge j = sum of bins j+1 .. g+1
        above = np.cumsum(out[..., ::-1], axis=-1)[..., ::-1]
        return above[..., 1:]

    def tile_inf_losses(self) -> np.ndarray:
        """Per-tile loss left at every lam: the weight of pixels that are never covered."""
        out = np.zeros(self.n)
        for start, crit, weight in self.blocks():
            w = np.broadcast_to(weight, crit.shape)
            out[start : start + crit.shape[0]] = np.where(np.isposinf(crit), w, 0.0).sum(axis=1)
        return out

    def _stats(self):
        if self._cached_stats is None:
            self._cached_stats = self._compute_stats()
        return self._cached_stats

    def _compute_stats(self):
        """One pass: never-covered weight, weight above 0, largest finite value, a subsample."""
        w_inf = w_pos = 0.0
        cmax = 0.0
        per_tile = subsample_per_tile(self.n)
        sub_v, sub_w = [], []
        for _, crit, weight in self.blocks():
            b_inf, b_pos, top = block_stats(crit, weight)
            w_inf += b_inf
            w_pos += b_pos
            cmax = max(cmax, float(top))
            v, w = block_subsample(crit, weight, per_tile)
            sub_v.append(v)
            sub_w.append(w)
        return w_inf, w_pos, cmax, sorted_subsample(sub_v, sub_w)

    def smallest_lam_with_total_at_most(self, threshold: float) -> float | None:
        """Smallest lam in {0} and the critical values with ``sum_i L_i(lam) <= threshold``.

        Returns None when even lam -> infinity leaves more than ``threshold`` (pixels that are
        never covered). A subsample proposes a narrow bracket; one exact pass checks it (moving
        it until ``total(lo) > threshold >= total(hi)`` holds) and sorts the few values inside.
        """
        w_inf, w_pos, cmax, (sub_v, sub_w) = self._stats()
        if w_inf > threshold:
            return None
        if w_pos <= threshold:
            return 0.0
        lo, hi = 0.0, cmax  # invariant: total(lo) > threshold >= total(hi)
        if sub_v.size:
            scale = (w_pos - w_inf) / sub_w.sum()
            estimate = w_inf + scale * np.cumsum(sub_w)  # weight at or above each value
            k = int(np.searchsorted(estimate, threshold, side="right"))
            margin = int(16 + 3 * np.sqrt(k + 1))
            for _ in range(64):
                lo_c = float(sub_v[k + margin]) if k + margin < sub_v.size else lo
                hi_c = float(sub_v[k - margin]) if k - margin >= 0 else hi
                w_hi, w_lo, collected = self._bracket_pass(max(lo_c, lo), min(hi_c, hi))
                lo_ok, hi_ok = w_lo > threshold, w_hi <= threshold
                if lo_ok:
                    lo = max(lo_c, lo)
                else:
                    hi = max(lo_c, lo)  # total(lo_c) <= threshold: a valid upper end
                if hi_ok:
                    hi = min(hi, hi_c)
                else:
                    lo = min(hi_c, hi)  # total(hi_c) > threshold: a valid lower end
                if lo_ok and hi_ok and collected is not None:
                    values, weights = collected
                    return _select_in_bracket(values, weights, w_hi, threshold)
                if lo_ok and hi_ok:
                    break  # too many values in between: bisect with histograms below
                margin *= 2
        while True:
            w_hi, _, collected = self._bracket_pass(lo, hi)
            if collected is not None:
                values, weights = collected
                return _select_in_bracket(values, weights, w_hi, threshold)
            if hi <= np.nextafter(lo, np.inf):
                return hi
            edges = np.linspace(lo, hi, _BINS + 1)
            edges[-1] = hi
            above = self.binned_tile_losses(edges, pooled=True)
            j = int(np.flatnonzero(above > threshold).max())  # above[0] = total(lo) > threshold
            lo, hi = float(edges[j]), float(edges[j + 1])

    def _bracket_pass(self, lo, hi):
        """Exact total(hi), total(lo), and the values in (lo, hi] if there are few of them."""
        w_hi = w_in = 0.0
        count = 0
        values, weights = [], []
        for _, crit, weight in self.blocks():
            if weight.shape[1] == 1:
                b_hi, b_in, k = _bracket_block(crit, weight, lo, hi, values, weights,
                                               budget=_COLLECT_LIMIT - count)
                w_hi += b_hi
                w_in += b_in
                count += k
                continue
            above = crit > hi
            inside = (crit > lo) & ~above
            w_hi += _weighted_count(above, weight)
            w_in += _weighted_count(inside, weight)
            k = int(np.count_nonzero(inside))
            count += k
            if count <= _COLLECT_LIMIT and k:
                values.append(crit[inside])
                weights.append(np.broadcast_to(weight, crit.shape)[inside])
        if count > _COLLECT_LIMIT:
            return w_hi, w_hi + w_in, None
        if not values:
            return w_hi, w_hi + w_in, (np.empty(0), np.empty(0))
        return w_hi, w_hi + w_in, (np.concatenate(values), np.concatenate(weights))

    def pooled_above(self, lam: float) -> np.ndarray:
        """Critical values (and tiles, weights) strictly above ``lam``, for the exact WSR scan."""
        vals, tiles, wts = [], [], []
        for start, crit, weight in self.blocks():
            w = np.broadcast_to(weight, crit.shape)
            sel = crit > lam
            rows, _ = np.nonzero(sel)
            vals.append(crit[sel])
            tiles.append(rows + start)
            wts.append(w[sel])
        return np.concatenate(vals), np.concatenate(tiles), np.concatenate(wts)


def _row_chunks(crit: np.ndarray):
    """(row, column slice) steps of at most _CHUNK values over a 2-D block (cache-sized)."""
    d = crit.shape[1]
    for i in range(crit.shape[0]):
        for a in range(0, d, _CHUNK):
            yield i, slice(a, min(a + _CHUNK, d))


def block_stats(crit: np.ndarray, weight: np.ndarray) -> tuple[float, float, float]:
    """Weight of the +inf values, weight of the positive values, and the largest finite value.

    Per-tile weights take a streaming path with the same integer counts and the same dot
    product as the whole-block expression, so the sums are identical.
    """
    if weight.shape[1] != 1:
        inf = np.isposinf(crit)
        top = np.max(np.where(inf, -np.inf, crit))
        return _weighted_count(inf, weight), _weighted_count(crit > 0, weight), float(top)
    m = crit.shape[0]
    n_inf = np.zeros(m, dtype=np.intp)
    n_pos = np.zeros(m, dtype=np.intp)
    top = -np.inf
    for i, cols in _row_chunks(crit):
        c = crit[i, cols]
        n_inf[i] += np.count_nonzero(c == np.inf)
        n_pos[i] += np.count_nonzero(c > 0)
        t = c.max()
        if t == np.inf:
            t = np.max(c, where=c != np.inf, initial=-np.inf)
        top = max(top, float(t))
    w = weight[:, 0]
    return float(n_inf @ w), float(n_pos @ w), top


def subsample_per_tile(n: int) -> int:
    """Values per tile that the stats pass keeps in its subsample."""
    return max(8, _SUBSAMPLE // max(n, 1))


def subsample_stride(d: int, per_tile: int) -> int:
    """Column stride of the subsample in a block of d values per tile."""
    return max(1, d // per_tile)


def block_subsample(crit: np.ndarray, weight: np.ndarray, per_tile: int):
    """Return the strided subsample of one block's finite positive values, and their weights."""
    stride = subsample_stride(crit.shape[1], per_tile)
    cs = crit[:, ::stride]
    ws = np.broadcast_to(weight, crit.shape)[:, ::stride]
    keep = (cs > 0) & np.isfinite(cs)
    return cs[keep], ws[keep]


def sorted_subsample(sub_v: list, sub_w: list):
    """Pool the blocks' subsamples and sort them by decreasing value (stable)."""
    sub_v, sub_w = np.concatenate(sub_v), np.concatenate(sub_w)
    order = np.argsort(-sub_v, kind="stable")
    return sub_v[order], sub_w[order]


def _bracket_block(crit, weight, lo, hi, values, weights, *, budget):
    """One block of ``_bracket_pass`` with per-tile weights, row chunk by row chunk.

    Returns the block's weight above hi, its weight in (lo, hi] and how many values lie there;
    appends those values (row-major, as ``crit[inside]`` orders them) while their count stays
    within ``budget`` (beyond it the pass collects nothing anyway).
    """
    m = crit.shape[0]
    n_hi = np.zeros(m, dtype=np.intp)
    n_lo = np.zeros(m, dtype=np.intp)
    found = 0
    for i, cols in _row_chunks(crit):
        c = crit[i, cols]
        k_hi = np.count_nonzero(c > hi)
        k_lo = np.count_nonzero(c > lo)
        n_hi[i] += k_hi
        n_lo[i] += k_lo
        k = max(k_lo - k_hi, 0)  # (lo, hi] is empty when lo >= hi
        if k and found + k <= budget:
            v = c[(c > lo) & (c <= hi)]
            values.append(v)
            weights.append(np.full(v.size, weight[i, 0]))
        found += k
    w = weight[:, 0]
    inside = np.maximum(n_lo - n_hi, 0)
    return float(n_hi @ w), float(inside @ w), found


def _weighted_count(mask: np.ndarray, weight: np.ndarray) -> float:
    """Sum of the weights where ``mask`` holds (per-tile weights need no full-size copy)."""
    if weight.shape[1] == 1:
        return float(np.count_nonzero(mask, axis=1) @ weight[:, 0])
    return float(np.where(mask, weight, 0.0).sum())


def _bin_index(crit: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index j with edges[j-1] < c <= edges[j] (0 below e0, len(edges) above the last), exactly."""
    g = edges.size - 1
    lo, hi = edges[0], edges[-1]
    width = (hi - lo) / g if hi > lo else 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        pos = np.ceil((np.clip(crit, lo, hi) - lo) / width)
    idx = np.nan_to_num(pos, nan=0.0).astype(np.int64)
    np.clip(idx, 0, g, out=idx)
    # floating point can put a value one bin off; fix it against the true edges
    for _ in range(3):
        too_high = (idx > 0) & (crit <= edges[np.maximum(idx - 1, 0)])
        too_low = (idx <= g) & (crit > edges[np.minimum(idx, g)])
        if not (too_high.any() or too_low.any()):
            break
        idx -= too_high
        idx += too_low & (idx < g)
    idx[crit <= lo] = 0
    idx[crit > hi] = g + 1
    return idx


def _select_in_bracket(values, weights, w_above_hi, threshold):
    """Smallest value v among ``values`` with w_above_hi + weight(values > v) <= threshold."""
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    suffix = np.concatenate([np.cumsum(weights[::-1])[::-1], [0.0]])
    # weight strictly above values[k]: everything after the last copy of values[k]
    after = np.searchsorted(values, values, side="right")
    totals = w_above_hi + suffix[after]
    ok = np.flatnonzero(totals <= threshold)
    return float(values[ok[0]])


# ---------------------------------------------------------------------------- controllers
def crc(loss: FractionLoss, alpha: float, *, loss_bound: float = 1.0) -> float:
    """Conformal risk control: inf{lam : (sum_i L_i(lam) + B) / (n + 1) <= alpha}."""
    n = loss.n
    threshold = crc_threshold(n, alpha, loss_bound, what="conformal risk control")
    lam = loss.smallest_lam_with_total_at_most(threshold)
    if lam is None:
        floor = _risk_at_infinity(loss)
        reachable = (n * floor + loss_bound) / (n + 1)
        raise InfeasibleCalibrationError(
            f"alpha={alpha:g} cannot be reached even with the widest sets: {floor:.4g} of the loss "
            f"remains at any lam (pixels that are never covered); the smallest alpha this data can "
            f"certify is {reachable:.4g}"
        )
    return lam


def _risk_at_infinity(loss: FractionLoss) -> float:
    return float(loss.tile_inf_losses().mean())


def max_certified_risk(n: int, alpha: float, delta: float, bound: str) -> float:
    """Largest mean risk R whose p-value is at most delta (-1 if none), for mean-only bounds."""
    if bound == "hoeffding":
        return alpha - np.sqrt(np.log(1.0 / delta) / (2.0 * n))
    pvalue = _bounds.hoeffding_bentkus_pvalue
    if pvalue(0.0, n, alpha) > delta:
        return -1.0
    lo, hi = 0.0, alpha  # p(lo) <= delta < p(hi) (p(alpha) >= exp(0) = 1 > delta)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if pvalue(mid, n, alpha) <= delta:
            lo = mid
        else:
            hi = mid
    return lo


def min_tiles_for_rcps(alpha: float, delta: float, bound: str) -> int:
    """Fewest tiles for which a zero empirical risk is certified (the best any data can do)."""
    if bound == "hoeffding":
        return int(np.ceil(np.log(1.0 / delta) / (2.0 * alpha**2)))
    if bound == "hoeffding_bentkus":
        n = 1
        while _bounds.hoeffding_bentkus_pvalue(0.0, n, alpha) > delta:
            n *= 2
        lo, hi = n // 2, n
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _bounds.hoeffding_bentkus_pvalue(0.0, mid, alpha) > delta:
                lo = mid
            else:
                hi = mid
        return max(hi, 1)
    # WSR with all-zero losses: the wealth is prod (1 + nu_i alpha)
    n = 1
    while True:
        if _bounds.wsr_pvalue(np.zeros(n), alpha, delta) <= delta:
            break
        n *= 2
        if n > 1 << 24:
            return n
    lo, hi = n // 2, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _bounds.wsr_pvalue(np.zeros(mid), alpha, delta) > delta:
            lo = mid
        else:
            hi = mid
    return max(hi, 1)


def rcps(loss: FractionLoss, alpha: float, delta: float, *, bound: str, seed: int = 0):
    """RCPS: inf{lam : every lam' >= lam is certified at level delta}. Returns (lam, order)."""
    n = loss.n
    if bound in ("hoeffding", "hoeffding_bentkus"):
        r_star = max_certified_risk(n, alpha, delta, bound)
        if r_star < 0:
            _raise_too_few(n, alpha, delta, bound)
        lam = loss.smallest_lam_with_total_at_most(n * r_star)
        if lam is None:
            _raise_unreachable(loss, alpha, delta, bound)
        return lam, None
    if bound != "wsr":
        raise ValueError(f"bound must be 'hoeffding', 'hoeffding_bentkus' or 'wsr'; got {bound!r}")
    order = np.random.default_rng(seed).permutation(n)
    return _rcps_wsr(loss, alpha, delta, order), order


def _wsr_certified(tile_losses_rows: np.ndarray, alpha, delta, order) -> np.ndarray:
    """Certification of each row of per-tile losses (rows = lams) by WSR in the fixed order."""
    pv = _bounds.wsr_pvalue(tile_losses_rows, alpha, delta, order=order)
    return pv <= delta


def _rcps_wsr(loss: FractionLoss, alpha, delta, order) -> float:
    n = loss.n
    # 1. bracket on a uniform grid of lam (one pass), scanning from the safe end
    w_inf, w_pos, cmax, _ = loss._stats()
    inf_losses = loss.tile_inf_losses()
    if not _wsr_certified(inf_losses[None, :], alpha, delta, order)[0]:
        if not _wsr_certified(np.zeros((1, n)), alpha, delta, order)[0]:
            _raise_too_few(n, alpha, delta, "wsr")
        _raise_unreachable(loss, alpha, delta, "wsr")
    edges = np.linspace(0.0, cmax, 257) if cmax > 0 else np.zeros(1)
    grid_losses = loss.binned_tile_losses(edges).T  # (len(edges), n)
    cert = _wsr_certified(grid_losses, alpha, delta, order)
    failing = np.flatnonzero(~cert)
    floor = float(edges[failing.max()]) if failing.size else -np.inf
    # 2. every breakpoint above the highest failing grid point is checked exactly
    vals, tiles, wts = loss.pooled_above(max(floor, 0.0) if failing.size else -np.inf)
    if not failing.size:
        keep = vals >= 0
        vals, tiles, wts = vals[keep], tiles[keep], wts[keep]
    finite = np.isfinite(vals)
    base = np.zeros(n)
    np.add.at(base, tiles[~finite], wts[~finite])  # the +inf part: present at every lam
    vals, tiles, wts = vals[finite], tiles[finite], wts[finite]
    order_desc = np.argsort(-vals, kind="stable")
    vals, tiles, wts = vals[order_desc], tiles[order_desc], wts[order_desc]
    uniq_start = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
    uniq = vals[uniq_start]
    # segment k (k = 0..len(uniq)-1) is lam in [uniq[k], uniq[k-1]); its losses include every
    # value strictly above uniq[k], i.e. the groups 0..k-1.
    group = np.repeat(np.arange(uniq.size), np.diff(np.r_[uniq_start, vals.size]))
    current = base.copy()
    chunk = max(1, (1 << 22) // max(n, 1))
    lam_hat = None
    for g0 in range(0, uniq.size, chunk):
        g1 = min(uniq.size, g0 + chunk)
        # increments: values of group k enter the losses from segment k+1 on
        sel = (group >= g0) & (group < g1)
        inc = np.zeros((g1 - g0 + 1, n))
        np.add.at(inc, (group[sel] - g0 + 1, tiles[sel]), wts[sel])
        rows = current + np.cumsum(inc, axis=0)[:-1]  # rows for segments g0..g1-1
        ok = _wsr_certified(rows, alpha, delta, order)
        bad = np.flatnonzero(~ok)
        if bad.size:
            k = g0 + int(bad[0])
            if k == 0:
                return float("inf")  # only lam = +inf is certified: handled by the caller
            lam_hat = float(uniq[k - 1])
            break
        current = current + inc.sum(axis=0)
    if lam_hat is None:
        # every breakpoint above the floor is certified; the segment below the lowest one is the
        # failing grid point's (or lam = 0 when nothing failed)
        if failing.size:
            lam_hat = float(uniq[-1]) if uniq.size else float("inf")
        else:
            lam_hat = float(uniq[-1]) if uniq.size and not _wsr_certified(
                current[None, :], alpha, delta, order
            )[0] else 0.0
    return lam_hat


def _raise_too_few(n, alpha, delta, bound):
    need = min_tiles_for_rcps(alpha, delta, bound)
    raise InfeasibleCalibrationError(
        f"the calibration set has {n} tiles; alpha={alpha:g}, delta={delta:g} with the "
        f"{_BOUND_NAMES[bound]} bound needs at least {need} (even a zero empirical risk is not "
        "certified with fewer)"
    )


def _raise_unreachable(loss, alpha, delta, bound):
    floor = _risk_at_infinity(loss)
    raise InfeasibleCalibrationError(
        f"alpha={alpha:g} cannot be certified with delta={delta:g} ({_BOUND_NAMES[bound]}): even "
        f"the widest sets leave an empirical risk of {floor:.4g} (pixels that are never covered); "
        "choose a larger alpha or a model whose intervals can cover every pixel"
    )


_BOUND_NAMES = {
    "hoeffding": "Hoeffding",
    "hoeffding_bentkus": "Hoeffding-Bentkus",
    "wsr": "Waudby-Smith-Ramdas",
}
