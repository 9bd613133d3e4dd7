"""Issue 14: in-memory WSR makes the critical values exact only where its questions need them.

The answer, the empirical risk and the risk curve must be those of the fully exact values:
compared with the previous implementation (``tests/_calibration_old``, every value exact up
front) and with the lazy path (exact at once, one read) on many small random cases, float32
and float64 inputs, valid masks, truths a few ulps from the prediction ("near" pixels) and
values that tie.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from _calibration_old import intervals as old_intervals
from napari_im2im_uq.calibration import calibrate_intervals
from napari_im2im_uq.calibration._refining import RefiningLoss
from napari_im2im_uq.calibration.intervals import interval_critical_values


def case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 260))
    side = int(rng.choice([4, 8, 12]))
    dtype = np.float32 if seed % 2 else np.float64
    shape = (n, side, side)
    f = rng.random(shape).astype(dtype)
    s = (0.01 + 0.1 * rng.random(shape)).astype(dtype)
    y = (f + s * rng.standard_normal(shape)).astype(dtype)
    if seed % 3 == 0:  # ties: a coarse truth puts many pixels on the same critical value
        y = (f + np.round(4 * (y - f) / s) * s / 4).astype(dtype)
    if dtype == np.float64 and seed % 4 == 1:  # "near" pixels: the truth a few ulps off
        near = rng.random(shape) < 0.05
        y = np.where(near, f + f * 1e-15 * rng.integers(1, 8, shape), y)
    w = (s * np.exp(0.4 * rng.standard_normal(shape))).astype(dtype)
    valid = None
    if seed % 5 == 2:
        valid = rng.random(shape) > 0.3
        valid[:, 0, 0] = True
    alpha = float(rng.choice([0.08, 0.1, 0.15, 0.2, 0.3]))
    return (f, f - w, f + w, y), valid, alpha


@pytest.mark.parametrize("seed", range(40))
def test_wsr_answer_and_curve_equal_the_fully_exact_ones(seed):
    args, valid, alpha = case(seed)
    new = calibrate_intervals(*args, alpha=alpha, delta=0.1, bound="wsr", valid=valid,
                              seed=seed)
    old = old_intervals.calibrate_intervals(*args, alpha=alpha, delta=0.1, bound="wsr",
                                            valid=valid, seed=seed)
    assert new.lam == old.lam
    assert new.empirical_risk == old.empirical_risk
    lazy = calibrate_intervals(*(da.from_array(a, chunks=(32,) + a.shape[1:]) for a in args),
                               alpha=alpha, delta=0.1, bound="wsr", valid=valid, seed=seed)
    assert new.lam == lazy.lam and new.empirical_risk == lazy.empirical_risk
    assert new.curve["lam"] == lazy.curve["lam"]
    assert new.curve["risk"] == lazy.curve["risk"]
    assert new.curve["bound"] == lazy.curve["bound"]


def _loss(seed):
    args, _, _ = case(seed)
    n = len(args[0])
    exact = interval_critical_values(*args).reshape(n, -1)
    plain = interval_critical_values(*args, exact=False).reshape(n, -1)
    weight = np.full((n, 1), 1.0 / exact.shape[1])
    blocks = [(a, plain[a:a + 16].copy(), weight[a:a + 16]) for a in range(0, n, 16)]

    def make_exact(start, rows, cols):
        return exact[start + rows, cols]

    return RefiningLoss(blocks, n, make_exact, 1e-6), exact, weight


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_every_question_is_answered_as_on_the_exact_values(seed):
    """Each query of the refining loss against a direct evaluation on the exact values."""
    rng = np.random.default_rng(1000 + seed)
    loss, exact, weight = _loss(seed)
    finite = exact[np.isfinite(exact) & (exact > 0)]
    cmax = float(finite.max())
    assert loss._stats()[2] == cmax
    picks = rng.choice(finite, 6)  # lams exactly on critical values, and in between
    lams = np.sort(np.r_[picks, rng.uniform(0, cmax, 6), 0.0])
    direct = np.stack([((exact > lam) * weight).sum(axis=1) for lam in lams], axis=1)
    assert np.array_equal(loss.tile_losses(lams), direct)
    edges = np.linspace(0.0, float(picks.max()), 37)
    at_edges = np.stack([((exact > e) * weight).sum(axis=1) for e in edges], axis=1)
    np.testing.assert_allclose(loss.binned_tile_losses(edges), at_edges, rtol=0, atol=1e-12)
    lo, hi = np.sort(rng.choice(finite, 2))
    vals, _, _ = loss.values_in(lo, hi)
    inside = exact[(exact > lo) & (exact <= hi)]
    assert np.array_equal(np.sort(vals), np.sort(inside))
    above = finite[finite > lo]
    assert loss.smallest_above(float(lo)) == (float(above.min()) if above.size else None)
