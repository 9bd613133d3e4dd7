"""Issue 14: diagnostics recalibrate 100 times without the risk curve, with the same report.

The recalibrations of the splits read only ``lam``; the report made that way is compared, key
by key, with the one made by full calibrations (curve on, as before) on fixed seeds, for every
rule and bound of the fraction-loss methods. ``max_certified_risk`` (kept between the splits)
is compared with a fresh computation.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_im2im_uq.calibration import (
    _fraction,
    calibrate_intervals,
    calibrate_segmentation,
    diagnostics,
)
from napari_im2im_uq.calibration.methods import intervals as m_intervals
from napari_im2im_uq.calibration.methods import segmentation as m_segmentation


def _with_curve(fn):
    def call(*args, **kwargs):
        kwargs.pop("curve", None)
        return fn(*args, **kwargs)

    return call


def _regression(seed, n):
    rng = np.random.default_rng(seed)
    f = rng.random((n, 8, 8))
    s = 0.02 + 0.1 * rng.random((n, 8, 8))
    y = f + s * rng.standard_normal((n, 8, 8))
    w = s * np.exp(0.4 * rng.standard_normal((n, 8, 8)))
    return f, f - w, f + w, y


@pytest.mark.parametrize(("rule", "bound"), [("rcps", "hoeffding_bentkus"), ("rcps", "wsr"),
                                             ("crc", "hoeffding_bentkus"), ("rcps", "hoeffding")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_diagnostics_equal_those_with_the_curve(monkeypatch, rule, bound, seed):
    f, lo, up, y = _regression(seed, 400)
    alpha = 0.15 if bound != "hoeffding" else 0.2
    res = calibrate_intervals(f[:200], lo[:200], up[:200], y[:200], alpha=alpha, rule=rule,
                              bound=bound, seed=seed)
    tiles = {"prediction": f[200:], "lower": lo[200:], "upper": up[200:], "truth": y[200:]}
    fast = diagnostics.diagnostics_report(res, tiles, n_splits=20, seed=seed)
    monkeypatch.setattr(m_intervals, "calibrate_intervals", _with_curve(calibrate_intervals))
    _fraction.max_certified_risk.cache_clear()
    full = diagnostics.diagnostics_report(res, tiles, n_splits=20, seed=seed)
    np.testing.assert_equal(fast, full)  # recursively, arrays and NaN included


@pytest.mark.parametrize(("rule", "bound"), [("crc", "hoeffding_bentkus"),
                                             ("rcps", "hoeffding_bentkus"), ("rcps", "wsr")])
def test_segmentation_diagnostics_equal_those_with_the_curve(monkeypatch, rule, bound):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(240, 3, 6, 6)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (p.cumsum(axis=1) < rng.random((240, 1, 6, 6))).sum(axis=1).clip(0, 2)
    res = calibrate_segmentation(p[:120], labels[:120], alpha=0.1, rule=rule, bound=bound)
    tiles = {"scores": p[120:], "labels": labels[120:]}
    fast = diagnostics.diagnostics_report(res, tiles, n_splits=15, seed=3)
    monkeypatch.setattr(m_segmentation, "calibrate_segmentation",
                        _with_curve(calibrate_segmentation))
    full = diagnostics.diagnostics_report(res, tiles, n_splits=15, seed=3)
    np.testing.assert_equal(fast, full)  # recursively, arrays and NaN included


def test_kept_max_certified_risk_is_the_fresh_one():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(20, 3000))
        alpha, delta = float(rng.uniform(0.05, 0.4)), float(rng.uniform(0.01, 0.2))
        bound = ("hoeffding", "hoeffding_bentkus")[int(rng.integers(2))]
        kept = _fraction.max_certified_risk(n, alpha, delta, bound)
        assert _fraction.max_certified_risk.__wrapped__(n, alpha, delta, bound) == kept
        assert _fraction.max_certified_risk(n, alpha, delta, bound) == kept
