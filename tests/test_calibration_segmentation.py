"""calibrate_segmentation: brute force over every candidate lam, refusals, the 004 loop bug."""

import zlib

import numpy as np
import pytest

from _reference import lam_hat_decreasing
from napari_im2im_uq.calibration import (
    CalibrationResult,
    InfeasibleCalibrationError,
    calibrate_segmentation,
)


def random_probs(rng, n, k=3, shape=(4, 4), sharp=2.0):
    logits = rng.normal(scale=sharp, size=(n, k, *shape))
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([[rng.choice(k, p=p[i, :, r, c]) for c in range(shape[1])]
                       for i in range(n) for r in range(shape[0])]).reshape(n, *shape)
    return p, labels


def slow_losses(p, labels, lam, *, loss, tau=None, weights=None, ignore=None):
    n, k = p.shape[:2]
    out = []
    for i in range(n):
        cov, tot = {}, {}
        for r in range(labels.shape[1]):
            for c in range(labels.shape[2]):
                y = labels[i, r, c]
                if ignore is not None and y == ignore:
                    continue
                probs = p[i, :, r, c]
                in_set = (1.0 - probs[y] <= lam) or y == int(np.argmax(probs))
                cov[y] = cov.get(y, 0) + in_set
                tot[y] = tot.get(y, 0) + 1
        covered, total = sum(cov.values()), sum(tot.values())
        if loss == "miscoverage":
            out.append(1 - covered / total)
        elif loss == "binary":
            out.append(float(covered < total))
        elif loss == "coverage_ratio":
            out.append(float(covered / total < tau))
        else:
            w = weights if weights is not None else np.ones(k)
            num = sum(w[c] * cov[c] / tot[c] for c in tot)
            out.append(1 - num / sum(w[c] for c in tot))
    return np.array(out)


@pytest.mark.parametrize("loss", ["miscoverage", "binary", "coverage_ratio",
                                  "weighted_miscoverage"])
@pytest.mark.parametrize(("rule", "bound"), [("crc", None), ("rcps", "hoeffding_bentkus"),
                                             ("rcps", "wsr")])
def test_matches_brute_force(loss, rule, bound):
    rng = np.random.default_rng(zlib.crc32(repr((loss, rule, bound)).encode()))
    compared = 0
    for case in range(16):
        n = int(rng.choice([1, 10, 25, 40]))
        alpha = float(rng.choice([0.1, 0.2, 0.4]))
        p, labels = random_probs(rng, n, shape=(3, 3))
        if case % 4 == 0:
            p = np.round(p, 1)  # ties
            p /= p.sum(axis=1, keepdims=True)
        tau = float(rng.choice([0.75, 0.9, 1.0])) if loss == "coverage_ratio" else None
        weights = rng.uniform(0.2, 2.0, size=3) if loss == "weighted_miscoverage" else None
        ignore = 2 if case % 5 == 1 else None
        if ignore is not None:
            labels[:, 0, 0] = 0  # every tile keeps a labelled pixel
        cands = np.unique(np.concatenate([[0.0], (1.0 - p).ravel()]))
        cands = cands[(cands >= 0) & (cands <= 1)]
        order = np.random.default_rng(0).permutation(n)
        expected = lam_hat_decreasing(
            cands,
            lambda lam: slow_losses(p, labels, lam, loss=loss, tau=tau, weights=weights,
                                    ignore=ignore),
            rule=rule, alpha=alpha, delta=0.1, bound=bound, order=order,
        )
        kwargs = dict(alpha=alpha, loss=loss, tau=tau, class_weights=weights, ignore_label=ignore,
                      rule=rule, bound=bound or "hoeffding_bentkus")
        if expected is None:
            with pytest.raises(InfeasibleCalibrationError):
                calibrate_segmentation(p, labels, **kwargs)
            continue
        res = calibrate_segmentation(p, labels, **kwargs)
        assert res.lam == expected, (case, n, alpha)
        compared += 1
    assert compared >= 2


def test_miscoverage_lam_is_not_stuck_at_zero():
    # the segmentation code of Mossina et al. returned lam = 0 for this loss (a loop bug)
    rng = np.random.default_rng(3)
    p, labels = random_probs(rng, 60, sharp=0.7)
    res = calibrate_segmentation(p, labels, alpha=0.1)
    assert res.lam > 0
    top1_miss = slow_losses(p, labels, 0.0, loss="miscoverage").mean()
    assert top1_miss > 0.1  # top-1 alone would violate alpha, so lam = 0 would be wrong


def test_sets_and_varisco():
    rng = np.random.default_rng(4)
    p, labels = random_probs(rng, 30)
    res = calibrate_segmentation(p, labels, alpha=0.1)
    sets = res.prediction_sets(p)
    assert sets.shape == p.shape and sets.dtype == bool
    assert sets.any(axis=1).all()  # top-1 always included
    np.testing.assert_array_equal(sets, (1.0 - p <= res.lam) | (p == p.max(axis=1, keepdims=True)))
    heat = res.varisco(p[0])
    assert heat.shape == p.shape[2:] and heat.min() >= 1 / 3 and heat.max() <= 1
    assert CalibrationResult.from_json(res.to_json()) == res
    with pytest.raises(ValueError, match="call prediction_sets / varisco\\(\\) instead"):
        res.trust_mask(p)


def test_logits_give_the_same_answer_as_their_softmax():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(30, 4, 5, 5))
    labels = rng.integers(0, 4, size=(30, 5, 5))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    a = calibrate_segmentation(logits, labels, alpha=0.2, scores_are="logits")
    b = calibrate_segmentation(p, labels, alpha=0.2)
    assert a.lam == pytest.approx(b.lam, abs=1e-12)


def test_refusals():
    rng = np.random.default_rng(6)
    p, labels = random_probs(rng, 20)
    with pytest.raises(ValueError, match="sum to 1"):
        calibrate_segmentation(p * 0.5, labels, alpha=0.1)
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        calibrate_segmentation(p * 3 - 1, labels, alpha=0.1)
    with pytest.raises(ValueError, match="labels must be in \\[0, 3\\)"):
        calibrate_segmentation(p, labels + 5, alpha=0.1)
    with pytest.raises(ValueError, match="scores_are must be one of"):
        calibrate_segmentation(p, labels, alpha=0.1, scores_are="softmax")
    with pytest.raises(ValueError, match="tau must be"):
        calibrate_segmentation(p, labels, alpha=0.1, loss="coverage_ratio")
    with pytest.raises(ValueError, match="scores must have shape"):
        calibrate_segmentation(p, labels[:, :2], alpha=0.1)
    with pytest.raises(ValueError, match="labels must hold integers"):
        calibrate_segmentation(p, labels.astype(float), alpha=0.1)
    unlabelled = np.full_like(labels, 2)
    with pytest.raises(ValueError, match="valid marks no pixel of calibration tile 0"):
        calibrate_segmentation(p, unlabelled, alpha=0.1, ignore_label=2)
