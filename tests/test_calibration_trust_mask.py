"""calibrate_trust_mask against the paper's brute force (Algorithm 2), refusals, dask."""

import numpy as np
import pytest

from _reference import CRC_SLACK
from napari_im2im_uq.calibration import (
    CalibrationResult,
    InfeasibleCalibrationError,
    calibrate_trust_mask,
    fidelity_error_map,
)


def algorithm2(sigma, D, alpha, B, valid=None):
    """Adame et al. Appendix C, Algorithm 2 (brute force over all observed sigma values)."""
    n = sigma.shape[0]
    s = sigma.reshape(n, -1)
    d = D.reshape(n, -1)
    v = np.ones_like(s, bool) if valid is None else valid.reshape(n, -1)

    def risk_ok(t):
        total = 0.0
        for i in range(n):
            trusted = v[i] & (s[i] <= t)
            total += d[i][trusted].max() if trusted.any() else 0.0
        return total + B <= alpha * (n + 1) + CRC_SLACK

    values = np.unique(s[v])
    best = -np.inf
    for t in values:
        if risk_ok(t):
            best = max(best, t)
    if best == values.max():
        return np.inf  # Eq. (1) is a sup over R and +inf: the condition holds beyond the data
    return best


def random_case(rng, n, shape=(4, 4), ties=False):
    truth = rng.random((n, *shape))
    pred = np.clip(truth + rng.normal(scale=0.2, size=truth.shape), 0, 1)
    err = np.abs(truth - pred)
    sigma = err + rng.normal(scale=0.1, size=err.shape)
    if ties:
        sigma = np.round(sigma * 5) / 5
        pred = np.where(rng.random(pred.shape) < 0.2, truth, pred)  # zero errors
    return sigma, pred, truth


def test_matches_algorithm_2_on_many_small_cases():
    rng = np.random.default_rng(2024)
    compared = 0
    for case in range(250):
        n = int(rng.choice([1, 2, 4, 9, 20, 50]))
        alpha = float(rng.choice([0.05, 0.2, 0.4, 0.6, 0.9]))
        sigma, pred, truth = random_case(rng, n, ties=case % 2 == 0)
        valid = rng.random(sigma.shape) < 0.8 if case % 3 == 0 else None
        if valid is not None:
            valid.reshape(n, -1)[:, 0] = True
        B = 1.0
        if B / (n + 1) > alpha:
            with pytest.raises(InfeasibleCalibrationError, match="needs at least"):
                calibrate_trust_mask(sigma, pred, truth, alpha=alpha, data_range=(0, 1),
                                     valid=valid)
            continue
        D = np.abs(truth - pred)
        expected = algorithm2(sigma, D, alpha, B, valid)
        got = calibrate_trust_mask(sigma, pred, truth, alpha=alpha, data_range=(0, 1), valid=valid,
                                   curve_points=0)
        assert got.lam == expected, (case, n, alpha)
        compared += 1
    assert compared > 100


def test_large_tiles_use_the_subsample_bracket_and_stay_exact():
    rng = np.random.default_rng(9)
    n, shape = 12, (200, 200)  # more pixels per tile than the subsample keeps
    sigma, pred, truth = random_case(rng, n, shape)
    D = np.abs(truth - pred)
    got = calibrate_trust_mask(sigma, pred, truth, alpha=0.6, data_range=(0, 1), curve_points=0)
    # brute force at the answer and at the next observed sigma value
    assert _ok(sigma, D, got.lam, 0.6, 1.0)
    nxt = np.unique(sigma[sigma > got.lam])[0]
    assert not _ok(sigma, D, nxt, 0.6, 1.0)


def _ok(sigma, D, t, alpha, B):
    n = sigma.shape[0]
    L = np.where(sigma <= t, D, 0).reshape(n, -1).max(axis=1)
    return L.sum() + B <= alpha * (n + 1) + CRC_SLACK


def test_applies_with_the_same_comparison():
    rng = np.random.default_rng(1)
    sigma, pred, truth = random_case(rng, 30, ties=True)
    res = calibrate_trust_mask(sigma, pred, truth, alpha=0.35, data_range=(0, 1))
    mask = res.trust_mask(sigma)
    assert mask.dtype == bool
    assert np.array_equal(mask, sigma <= res.lam)
    assert 0 < mask.mean() < 1
    D = np.abs(truth - pred)
    emp = np.where(mask, D, 0).reshape(30, -1).max(axis=1).mean()
    assert emp == pytest.approx(res.empirical_risk)


def test_everything_and_nothing_trusted():
    rng = np.random.default_rng(3)
    sigma, pred, truth = random_case(rng, 40)
    everything = calibrate_trust_mask(sigma, truth, truth, alpha=0.5, data_range=(0, 1))
    assert everything.lam == np.inf and "Every pixel is trusted" in everything.guarantee
    assert everything.trust_mask(sigma).all()
    worst = np.zeros_like(truth)
    worst_truth = np.ones_like(truth)  # every pixel has the largest error B
    nothing = calibrate_trust_mask(sigma, worst, worst_truth, alpha=0.03, data_range=(0, 1))
    assert nothing.lam == -np.inf and not nothing.trust_mask(sigma).any()


def test_blurred_and_given_fidelity():
    rng = np.random.default_rng(4)
    sigma, pred, truth = random_case(rng, 30, shape=(8, 8))
    blurred = fidelity_error_map(pred, truth, fidelity="blurred", blur_sigma=1.0)
    a = calibrate_trust_mask(sigma, pred, truth, alpha=0.4, fidelity="blurred", blur_sigma=1.0,
                             data_range=(0, 1))
    b = calibrate_trust_mask(sigma, alpha=0.4, fidelity="given", fidelity_error=blurred,
                             loss_bound=1.0)
    assert a.lam == b.lam
    assert a.lam == algorithm2(sigma, blurred, 0.4, 1.0)


def test_leakage_bound_of_proposition_3_2():
    rng = np.random.default_rng(5)
    sigma, pred, truth = random_case(rng, 99)
    res = calibrate_trust_mask(sigma, pred, truth, alpha=0.3, data_range=(0, 1))
    assert res.leakage_bound(0) == pytest.approx(0.3)
    assert res.leakage_bound(49) == pytest.approx(0.3 * 100 / 51)
    with pytest.raises(ValueError, match="n_leaked must be in"):
        res.leakage_bound(99)


def test_dask_input_gives_the_same_answer():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(6)
    sigma, pred, truth = random_case(rng, 40, shape=(16, 16))
    a = calibrate_trust_mask(sigma, pred, truth, alpha=0.3, data_range=(0, 1), curve_points=4)
    lazy = [da.from_array(x, chunks=(7, 16, 16)) for x in (sigma, pred, truth)]
    b = calibrate_trust_mask(*lazy, alpha=0.3, data_range=(0, 1), curve_points=4)
    assert a.lam == b.lam
    assert a.curve == b.curve


def test_round_trip_json_with_infinite_threshold():
    rng = np.random.default_rng(7)
    sigma, pred, truth = random_case(rng, 40)
    res = calibrate_trust_mask(sigma, truth, truth, alpha=0.5, data_range=(0, 1))
    assert CalibrationResult.from_json(res.to_json()) == res


def test_refusals_name_the_argument():
    rng = np.random.default_rng(8)
    sigma, pred, truth = random_case(rng, 30)
    with pytest.raises(ValueError, match="loss_bound or data_range is required"):
        calibrate_trust_mask(sigma, pred, truth, alpha=0.3)
    with pytest.raises(ValueError, match="prediction must lie inside data_range"):
        calibrate_trust_mask(sigma, pred + 2, truth, alpha=0.3, data_range=(0, 1))
    with pytest.raises(ValueError, match="fidelity_error must lie in"):
        calibrate_trust_mask(sigma, pred, truth, alpha=0.005, loss_bound=0.01)
    with pytest.raises(ValueError, match="alpha must be in"):
        calibrate_trust_mask(sigma, pred, truth, alpha=1.5, data_range=(0, 1))
    with pytest.raises(ValueError, match="loss_bound is required with fidelity='given'"):
        calibrate_trust_mask(sigma, alpha=0.3, fidelity="given", fidelity_error=sigma * 0)
    with pytest.raises(ValueError, match="blur_sigma must be a positive"):
        calibrate_trust_mask(sigma, pred, truth, alpha=0.3, fidelity="blurred", data_range=(0, 1))
    with pytest.raises(ValueError, match="fidelity must be one of"):
        calibrate_trust_mask(sigma, pred, truth, alpha=0.3, fidelity="l2", data_range=(0, 1))
    with pytest.raises(ValueError, match="truth must have the same shape as sigma"):
        calibrate_trust_mask(sigma, pred, truth[:, :2], alpha=0.3, data_range=(0, 1))
    bad = sigma.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="sigma must be finite"):
        calibrate_trust_mask(bad, pred, truth, alpha=0.3, data_range=(0, 1))
    with pytest.raises(InfeasibleCalibrationError, match="needs at least 3"):
        calibrate_trust_mask(sigma[:2], pred[:2], truth[:2], alpha=0.25, data_range=(0, 1))
