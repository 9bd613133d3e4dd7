"""A fraction loss whose critical values are made exact only where a question needs them.

Plain critical values (a quotient, see :mod:`.intervals`) lie within a relative ``window`` of
their exact floating-point boundary, on the same side of every number farther than that. Each
question the exact controllers ask of a :class:`~._fraction.FractionLoss` compares the values
with a few numbers (the edges of a grid, the ends of a range, one lam) or reads the values of a
range; :class:`RefiningLoss` first makes exact the values within the window of those numbers
(or inside that range), once each, and then answers as the parent class does on the values it
holds. Every answer is therefore the one the fully exact values give: the same comparisons
come out the same, and every value that is returned or sorted is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._fraction import FractionLoss

#: (first tile, rows, cols) -> the exact critical values of those pixels of the block.
ExactFn = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


class RefiningLoss(FractionLoss):
    """Plain critical-value blocks refined on demand (in place) by ``exact``.

    ``stored`` holds ``(start, crit, weight)`` blocks of plain values: +inf, 0 and -inf are
    already exact, and a finite positive value is within a relative ``window`` of its exact
    value (values closer than that to 0 relative to their inputs come exact already).
    """

    def __init__(self, stored: list, n: int, exact: ExactFn, window: float):
        self._stored = stored
        self._exact = exact
        self._window = float(window)
        self._done = [None] * len(stored)  # per block: bool (m, d) of exact values, lazily
        super().__init__(self._replay, n)

    def _replay(self):
        yield from self._stored

    # ------------------------------------------------------------------ refinement
    def _make_exact(self, b: int, sel: np.ndarray) -> None:
        """Make the values of block ``b`` where ``sel`` holds (finite, positive) exact."""
        start, crit, _ = self._stored[b]
        done = self._done[b]
        if done is None:
            done = self._done[b] = np.zeros(crit.shape, bool)
        sel &= ~done
        sel &= np.isfinite(crit)
        sel &= crit > 0
        rows, cols = np.nonzero(sel)
        if rows.size:
            crit[rows, cols] = self._exact(start, rows, cols)
            done[rows, cols] = True

    def _refine_range(self, lo: float, hi: float) -> None:
        """Make every value that may lie in ``[lo, hi]`` exact (its window included)."""
        w = self._window
        lo_w = lo - w * abs(lo) if np.isfinite(lo) else lo
        hi_w = hi + w * abs(hi) if np.isfinite(hi) else hi
        for b, (_, crit, _) in enumerate(self._stored):
            sel = crit >= lo_w
            sel &= crit <= hi_w
            if sel.any():
                self._make_exact(b, sel)

    def _refine_near(self, points) -> None:
        """Make the values within the window of any of ``points`` (sorted) exact."""
        points = np.asarray(points, np.float64)
        points = points[np.isfinite(points) & (points > 0)]  # 0: positive values stay positive
        if not points.size:
            return
        if points.size <= 4:
            for p in points:
                self._refine_range(p, p)
            return
        w = self._window
        step = np.diff(points)
        uniform = step.min() > 0 and np.allclose(step, step.mean(), rtol=1e-6, atol=0)
        # a window far narrower than the grid step can only hold the nearest grid point
        nearest_only = w * points[-1] < 0.25 * step.min()
        for b, (_, crit, _) in enumerate(self._stored):
            if uniform:  # nearest grid point by arithmetic (and its neighbours if need be)
                with np.errstate(invalid="ignore", over="ignore"):
                    j = np.rint((crit - points[0]) / step.mean())
                j = np.clip(np.nan_to_num(j, nan=0.0, posinf=0.0, neginf=0.0), 0,
                            points.size - 1).astype(np.intp)
                near = np.zeros(crit.shape, bool)
                for k in (j,) if nearest_only else (j - 1, j, j + 1):
                    np.clip(k, 0, points.size - 1, out=k)
                    e = points[k]
                    near |= np.abs(crit - e) <= w * e
            else:
                k = np.clip(np.searchsorted(points, crit), 1, points.size - 1)
                lo, hi = points[k - 1], points[k]
                near = (np.abs(crit - lo) <= w * lo) | (np.abs(crit - hi) <= w * hi)
            if near.any():
                self._make_exact(b, near)

    # ------------------------------------------------------------------ the questions
    def tile_losses(self, lams) -> np.ndarray:
        self._refine_near(np.sort(np.atleast_1d(np.asarray(lams, np.float64))))
        return super().tile_losses(lams)

    def binned_tile_losses(self, edges, *, pooled: bool = False) -> np.ndarray:
        self._refine_near(edges)
        return super().binned_tile_losses(edges, pooled=pooled)

    def _compute_stats(self):
        """Return the parent's stats, with the largest finite value made exact.

        The weights at +inf and above 0 do not change with refinement, and the subsample only
        proposes brackets that are then checked exactly, so only the largest value is redone:
        it is among the values within the window of the plain largest one.
        """
        w_inf, w_pos, cmax, sub = super()._compute_stats()
        if cmax > 0:
            lo = cmax * (1 - self._window)
            self._refine_range(lo, np.inf)
            cmax = max(float(np.max(crit, where=(crit >= lo) & np.isfinite(crit),
                                    initial=-np.inf)) for _, crit, _ in self._stored)
        return w_inf, w_pos, cmax, sub

    def _bracket_pass(self, lo, hi):
        self._refine_near(np.array([lo, hi]))
        w_hi, w_lo, collected = super()._bracket_pass(lo, hi)
        if collected is not None and collected[0].size:
            self._refine_range(lo, hi)  # the values returned, exact
            w_hi, w_lo, collected = super()._bracket_pass(lo, hi)
        return w_hi, w_lo, collected

    def values_in(self, lo: float, hi: float):
        self._refine_range(lo, hi)
        return super().values_in(lo, hi)

    def smallest_above(self, value: float) -> float | None:
        self._refine_near(np.array([value]))
        lowest = super().smallest_above(value)
        if lowest is None:
            return None
        self._refine_range(value, lowest * (1 + self._window))
        return super().smallest_above(value)

    def pooled_above(self, lam: float) -> np.ndarray:
        self._refine_range(lam, np.inf)
        return super().pooled_above(lam)
