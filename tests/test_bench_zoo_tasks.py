"""The figures of benchmarks/bench_zoo_tasks.py compute what they claim, on tiny synthetic data.

- intervals whose width is constant are exactly as wide as the constant-width intervals
  calibrated the same way (``narrower`` = 0 to float rounding, for any constant);
- widths that follow the noise make the calibrated intervals narrower than constant width,
  with a positive Spearman correlation and quartile risks within a factor 2; widths that are
  independent of the noise make them wider (``narrower`` < 0), over several seeds;
- LAC sets of confident, correct probabilities are singletons (activation ratio 1, coverage 1,
  risk 0); sets that must take the second class everywhere to reach the coverage hold both
  classes everywhere (ratio 2);
- the activation ratio and coverage equal a per-pixel loop over the sets of a random case.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_zoo_tasks")


def _regression(seed, *, informative):
    rng = np.random.default_rng(seed)
    shape = (6, 128, 256)  # 48 tiles of 64 x 64
    pred = rng.uniform(0, 1, size=shape).astype(np.float32)
    sigma = np.where(rng.random(shape) < 0.5, 0.05, 0.5).astype(np.float32)
    truth = pred + sigma * rng.standard_normal(shape).astype(np.float32)
    scale = sigma if informative else rng.permutation(sigma.ravel()).reshape(shape)
    return {"prediction": pred, "lower": pred - scale, "upper": pred + scale, "truth": truth}


@pytest.mark.filterwarnings("ignore:An input array is constant")  # Spearman of a constant
@pytest.mark.parametrize("half_width", [0.01, 0.3, 2.0])
def test_constant_width_is_not_narrower_than_constant_width(half_width):
    a = _regression(0, informative=True)
    a["lower"], a["upper"] = a["prediction"] - half_width, a["prediction"] + half_width
    got = bench.interval_figures(a, splits=3)
    assert got["tiles"] == 48
    assert abs(got["narrower_than_constant"]) < 1e-5
    assert got["calibrated_width"] == pytest.approx(got["constant_width"], rel=1e-5)
    assert got["test_risk"] == pytest.approx(got["constant_test_risk"], abs=1e-6)


def test_widths_that_follow_the_noise_are_narrower_and_stratified_risk_is_even():
    for seed in range(3):
        good = bench.interval_figures(_regression(seed, informative=True), splits=4, seed=seed)
        bad = bench.interval_figures(_regression(seed, informative=False), splits=4, seed=seed)
        # expected about 1 - 1.64 * 0.55 / 1.28 = 0.3 for the informative widths
        assert good["narrower_than_constant"] > 0.15
        assert good["spearman_width_abs_error"] > 0.3
        assert good["quartile_risk_ratio"] < 2.0
        assert bad["narrower_than_constant"] < 0
        assert abs(bad["spearman_width_abs_error"]) < 0.05


def _probabilities(p_top, shape):
    p = np.empty((shape[0], 2, *shape[1:]), np.float32)
    p[:, 0], p[:, 1] = p_top, 1 - p_top
    return p


def test_confident_correct_probabilities_give_singleton_sets():
    scores = _probabilities(0.99, (120, 16, 16))  # RCPS-HB at alpha 0.05 needs 60 per half
    labels = np.zeros((120, 16, 16), np.int64)
    for rule in ("crc", "rcps"):
        got = bench.set_figures(scores, labels, splits=3, alpha=0.05, rule=rule)
        assert got["activation_ratio"] == 1.0
        assert got["activation_ratio_std_over_splits"] == 0.0
        assert got["test_coverage"] == 1.0
        assert got["test_risk"] == 0.0


def test_sets_that_need_the_second_class_everywhere_hold_both_classes():
    scores = _probabilities(0.7, (60, 16, 16))
    labels = np.zeros((60, 16, 16), np.int64)
    labels[:, ::2, ::2] = 1  # a quarter of the pixels are the class with p = 0.3
    got = bench.set_figures(scores, labels, splits=3, alpha=0.05)
    assert got["activation_ratio"] == 2.0
    assert got["test_coverage"] == 1.0
    assert got["lam_mean"] == pytest.approx(0.7, abs=1e-6)


def test_activation_ratio_and_coverage_equal_a_pixel_loop():
    from napari_im2im_uq.calibration import methods

    rng = np.random.default_rng(3)
    n, k = 40, 3
    logits = rng.normal(size=(n, k, 6, 6)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([[[rng.choice(k, p=p[i, :, r, c]) for c in range(6)] for r in range(6)]
                       for i in range(n)])
    got = bench.set_figures(p, labels, splits=1, alpha=0.1, seed=5)
    perm = np.random.default_rng([5, 2000]).permutation(n)
    cal, test = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    lam = methods.get("segmentation").calibrate({"scores": p[cal], "labels": labels[cal]},
                                                alpha=0.1).lam
    sizes, covered = [], []
    for i in test:
        for r in range(6):
            for c in range(6):
                probs = p[i, :, r, c]
                top = int(np.argmax(probs))
                members = {j for j in range(k) if 1 - probs[j] <= lam} | {top}
                sizes.append(len(members))
                covered.append(labels[i, r, c] in members)
    assert got["lam_mean"] == lam
    assert got["activation_ratio"] == pytest.approx(np.mean(sizes), abs=1e-12)
    assert got["test_coverage"] == pytest.approx(np.mean(covered), abs=1e-12)
    assert got["test_risk"] == pytest.approx(1 - np.mean(covered), abs=1e-12)
