"""Each concentration bound alone: Monte-Carlo validity and the known pitfalls of public code."""

import zlib

import numpy as np
import pytest
from scipy import stats

from napari_im2im_uq.calibration import bounds

REPS = 4000


def draw(kind, rng, mean, n):
    if kind == "bernoulli":
        return (rng.random((REPS, n)) < mean).astype(float)
    a = 2.0
    b = a * (1 - mean) / mean  # Beta with the given mean: bounded continuous losses
    return rng.beta(a, b, size=(REPS, n))


def pvalues(bound, losses, mean, delta):
    n = losses.shape[1]
    if bound == "hoeffding":
        return bounds.hoeffding_pvalue(losses.mean(axis=1), n, mean)
    if bound == "hoeffding_bentkus":
        return bounds.hoeffding_bentkus_pvalue(losses.mean(axis=1), n, mean)
    return bounds.wsr_pvalue(losses, mean, delta)


@pytest.mark.parametrize("bound", ["hoeffding", "hoeffding_bentkus", "wsr"])
@pytest.mark.parametrize("kind", ["bernoulli", "beta"])
@pytest.mark.parametrize("n", [25, 100])
@pytest.mark.parametrize("delta", [0.01, 0.1])
def test_bound_rejects_a_true_null_at_most_delta_of_the_time(bound, kind, n, delta):
    """With true risk = alpha, "risk > alpha" is rejected in at most delta of the draws.

    Tolerance: 3 Monte-Carlo standard errors of a rate delta over REPS draws.
    """
    rng = np.random.default_rng(zlib.crc32(repr((bound, kind, n, delta)).encode()))
    for mean in (0.1, 0.3):
        p = pvalues(bound, draw(kind, rng, mean, n), mean, delta)
        rate = float(np.mean(p <= delta))
        assert rate <= delta + 3 * np.sqrt(delta * (1 - delta) / REPS), (mean, rate)


@pytest.mark.parametrize("bound", ["hoeffding", "hoeffding_bentkus", "wsr"])
def test_bound_has_power_when_the_risk_is_clearly_lower(bound):
    rng = np.random.default_rng(7)
    losses = draw("beta", rng, 0.1, 400)
    p = pvalues(bound, losses, 0.2, 0.1)
    assert np.mean(p <= 0.1) > 0.95


def test_upper_confidence_bound_inverts_the_pvalue():
    rng = np.random.default_rng(3)
    losses = rng.beta(2, 8, size=(20, 60))
    for bound in ("hoeffding", "hoeffding_bentkus", "wsr"):
        ucb = bounds.upper_confidence_bound(losses, delta=0.1, bound=bound)
        assert np.all(ucb >= losses.mean(axis=1))
        for row, u in zip(losses, ucb):
            above, below = min(u + 1e-6, 1.0), u - 1e-3
            assert pvalues(bound, row[None], above, 0.1)[0] <= 0.1 + 1e-9
            assert pvalues(bound, row[None], below, 0.1)[0] > 0.1


def test_hoeffding_bentkus_is_not_one_at_zero_risk_and_uses_the_ceiling():
    # the im2im-uq reference code returned 1 here (0 log 0)
    assert bounds.hoeffding_bentkus_pvalue(0.0, 50, 0.1) == pytest.approx(
        min(0.9**50, np.e * 0.9**50)
    )
    # mean risk 2.5/10: ceil gives k = 3 (a floor would give 2)
    n, alpha = 10, 0.3
    expected = min(
        np.exp(-n * (0.25 * np.log(0.25 / alpha) + 0.75 * np.log(0.75 / (1 - alpha)))),
        np.e * stats.binom.cdf(3, n, alpha),
    )
    assert bounds.hoeffding_bentkus_pvalue(0.25, n, alpha) == pytest.approx(expected)
    # a mean that reaches us as k/n plus floating noise keeps k
    noisy = sum([0.1] * 3) / 1.0  # 0.30000000000000004
    binomial_only = np.e * stats.binom.cdf(3, 10, 0.5)
    assert bounds.hoeffding_bentkus_pvalue(noisy, 10, 0.5) <= binomial_only * (1 + 1e-12)
    assert bounds.hoeffding_bentkus_pvalue(noisy, 10, 0.5) == pytest.approx(
        bounds.hoeffding_bentkus_pvalue(0.3, 10, 0.5), rel=1e-12
    )


def wsr_loop(losses, level, delta):
    """The Waudby-Smith-Ramdas wealth written as a plain loop (the formula of DESIGN.md)."""
    n = len(losses)
    total, sq = 0.0, 0.0
    s2_prev = 0.25
    wealth, best = 1.0, 1.0
    for i, loss in enumerate(losses, start=1):
        nu = min(1.0, np.sqrt(2 * np.log(1 / delta) / (n * s2_prev)))
        wealth *= 1 - nu * (loss - level)
        best = max(best, wealth)
        total += loss
        mu = (0.5 + total) / (i + 1)
        sq += (loss - mu) ** 2
        s2_prev = (0.25 + sq) / (i + 1)
    return min(1.0, 1 / best)


def test_wsr_is_one_uninterrupted_product_in_the_given_order():
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        losses = rng.beta(1, 5, size=n)
        order = rng.permutation(n)
        got = bounds.wsr_pvalue(losses, 0.2, 0.1, order=order)
        assert got == pytest.approx(wsr_loop(losses[order], 0.2, 0.1), rel=1e-10)


def test_wsr_restarting_in_halves_would_be_a_different_test():
    # MAPIE restarts the running sums half-way; ours must not: compare with the joined loop
    rng = np.random.default_rng(5)
    losses = rng.beta(1, 8, size=200)
    whole = bounds.wsr_pvalue(losses, 0.15, 0.1)
    halves = min(bounds.wsr_pvalue(losses[:100], 0.15, 0.1),
                 bounds.wsr_pvalue(losses[100:], 0.15, 0.1))
    assert whole == pytest.approx(wsr_loop(losses, 0.15, 0.1), rel=1e-10)
    assert whole != pytest.approx(halves)


def test_upper_confidence_bound_refuses_unknown_bound():
    with pytest.raises(ValueError, match="bound must be"):
        bounds.upper_confidence_bound(np.zeros(5), delta=0.1, bound="bentkus")
    with pytest.raises(ValueError, match="delta must be in"):
        bounds.upper_confidence_bound(np.zeros(5), delta=0.0)
