"""calibrate_mask: exact critical values, the three rules, and the paper rule's failure."""

import math

import numpy as np
import pytest

from _reference import CRC_SLACK
from napari_im2im_uq.calibration import (
    CalibrationResult,
    InfeasibleCalibrationError,
    calibrate_mask,
)
from napari_im2im_uq.calibration.mask import masked_distortion_curve


def case(rng, n, shape=(5, 5)):
    y = rng.random((n, *shape))
    f = np.clip(y + rng.normal(scale=0.15, size=y.shape), 0, 1)
    m = np.clip(1 - np.abs(y - f) * 3 + rng.normal(scale=0.2, size=y.shape), 0, 1)
    return m, f, y


def slow_critical(m, f, y, alpha, distance):
    """Per-tile first crossing by bisection on the mask formula itself."""
    out = []
    for i in range(m.shape[0]):
        def d(lam, i=i):
            return masked_distortion_curve(m[i:i + 1], f[i:i + 1], y[i:i + 1], [lam],
                                           distance=distance)[0, 0]
        top = 1.0 + 1e-3
        if d(top * 1.0001) <= alpha:
            out.append(np.inf)
            continue
        lo, hi = 0.0, top * 1.0001
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if d(mid) <= alpha else (lo, mid)
        out.append(lo)
    return np.array(out)


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_conformal_and_paper_rules_are_the_stated_order_statistics(distance):
    rng = np.random.default_rng(0)
    for _ in range(25):
        n = int(rng.integers(9, 40))
        beta = float(rng.choice([0.8, 0.9]))
        alpha = 0.03 if distance == "l1" else 0.004
        m, f, y = case(rng, n)
        crit = np.sort(slow_critical(m, f, y, alpha, distance))
        k = math.floor(round((n + 1) * (1 - beta), 9))
        conf = calibrate_mask(m, f, y, alpha=alpha, beta=beta, distance=distance)
        assert conf.valid
        if np.isfinite(crit[k - 1]):
            assert conf.lam == pytest.approx(crit[k - 1], rel=1e-9, abs=1e-12)
        else:
            assert conf.lam == np.inf
        j = n - math.ceil(round(beta * n, 9)) + 1  # "maximal value with a beta fraction above"
        paper = calibrate_mask(m, f, y, alpha=alpha, beta=beta, distance=distance, rule="paper")
        assert not paper.valid and "NOT a valid guarantee" in paper.guarantee
        if np.isfinite(crit[j - 1]):
            assert paper.lam == pytest.approx(crit[j - 1], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_crc_matches_bisection_on_the_pooled_risk(distance):
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(5, 30))
        m, f, y = case(rng, n)
        B = 1.0
        alpha = float(rng.uniform(B / (n + 1) + 0.005, B / (n + 1) + 0.15))
        res = calibrate_mask(m, f, y, alpha=alpha, rule="crc", distance=distance,
                             data_range=(0, 1))

        def ok(lam):
            d = masked_distortion_curve(m, f, y, [lam], distance=distance)[:, 0]
            return d.sum() + B <= alpha * (n + 1) + CRC_SLACK

        lo, hi = 0.0, 2.0
        if ok(hi):
            assert res.lam == np.inf
            continue
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        assert res.lam == pytest.approx(lo, rel=1e-9)
        assert res.empirical_risk <= (alpha * (n + 1) - B) / n + 1e-9


def test_paper_rule_misses_its_level_where_conformal_holds():
    """n = 10, beta = 0.9: the paper takes the 2nd smallest lam_i, coverage 1 - 2/11 < 0.9.

    Tiles have i.i.d. continuous critical values; over 3000 repetitions the paper rule's rate of
    good test tiles is 0.818 in theory (we require < 0.86) and the conformal rule's is 0.909
    (we require > 0.89; 3 standard errors are 0.016).
    """
    rng = np.random.default_rng(2)
    reps, n, beta, alpha = 3000, 10, 0.9, 0.02
    good = {"paper": 0, "conformal": 0}
    for _ in range(reps):
        scale = rng.exponential(1.0, size=n + 1)[:, None, None]
        y = rng.random((n + 1, 3, 3))
        f = np.clip(y + 0.1 * scale * rng.choice([-1, 1], size=y.shape), -5, 5)
        m = np.full(y.shape, 0.5)
        for rule in good:
            res = calibrate_mask(m[:n], f[:n], y[:n], alpha=alpha, beta=beta, rule=rule)
            d = masked_distortion_curve(m[n:], f[n:], y[n:], [res.lam])[0, 0]
            good[rule] += d <= alpha
    assert good["paper"] / reps < 0.86
    assert good["conformal"] / reps > 0.89


def test_ssim_distance_runs_and_respects_alpha_on_calibration_tiles():
    rng = np.random.default_rng(3)
    m, f, y = case(rng, 20, shape=(16, 16))
    res = calibrate_mask(m, f, y, alpha=0.2, beta=0.8, distance="ssim", data_range=1.0)
    d = masked_distortion_curve(m, f, y, [res.lam], distance="ssim", data_range=1.0)[:, 0]
    k = math.floor(21 * 0.2)
    assert np.sort(d)[: 20 - k + 1].max() <= 0.2 + 1e-6 or res.lam == 0
    with pytest.raises(ValueError, match="data_range is required for distance='ssim'"):
        calibrate_mask(m, f, y, alpha=0.2, distance="ssim")
    with pytest.raises(ValueError, match="rule='crc' needs a distortion that grows"):
        calibrate_mask(m, f, y, alpha=0.2, distance="ssim", rule="crc", data_range=1.0)


def test_mask_applies_and_round_trips():
    rng = np.random.default_rng(4)
    m, f, y = case(rng, 30)
    res = calibrate_mask(m, f, y, alpha=0.03, beta=0.8)
    mask = res.mask(m)
    assert mask.shape == m.shape and mask.min() >= 0 and mask.max() <= 1
    np.testing.assert_allclose(mask, np.minimum(1, res.lam / (1e-3 + 1 - m)))
    assert CalibrationResult.from_json(res.to_json()) == res
    with pytest.raises(ValueError, match="call mask\\(\\) instead"):
        res.intervals(f, f, f)


def test_refusals():
    rng = np.random.default_rng(5)
    m, f, y = case(rng, 30)
    with pytest.raises(ValueError, match="mask_scores must lie in"):
        calibrate_mask(m + 2, f, y, alpha=0.03)
    with pytest.raises(ValueError, match="beta must be in"):
        calibrate_mask(m, f, y, alpha=0.03, beta=1.0)
    with pytest.raises(ValueError, match="distance must be one of"):
        calibrate_mask(m, f, y, alpha=0.03, distance="lpips")
    with pytest.raises(ValueError, match="needs B"):
        calibrate_mask(m, f, y, alpha=0.03, rule="crc")
    with pytest.raises(InfeasibleCalibrationError, match="beta=0.9 needs at least 9"):
        calibrate_mask(m[:8], f[:8], y[:8], alpha=0.03, beta=0.9)
    calibrate_mask(m[:9], f[:9], y[:9], alpha=0.03, beta=0.9)
    with pytest.raises(ValueError, match="eps must be a positive"):
        calibrate_mask(m, f, y, alpha=0.03, eps=0)
