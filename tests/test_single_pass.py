"""Issue 14: calibration reads lazy inputs once (twice at most), exactly as before.

The calibrations are compared with the implementation they replace, frozen in
``tests/_calibration_old`` (lam_hat and the empirical risk identical), on many small random
cases for every method, rule and bound; the risk curves are compared with a direct evaluation
at their points; lazy inputs are wrapped in a :class:`ReadCounter` that counts chunk reads.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from _calibration_old import intervals as old_intervals
from _calibration_old import mask as old_mask
from _calibration_old import segmentation as old_segmentation
from _calibration_old import trust_mask as old_trust_mask
from napari_im2im_uq.calibration import (
    calibrate_intervals,
    calibrate_mask,
    calibrate_segmentation,
    calibrate_trust_mask,
)
from napari_im2im_uq.calibration.mask import masked_distortion_curve
from napari_im2im_uq.workflows._reads import ReadCounter

SEEDS = range(12)


def regression(seed, n=120, side=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    f = rng.random((n, side, side)).astype(dtype)
    s = (0.02 + 0.1 * rng.random((n, side, side))).astype(dtype)
    y = np.clip(f + s * rng.standard_normal((n, side, side)).astype(dtype), 0, 1).astype(dtype)
    w = (s * np.exp(0.4 * rng.standard_normal((n, side, side)))).astype(dtype)
    return f, w, y


def lazy(counter, arrays, chunk=16):
    return [counter.wrap(da.from_array(a, chunks=(chunk,) + a.shape[1:]), f"a{i}")
            for i, a in enumerate(arrays)]


def same(new, old):
    assert new.lam == old.lam
    assert new.empirical_risk == old.empirical_risk
    assert new.n == old.n and new.rule == old.rule


# ----------------------------------------------------------------------------- intervals
INTERVAL_CASES = [("rcps", "hoeffding_bentkus"), ("rcps", "hoeffding"), ("rcps", "wsr"),
                  ("crc", "hoeffding_bentkus")]


@pytest.mark.parametrize(("rule", "bound"), INTERVAL_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_intervals_identical_to_the_previous_implementation(rule, bound, dtype):
    for seed in SEEDS:
        f, w, y = regression(seed, dtype=dtype)
        alpha = (0.1, 0.15, 0.2)[seed % 3]
        args = (f, f - w, f + w, y)
        new = calibrate_intervals(*args, alpha=alpha, delta=0.1, rule=rule, bound=bound,
                                  seed=seed)
        old = old_intervals.calibrate_intervals(*args, alpha=alpha, delta=0.1, rule=rule,
                                                bound=bound, seed=seed)
        same(new, old)


@pytest.mark.parametrize(("rule", "bound"), INTERVAL_CASES)
def test_interval_curve_is_exact_at_its_points(rule, bound):
    f, w, y = regression(3)
    res = calibrate_intervals(f, f - w, f + w, y, alpha=0.15, rule=rule, bound=bound)
    crit = old_intervals.interval_critical_values(f, f - w, f + w, y).reshape(len(f), -1)
    direct = [float((crit > lam).mean(axis=1).mean()) for lam in res.curve["lam"]]
    np.testing.assert_allclose(res.curve["risk"], direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("rule", "bound"), INTERVAL_CASES)
def test_intervals_read_lazy_inputs_at_most_twice(rule, bound):
    f, w, y = regression(5, n=96)
    counter = ReadCounter()
    with dask.config.set(scheduler="synchronous"):
        res = calibrate_intervals(*lazy(counter, (f, f - w, f + w, y)), alpha=0.15, rule=rule,
                                  bound=bound)
    assert 1 <= counter.passes() <= 2
    same(res, calibrate_intervals(f, f - w, f + w, y, alpha=0.15, rule=rule, bound=bound))


# ----------------------------------------------------------------------------- trust mask
@pytest.mark.parametrize("valid", [False, True])
def test_trust_mask_identical_to_the_previous_implementation(valid):
    for seed in SEEDS:
        f, w, y = regression(seed, n=60)
        v = None
        if valid:
            v = np.random.default_rng(seed).random(f.shape) > 0.2
            v[:, 0, 0] = True
        kw = dict(alpha=(0.2, 0.3, 0.4)[seed % 3], data_range=(0, 1), valid=v)
        new = calibrate_trust_mask(w, f, y, **kw)
        old = old_trust_mask.calibrate_trust_mask(w, f, y, **kw)
        same(new, old)
        assert new.curve["lam"] == old.curve["lam"]
        np.testing.assert_array_equal(new.curve["risk"], old.curve["risk"])


def test_trust_mask_reads_lazy_inputs_once():
    f, w, y = regression(7, n=64)
    for valid in (None, np.random.default_rng(0).random(f.shape) > 0.1):
        counter = ReadCounter()
        arrays = (w, f, y) if valid is None else (w, f, y, valid)
        wrapped = lazy(counter, arrays)
        with dask.config.set(scheduler="synchronous"):
            res = calibrate_trust_mask(*wrapped[:3], alpha=0.3, data_range=(0, 1),
                                       valid=None if valid is None else wrapped[3])
        assert counter.passes() == 1
        same(res, calibrate_trust_mask(w, f, y, alpha=0.3, data_range=(0, 1), valid=valid))


# ----------------------------------------------------------------------------- mask
MASK_CASES = [("conformal", "l1"), ("conformal", "l2"), ("crc", "l1"), ("crc", "l2"),
              ("paper", "l1")]


def mask_data(seed, n=60, side=8):
    f, w, y = regression(seed, n=n, side=side, dtype=np.float64)
    m = np.clip(1 - 5 * w, 0, 1)
    return m, f, y


@pytest.mark.parametrize(("rule", "distance"), MASK_CASES)
def test_mask_identical_to_the_previous_implementation(rule, distance):
    for seed in SEEDS:
        m, f, y = mask_data(seed)
        alpha = 0.02 if distance == "l1" else 0.002
        kw = dict(alpha=alpha, beta=0.8, rule=rule, distance=distance, data_range=(0, 1))
        if rule == "crc" and distance == "l2":  # B = 1 would need 500 tiles at this alpha
            kw.update(data_range=None, loss_bound=0.05)
        new = calibrate_mask(m, f, y, **kw)
        old = old_mask.calibrate_mask(m, f, y, **kw)
        same(new, old)
        assert new.curve["lam"] == old.curve["lam"]
        np.testing.assert_allclose(new.curve["risk"], old.curve["risk"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(new.curve["bound"], old.curve["bound"], rtol=1e-12,
                                   atol=1e-15)


def test_mask_curve_matches_the_direct_distortion():
    m, f, y = mask_data(2)
    v = np.random.default_rng(1).random(m.shape) > 0.3
    v[:, 0, 0] = True
    res = calibrate_mask(m, f, y, alpha=0.02, rule="crc", data_range=(0, 1), valid=v)
    direct = masked_distortion_curve(m, f, y, res.curve["lam"], valid=v).mean(axis=0)
    np.testing.assert_allclose(res.curve["risk"], direct, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rule", ["conformal", "crc"])
def test_mask_reads_lazy_inputs_once(rule):
    m, f, y = mask_data(4, n=64)
    counter = ReadCounter()
    with dask.config.set(scheduler="synchronous"):
        res = calibrate_mask(*lazy(counter, (m, f, y)), alpha=0.02, beta=0.8, rule=rule,
                             data_range=(0, 1))
    assert counter.passes() == 1
    same(res, calibrate_mask(m, f, y, alpha=0.02, beta=0.8, rule=rule, data_range=(0, 1)))


# ----------------------------------------------------------------------------- segmentation
SEG_CASES = [("crc", "hoeffding_bentkus", "miscoverage"), ("rcps", "hoeffding_bentkus", "binary"),
             ("rcps", "wsr", "miscoverage"), ("crc", None, "weighted_miscoverage")]


def seg_data(seed, n=80, k=3, side=6):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k, side, side)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([[[rng.choice(k, p=p[i, :, r, c]) for c in range(side)]
                        for r in range(side)] for i in range(n)])
    return p, labels


@pytest.mark.parametrize(("rule", "bound", "loss"), SEG_CASES)
def test_segmentation_identical_to_the_previous_implementation(rule, bound, loss):
    for seed in range(6):
        p, labels = seg_data(seed)
        kw = dict(alpha=0.3 if loss == "binary" else 0.1, rule=rule, loss=loss)
        if bound:
            kw["bound"] = bound
        same(calibrate_segmentation(p, labels, **kw),
             old_segmentation.calibrate_segmentation(p, labels, **kw))


def test_segmentation_reads_lazy_inputs_at_most_twice():
    p, labels = seg_data(1)
    counter = ReadCounter()
    with dask.config.set(scheduler="synchronous"):
        res = calibrate_segmentation(*lazy(counter, (p, labels)), alpha=0.1, rule="crc")
    assert 1 <= counter.passes() <= 2
    same(res, calibrate_segmentation(p, labels, alpha=0.1, rule="crc"))


def test_wsr_ranges_split_and_scanned_identical_to_one_by_one():
    """Larger cases, where ranges are certified by the bound and split, not just enumerated."""
    for seed in range(4):
        f, w, y = regression(100 + seed, n=300, side=16)
        args = (f, f - w, f + w, y)
        for alpha in (0.1, 0.2):
            new = calibrate_intervals(*args, alpha=alpha, bound="wsr", seed=seed)
            old = old_intervals.calibrate_intervals(*args, alpha=alpha, bound="wsr", seed=seed)
            same(new, old)


def test_wsr_range_bound_holds_for_every_vector_in_the_box():
    from napari_im2im_uq.calibration import bounds
    from napari_im2im_uq.calibration._wsr import certified_by_bound

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(20, 200))
        lo = rng.random(n) * rng.uniform(0.0, 0.2)
        hi = np.minimum(lo + rng.random(n) * rng.uniform(0.0, 0.05), 1.0)
        order = rng.permutation(n)
        if not certified_by_bound(lo[None], hi[None], 0.2, 0.1, order)[0]:
            continue
        checked += 1
        inside = lo + rng.random((50, n)) * (hi - lo)
        inside = np.vstack([inside, lo, hi])
        assert np.all(bounds.wsr_pvalue(inside, 0.2, 0.1, order=order) <= 0.1)
    assert checked > 50
