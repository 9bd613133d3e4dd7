"""Exactness, validity and refusals of calibrate_intervals."""

import numpy as np
import pytest

from _reference import interval_tile_losses, lam_hat_decreasing, neighbours
from napari_im2im_uq.calibration import (
    CalibrationResult,
    InfeasibleCalibrationError,
    calibrate_intervals,
    interval_critical_values,
)

RULES = [("crc", None), ("rcps", "hoeffding"), ("rcps", "hoeffding_bentkus"), ("rcps", "wsr")]


def random_case(rng, *, n, shape=(3, 3), ties=False, zeros=False, holes=False):
    f = rng.normal(size=(n, *shape))
    width = rng.gamma(2.0, 0.5, size=(2, n, *shape))
    if zeros:
        width[:, rng.random(size=(n, *shape)) < 0.1] = 0.0
    lower, upper = f - width[0], f + width[1]
    truth = f + rng.normal(scale=1.2, size=f.shape)
    if ties:
        truth = np.round(truth * 2) / 2
        f = np.round(f * 2) / 2
        lower, upper = np.minimum(lower, f), np.maximum(upper, f)
        truth = np.where(rng.random(size=f.shape) < 0.2, f, truth)
    valid = None
    if holes:
        valid = rng.random(size=f.shape) < 0.7
        valid.reshape(n, -1)[:, 0] = True
    return f, lower, upper, truth, valid


def reference(f, lower, upper, truth, valid, *, rule, alpha, delta, bound, seed=0):
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.concatenate([((truth - f) / (upper - f)).ravel(), ((f - truth) / (f - lower)).ravel()])
    cands = neighbours(raw[np.isfinite(raw)])
    order = np.random.default_rng(seed).permutation(f.shape[0])
    return lam_hat_decreasing(
        cands,
        lambda lam: interval_tile_losses(f, lower, upper, truth, lam, valid),
        rule=rule, alpha=alpha, delta=delta, bound=bound, order=order,
    )


@pytest.mark.parametrize(("rule", "bound"), RULES)
def test_matches_brute_force_on_many_small_cases(rule, bound):
    rng = np.random.default_rng(12345)
    checked = 0
    for case in range(80):
        n = int(rng.choice([1, 2, 3, 5, 8, 13, 30]))
        alpha = float(rng.choice([0.1, 0.2, 0.3, 0.5]))
        delta = float(rng.choice([0.05, 0.1, 0.3]))
        data = random_case(rng, n=n, ties=case % 3 == 0, zeros=case % 4 == 1, holes=case % 5 == 2)
        expected = reference(*data, rule=rule, alpha=alpha, delta=delta, bound=bound)
        if expected is None:
            with pytest.raises(InfeasibleCalibrationError):
                calibrate_intervals(*data[:4], valid=data[4], alpha=alpha, delta=delta,
                                    rule=rule, bound=bound or "hoeffding")
            continue
        res = calibrate_intervals(*data[:4], valid=data[4], alpha=alpha, delta=delta, rule=rule,
                                  bound=bound or "hoeffding")
        assert res.lam == expected, (case, n, alpha, delta)
        checked += 1
    assert checked >= 8  # enough feasible cases: the comparison really ran


def test_result_applies_with_calibration_arithmetic():
    rng = np.random.default_rng(1)
    f, lower, upper, truth, _ = random_case(rng, n=50, shape=(8, 8))
    res = calibrate_intervals(f, lower, upper, truth, alpha=0.2, rule="crc")
    lo, hi = res.intervals(f, lower, upper)
    miss = ~((lo <= truth) & (truth <= hi))
    assert miss.reshape(50, -1).mean(axis=1).mean() == pytest.approx(res.empirical_risk)
    # just below lam_hat, some pixel is lost: lam_hat is the breakpoint itself
    below = interval_tile_losses(f, lower, upper, truth, np.nextafter(res.lam, 0)).mean()
    assert below > res.empirical_risk


def test_round_trip_through_json():
    rng = np.random.default_rng(2)
    f, lower, upper, truth, _ = random_case(rng, n=40, shape=(4, 4))
    res = calibrate_intervals(f, lower, upper, truth, alpha=0.2, delta=0.2, bound="wsr", seed=3)
    back = CalibrationResult.from_json(res.to_json())
    assert back == res
    assert back.curve == res.curve
    assert back.params == {"seed": 3}


def test_dask_input_gives_the_same_answer():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(3)
    f, lower, upper, truth, valid = random_case(rng, n=64, shape=(6, 6), holes=True)
    for rule, bound in RULES:
        a = calibrate_intervals(f, lower, upper, truth, valid=valid, alpha=0.2, rule=rule,
                                bound=bound or "hoeffding")
        lazy = [da.from_array(x, chunks=(10, 6, 6)) for x in (f, lower, upper, truth, valid)]
        b = calibrate_intervals(*lazy[:4], valid=lazy[4], alpha=0.2, rule=rule,
                                bound=bound or "hoeffding")
        assert a.lam == b.lam


def test_uncoverable_pixels_give_a_clear_refusal():
    f = np.zeros((50, 2, 2))
    truth = np.ones_like(f)
    upper = f.copy()  # zero upper width: never covered
    with pytest.raises(InfeasibleCalibrationError, match="smallest alpha"):
        calibrate_intervals(f, f - 1, upper, truth, alpha=0.5, rule="crc")


@pytest.mark.parametrize(
    ("bound", "n_needed"), [("hoeffding", 116), ("hoeffding_bentkus", 22), ("wsr", None)]
)
def test_too_few_tiles_says_how_many(bound, n_needed):
    f = np.zeros((5, 2, 2))
    with pytest.raises(InfeasibleCalibrationError, match="needs at least") as info:
        calibrate_intervals(f, f - 1, f + 1, f, alpha=0.1, delta=0.1, bound=bound)
    if n_needed is not None:
        assert f"needs at least {n_needed}" in str(info.value)
    need = int(str(info.value).split("needs at least ")[1].split()[0])
    g = np.zeros((need, 2, 2))
    calibrate_intervals(g, g - 1, g + 1, g, alpha=0.1, delta=0.1, bound=bound)  # now feasible
    if need > 1:
        g = np.zeros((need - 1, 2, 2))
        with pytest.raises(InfeasibleCalibrationError):
            calibrate_intervals(g, g - 1, g + 1, g, alpha=0.1, delta=0.1, bound=bound)


def test_crc_needs_enough_tiles():
    f = np.zeros((8, 2, 2))
    with pytest.raises(InfeasibleCalibrationError, match="needs at least 9"):
        calibrate_intervals(f, f - 1, f + 1, f, alpha=0.1, rule="crc")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\); got 1.5"),
        ({"alpha": 0.0}, "alpha must be in"),
        ({"alpha": 0.1, "delta": 1.0}, "delta must be in"),
        ({"alpha": 0.1, "rule": "rcp"}, "rule must be one of"),
        ({"alpha": 0.1, "bound": "bentkus"}, "bound must be one of"),
    ],
)
def test_bad_levels_are_named(kwargs, match):
    f = np.zeros((30, 2, 2))
    with pytest.raises(ValueError, match=match):
        calibrate_intervals(f, f - 1, f + 1, f, **kwargs)


def test_bad_arrays_are_named():
    f = np.zeros((30, 2, 2))
    with pytest.raises(ValueError, match="truth must have the same shape as prediction"):
        calibrate_intervals(f, f - 1, f + 1, np.zeros((30, 2, 3)), alpha=0.2, rule="crc")
    bad = f.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="truth must be finite"):
        calibrate_intervals(f, f - 1, f + 1, bad, alpha=0.2, rule="crc")
    with pytest.raises(ValueError, match="lower must be at most prediction"):
        calibrate_intervals(f, f + 1, f + 2, f, alpha=0.2, rule="crc")
    with pytest.raises(ValueError, match="upper must be at least prediction"):
        calibrate_intervals(f, f - 1, f - 2, f, alpha=0.2, rule="crc")
    with pytest.raises(ValueError, match="no calibration tile"):
        calibrate_intervals(f[:0], f[:0], f[:0], f[:0], alpha=0.2, rule="crc")
    valid = np.ones(f.shape, bool)
    valid[3] = False
    with pytest.raises(ValueError, match="valid marks no pixel of calibration tile 3"):
        calibrate_intervals(f, f - 1, f + 1, f, valid=valid, alpha=0.2, rule="crc")
    with pytest.raises(ValueError, match="prediction must have shape"):
        calibrate_intervals(np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5), alpha=0.2)


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(4)
    data = random_case(rng, n=20, shape=(3, 3), holes=True)
    copies = [d.copy() for d in data]
    calibrate_intervals(*data[:4], valid=data[4], alpha=0.3, rule="crc")
    for a, b in zip(data, copies):
        np.testing.assert_array_equal(a, b)


def _exact_reference_lam(f, lo, up, y, *, alpha):
    c = interval_critical_values(f, lo, up, y, exact=True)
    cands = np.unique(np.r_[c[np.isfinite(c)].ravel(), 0.0])
    return lam_hat_decreasing(cands, lambda lam: interval_tile_losses(f, lo, up, y, lam),
                              rule="crc", alpha=alpha)


def test_exact_when_a_plain_quotient_is_far_from_its_boundary():
    """float64 truth a few ulps from the prediction: the plain quotient of pixel A (1.001) is
    above pixel B's (1.0007) but A's exact boundary (1.0005) is below it. A window around the
    plain answer alone would return 1.0007; the exact answer is 1.0005."""
    ulp = np.spacing(1000.0)
    f = np.full((19, 1, 1), 1000.0)
    lo, up, y = f - 1.0, f + 1.0, f - 0.5
    lo[0], y[0] = 1000.0 - 1000 * ulp, 1000.0 - 1001 * ulp
    y[1] = 1000.0 - 1.0007
    exact = _exact_reference_lam(f, lo, up, y, alpha=0.1)
    assert exact == pytest.approx(1.0005)
    assert calibrate_intervals(f, lo, up, y, alpha=0.1, rule="crc").lam == exact
    da = pytest.importorskip("dask.array")
    lazy = [da.from_array(a, chunks=(5, 1, 1)) for a in (f, lo, up, y)]
    assert calibrate_intervals(*lazy, alpha=0.1, rule="crc").lam == exact
    # also when the near pixel is one of many ordinary ones around the answer
    rng = np.random.default_rng(0)
    f2 = np.concatenate([f, 1000.0 + rng.random((30, 1, 1))])
    w2 = np.concatenate([f - lo, np.full((30, 1, 1), 1.0)])
    y2 = np.concatenate([y, f2[19:] - 1.0004 - 3e-4 * rng.random((30, 1, 1))])
    lo2, up2 = f2 - w2, f2 + 1.0
    lo2[:19] = lo
    assert calibrate_intervals(f2, lo2, up2, y2, alpha=0.1, rule="crc").lam == (
        _exact_reference_lam(f2, lo2, up2, y2, alpha=0.1))


def test_exact_for_float32_truth_ulps_from_the_prediction_across_binades():
    for seed in range(12):
        rng = np.random.default_rng(seed)
        shape = (25, 4, 4)
        f = (1024 - rng.integers(1, 4, shape) * 2.0 ** -14).astype(np.float32)
        y = np.where(rng.random(shape) < 0.5, np.float32(1024) + np.float32(2.0 ** -13),
                     np.nextafter(f, np.float32(0))).astype(np.float32)
        d = np.abs(y.astype(np.float64) - f)
        w = d * (1 + 1e-7 * rng.standard_normal(shape))  # quotients within 1e-7 of 1
        lo = (f - w).astype(np.float32)
        up = (f + w).astype(np.float32)
        res = calibrate_intervals(f, lo, up, y, alpha=0.3, rule="crc")
        ref = _exact_reference_lam(*(np.asarray(a, np.float64) for a in (f, lo, up, y)),
                                   alpha=0.3)
        assert res.lam == ref, (seed, res.lam, ref)
