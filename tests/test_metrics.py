"""Tests of calibration.metrics against slow references written with loops over tiles and pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats
from skimage.metrics import structural_similarity

from napari_im2im_uq.calibration import metrics
from napari_im2im_uq.calibration.metrics import (
    activation_ratio,
    fidelity_error,
    interval_miscoverage,
    interval_size,
    mask_size,
    masked_distortion,
    mse,
    oracle_mask_size,
    psnr,
    risk_histogram,
    size_stratified_risk,
    spatial_miscoverage,
    spearman_size_error,
)

N_CASES = 40


# ------------------------------------------------------------------------------------------
# random cases
# ------------------------------------------------------------------------------------------


def make_case(seed):
    """Small random stacks with ties, zero widths, all/none-covered tiles and holey masks."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    ndim = int(rng.integers(1, 4))
    tile = tuple(int(s) for s in rng.integers(1, 5, size=ndim))
    shape = (n, *tile)
    if rng.random() < 0.5:
        # values on a dyadic grid: many ties, exact hits on bounds, and tile means that are
        # exactly equal when they are equal on paper (so ranks of tied means are well defined)
        pred = rng.integers(-2, 3, size=shape) / 2.0
        half = rng.integers(0, 3, size=shape) / 2.0
        truth = pred + rng.integers(-3, 4, size=shape) / 2.0
        stretch = rng.choice([0.5, 1.0, 1.5, 2.0])
    else:
        pred = rng.normal(size=shape)
        half = np.abs(rng.normal(size=shape)) * (rng.random(shape) < 0.8)  # some zero widths
        truth = pred + rng.normal(size=shape)
        stretch = rng.uniform(0.5, 2.0)
    lower = pred - half
    upper = pred + half * stretch
    i = int(rng.integers(n))
    kind = rng.integers(3)
    if kind == 1:  # a tile with every pixel covered
        truth[i] = (lower[i] + upper[i]) / 2
    elif kind == 2:  # a tile with no pixel covered
        truth[i] = upper[i] + 1.0
    valid = None
    if rng.random() < 0.6:
        valid = rng.random(shape) < 0.6
        for j in range(n):  # every tile keeps at least one valid pixel
            valid[j][tuple(rng.integers(0, s) for s in tile)] = True
        # invalid pixels may hold garbage: the metrics must ignore it
        truth = np.where(valid, truth, np.nan)
        lower = np.where(valid | (rng.random(shape) < 0.5), lower, np.inf)
    return {
        "lower": lower,
        "upper": upper,
        "truth": truth,
        "prediction": pred,
        "valid": valid,
        "rng": rng,
    }


def pixels(shape, valid, i):
    """Indices of the valid pixels of tile i, in C order."""
    for idx in np.ndindex(*shape[1:]):
        if valid is None or valid[i][idx]:
            yield idx


# ------------------------------------------------------------------------------------------
# references: plain Python loops
# ------------------------------------------------------------------------------------------


def ref_miscoverage(lo, up, y, valid):
    out = []
    for i in range(lo.shape[0]):
        miss = count = 0
        for p in pixels(lo.shape, valid, i):
            count += 1
            if not (lo[i][p] <= y[i][p] <= up[i][p]):
                miss += 1
        out.append(miss / count)
    return np.array(out)


def ref_size(lo, up, valid):
    out = []
    for i in range(lo.shape[0]):
        vals = [up[i][p] - lo[i][p] for p in pixels(lo.shape, valid, i)]
        out.append(sum(vals) / len(vals))
    return np.array(out)


def ref_quantile(values, q):
    s = sorted(values)
    pos = q * (len(s) - 1)
    k = math.floor(pos)
    if k + 1 >= len(s) or s[k] == s[k + 1]:
        return s[k]
    return s[k] + (s[k + 1] - s[k]) * (pos - k)


def ref_stratified(lo, up, y, valid, n_strata):
    pooled = []
    for i in range(lo.shape[0]):
        for p in pixels(lo.shape, valid, i):
            pooled.append((up[i][p] - lo[i][p], not (lo[i][p] <= y[i][p] <= up[i][p])))
    edges = [ref_quantile([s for s, _ in pooled], k / n_strata) for k in range(n_strata + 1)]
    count = [0] * n_strata
    missed = [0] * n_strata
    for s, m in pooled:
        k = max(j for j in range(n_strata) if edges[j] <= s)  # edges[k] <= s < edges[k + 1]
        count[k] += 1
        missed[k] += m
    risk = [missed[k] / count[k] if count[k] else float("nan") for k in range(n_strata)]
    return np.array(edges), np.array(risk), np.array(count)


def ref_ranks(values):
    order = sorted(range(len(values)), key=lambda j: values[j])
    ranks = [0.0] * len(values)
    j = 0
    while j < len(order):
        k = j
        while k + 1 < len(order) and values[order[k + 1]] == values[order[j]]:
            k += 1
        for m in range(j, k + 1):
            ranks[order[m]] = (j + k) / 2 + 1
        j = k + 1
    return ranks


def ref_pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (z - mb) for x, z in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((z - mb) ** 2 for z in b)
    if va == 0 or vb == 0:
        return float("nan")
    return cov / math.sqrt(va * vb)


def ref_spearman(a, b):
    return ref_pearson(ref_ranks(a), ref_ranks(b))


def ref_pooled_size_error(c):
    lo, up, y, f, valid = c["lower"], c["upper"], c["truth"], c["prediction"], c["valid"]
    sizes, errors = [], []
    for i in range(lo.shape[0]):
        for p in pixels(lo.shape, valid, i):
            sizes.append(up[i][p] - lo[i][p])
            errors.append(abs(y[i][p] - f[i][p]))
    return sizes, errors


def ref_spatial(lo, up, y, valid):
    out = np.full(lo.shape[1:], np.nan)
    for p in np.ndindex(*lo.shape[1:]):
        miss = count = 0
        for i in range(lo.shape[0]):
            if valid is None or valid[i][p]:
                count += 1
                miss += not (lo[i][p] <= y[i][p] <= up[i][p])
        if count:
            out[p] = miss / count
    return out


def ref_tile_mean(values, valid):
    out = []
    for i in range(values.shape[0]):
        vals = [float(values[i][p]) for p in pixels(values.shape, valid, i)]
        out.append(sum(vals) / len(vals))
    return np.array(out)


def ref_fidelity(mask, err, valid):
    out = []
    for i in range(mask.shape[0]):
        best = 0.0
        for p in pixels(mask.shape, valid, i):
            if mask[i][p]:
                best = max(best, err[i][p])
        out.append(best)
    return np.array(out)


def ref_mse(pred, y, mask, valid):
    out = []
    for i in range(pred.shape[0]):
        sq = [
            (pred[i][p] - y[i][p]) ** 2
            for p in pixels(pred.shape, valid, i)
            if mask is None or mask[i][p]
        ]
        out.append(sum(sq) / len(sq) if sq else float("nan"))
    return np.array(out)


def ref_psnr(pred, y, mask, valid, data_range):
    out = []
    for e in ref_mse(pred, y, mask, valid):
        if math.isnan(e):
            out.append(float("nan"))
        elif e == 0:
            out.append(float("inf"))
        else:
            out.append(10 * math.log10(data_range**2 / e))
    return np.array(out)


def ref_activation(sets, valid):
    out = []
    n, k = sets.shape[:2]
    for i in range(n):
        total = count = 0
        for p in np.ndindex(*sets.shape[2:]):
            if valid is None or valid[i][p]:
                count += 1
                total += sum(bool(sets[i][(c, *p)]) for c in range(k))
        out.append(total / count)
    return np.array(out)


def ref_distortion(mask, pred, y, valid, distance):
    out = []
    for i in range(mask.shape[0]):
        vals = []
        for p in pixels(mask.shape, valid, i):
            d = mask[i][p] * y[i][p] - mask[i][p] * pred[i][p]
            vals.append(abs(d) if distance == "l1" else d * d)
        out.append(sum(vals) / len(vals))
    return np.array(out)


def lp_oracle_l1(errors, alpha):
    """Problem P1 with the l1 distance as a linear programme."""
    d = len(errors)
    res = optimize.linprog(
        c=-np.ones(d),
        A_ub=np.asarray(errors, dtype=float)[None, :] / d,
        b_ub=[alpha],
        bounds=[(0, 1)] * d,
        method="highs",
    )
    assert res.status == 0
    return -res.fun / d


def nlp_oracle_l2(errors, alpha):
    """Problem P1 with the mean-squared distance, solved numerically (SLSQP)."""
    e2 = np.asarray(errors, dtype=float) ** 2
    d = len(e2)
    best = -np.inf
    for start in (np.zeros(d), np.full(d, 0.5), (e2 == 0).astype(float)):
        res = optimize.minimize(
            lambda m: -m.sum(),
            start,
            jac=lambda m: -np.ones_like(m),
            bounds=[(0, 1)] * d,
            constraints=[
                {
                    "type": "ineq",
                    "fun": lambda m: alpha - (m**2 * e2).mean(),
                    "jac": lambda m: -2 * m * e2 / d,
                }
            ],
            method="SLSQP",
            options={"ftol": 1e-12, "maxiter": 500},
        )
        m = np.clip(res.x, 0, 1)
        if (m**2 * e2).mean() <= alpha * (1 + 1e-7) + 1e-12:
            best = max(best, m.mean())
    return best


# ------------------------------------------------------------------------------------------
# every function against its reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(N_CASES))
def test_interval_metrics_match_references(seed):
    c = make_case(seed)
    lo, up, y, valid = c["lower"], c["upper"], c["truth"], c["valid"]
    np.testing.assert_allclose(
        interval_miscoverage(lo, up, y, valid=valid), ref_miscoverage(lo, up, y, valid)
    )
    np.testing.assert_allclose(interval_size(lo, up, valid=valid), ref_size(lo, up, valid))
    np.testing.assert_allclose(
        spatial_miscoverage(lo, up, y, valid=valid), ref_spatial(lo, up, y, valid)
    )
    for n_strata in (1, 2, 4, 7):
        got = size_stratified_risk(lo, up, y, n_strata=n_strata, valid=valid)
        edges, risk, count = ref_stratified(lo, up, y, valid, n_strata)
        np.testing.assert_allclose(got["edges"], edges, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got["count"], count)
        np.testing.assert_allclose(got["risk"], risk, equal_nan=True)
        assert got["count"].sum() == (lo.size if valid is None else valid.sum())


@pytest.mark.parametrize("seed", range(N_CASES))
def test_spearman_matches_reference(seed):
    c = make_case(seed)
    args = (c["lower"], c["upper"], c["truth"], c["prediction"])
    sizes, errors = ref_pooled_size_error(c)
    if len(sizes) < 2:
        with pytest.raises(ValueError, match="at least 2 points"):
            spearman_size_error(*args, valid=c["valid"])
    else:
        np.testing.assert_allclose(
            spearman_size_error(*args, valid=c["valid"]),
            ref_spearman(sizes, errors),
            atol=1e-12,
            equal_nan=True,
        )
    lo = c["lower"]
    n = lo.shape[0]
    tile_size = ref_size(c["lower"], c["upper"], c["valid"])
    tile_err = ref_tile_mean(np.abs(c["truth"] - c["prediction"]), c["valid"])
    if n < 2:
        with pytest.raises(ValueError, match="at least 2 points"):
            spearman_size_error(*args, valid=c["valid"], per="tile")
    else:
        np.testing.assert_allclose(
            spearman_size_error(*args, valid=c["valid"], per="tile"),
            ref_spearman(list(tile_size), list(tile_err)),
            atol=1e-12,
            equal_nan=True,
        )


def test_spearman_agrees_with_scipy_and_subsamples_deterministically(monkeypatch):
    rng = np.random.default_rng(7)
    pred = rng.normal(size=(6, 9, 11))
    truth = pred + rng.normal(size=pred.shape) * np.linspace(0.1, 2, 11)
    half = np.abs(rng.normal(size=pred.shape)) + np.linspace(0, 1, 11)
    valid = rng.random(pred.shape) < 0.7
    args = (pred - half, pred + half, truth, pred)
    full = spearman_size_error(*args, valid=valid, max_pixels=None)
    expected = stats.spearmanr((2 * half)[valid], np.abs(truth - pred)[valid]).statistic
    assert full == pytest.approx(expected, abs=1e-12)

    # the documented sample: sorted ranks among the valid pixels (C order) from default_rng(seed)
    total = int(valid.sum())
    ranks = np.sort(np.random.default_rng(3).choice(total, size=50, replace=False))
    want = stats.spearmanr((2 * half)[valid][ranks], np.abs(truth - pred)[valid][ranks])
    got = spearman_size_error(*args, valid=valid, max_pixels=50, seed=3)
    assert got == pytest.approx(want.statistic, abs=1e-12)
    # the same under tiny batches (one tile at a time): the sample does not depend on chunking
    monkeypatch.setattr(metrics, "_BATCH_ELEMENTS", 1)
    assert spearman_size_error(*args, valid=valid, max_pixels=50, seed=3) == got
    assert spearman_size_error(*args, valid=valid, max_pixels=50, seed=4) != got


@pytest.mark.parametrize("seed", range(N_CASES))
def test_mask_metrics_match_references(seed):
    c = make_case(seed)
    rng, valid, y, pred = c["rng"], c["valid"], c["truth"], c["prediction"]
    shape = pred.shape
    cont = rng.random(shape) * (rng.random(shape) < 0.8)
    cont[rng.random(shape) < 0.2] = 1.0
    binary = rng.random(shape) < 0.5
    if rng.random() < 0.3:
        binary[0] = False  # an empty mask
    err = np.abs(rng.normal(size=shape)).round(1)  # ties and zeros

    np.testing.assert_allclose(mask_size(cont, valid=valid), ref_tile_mean(cont, valid))
    np.testing.assert_allclose(mask_size(binary, valid=valid), ref_tile_mean(binary, valid))
    np.testing.assert_allclose(
        fidelity_error(binary, err, valid=valid), ref_fidelity(binary, err, valid)
    )
    for mask in (None, binary):
        np.testing.assert_allclose(
            mse(pred, y, mask=mask, valid=valid), ref_mse(pred, y, mask, valid), equal_nan=True
        )
        np.testing.assert_allclose(
            psnr(pred, y, data_range=2.0, mask=mask, valid=valid),
            ref_psnr(pred, y, mask, valid, 2.0),
            equal_nan=True,
        )
    for distance in ("l1", "l2"):
        np.testing.assert_allclose(
            masked_distortion(cont, pred, y, distance=distance, valid=valid),
            ref_distortion(cont, pred, y, valid, distance),
            rtol=1e-12,
            atol=1e-15,
        )


@pytest.mark.parametrize("seed", range(N_CASES))
def test_activation_ratio_matches_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    n, k = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    tile = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3))))
    sets = rng.random((n, k, *tile)) < rng.random()
    valid = None
    if rng.random() < 0.6:
        valid = rng.random((n, *tile)) < 0.5
        valid[(slice(None), *([0] * len(tile)))] = True
    np.testing.assert_allclose(activation_ratio(sets, valid=valid), ref_activation(sets, valid))


@pytest.mark.parametrize("seed", range(40))
def test_oracle_l1_matches_linear_programme(seed):
    rng = np.random.default_rng(2000 + seed)
    n = int(rng.integers(1, 4))
    shape = (n, int(rng.integers(1, 4)), int(rng.integers(1, 5)))
    truth = rng.integers(0, 4, size=shape) / 4.0  # ties and zero errors
    pred = truth + rng.integers(-2, 3, size=shape) / 4.0 * (rng.random(shape) < 0.8)
    valid = None
    if rng.random() < 0.5:
        valid = rng.random(shape) < 0.7
        valid[:, 0, 0] = True
    unmasked = ref_distortion(np.ones(shape), pred, truth, valid, "l1")
    for alpha in (0.0, 0.01, 0.1, 0.3, float(unmasked.max()), 5.0):
        got = oracle_mask_size(pred, truth, alpha=alpha, valid=valid)
        for i in range(n):
            errs = [abs(truth[i][p] - pred[i][p]) for p in pixels(shape, valid, i)]
            assert got[i] == pytest.approx(lp_oracle_l1(errs, alpha), abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_oracle_l2_matches_numerical_optimum(seed):
    rng = np.random.default_rng(3000 + seed)
    shape = (2, 1, int(rng.integers(1, 6)))
    truth = rng.normal(size=shape)
    pred = truth + rng.normal(size=shape) * (rng.random(shape) < 0.8)
    pred[0, 0, -1] = truth[0, 0, -1] + 1.0  # a tie with the next pixel in some seeds
    for alpha in (0.0, 0.02, 0.2, 1.0, 10.0):
        got = oracle_mask_size(pred, truth, alpha=alpha, distance="l2")
        for i in range(shape[0]):
            errs = np.abs(truth[i] - pred[i]).ravel()
            assert got[i] == pytest.approx(nlp_oracle_l2(errs, alpha), abs=1e-5)


def test_oracle_l2_is_kutiel_closed_form_for_small_alpha():
    # Theorem 1 of Kutiel et al. (p = 2, sum form): m_i = sqrt(A) q_i / sqrt(sum q_j), q = 1/e^2
    e = np.array([0.5, 1.0, 2.0, 4.0])
    alpha = 1e-3
    q = 1 / e**2
    m = np.sqrt(alpha * e.size) * q / np.sqrt(q.sum())
    assert m.max() < 1
    got = oracle_mask_size(e[None, None, :], np.zeros((1, 1, 4)), alpha=alpha, distance="l2")
    assert got[0] == pytest.approx(m.mean(), rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_ssim_distortion_matches_skimage(seed):
    rng = np.random.default_rng(4000 + seed)
    shape = (2, 8, 9)
    truth = rng.random(shape)
    pred = np.clip(truth + 0.1 * rng.normal(size=shape), 0, 1)
    mask = rng.random(shape)
    got = masked_distortion(mask, pred, truth, distance="ssim", data_range=1.0)
    for i in range(2):
        want = 1 - structural_similarity(mask[i] * truth[i], mask[i] * pred[i], data_range=1.0)
        assert got[i] == pytest.approx(want, abs=1e-12)
    everywhere = np.ones(shape, dtype=bool)
    with_valid = masked_distortion(
        mask, pred, truth, distance="ssim", data_range=1.0, valid=everywhere
    )
    np.testing.assert_allclose(with_valid, got, atol=1e-12)
    # a valid region: the mean of skimage's map over valid pixels off the 3-pixel border
    valid = rng.random(shape) < 0.5
    valid[:, 4, 4] = True
    truth_nan = np.where(valid, truth, np.nan)
    got = masked_distortion(mask, pred, truth_nan, distance="ssim", data_range=1.0, valid=valid)
    for i in range(2):
        _, smap = structural_similarity(
            np.where(valid[i], mask[i] * truth[i], 0),
            np.where(valid[i], mask[i] * pred[i], 0),
            data_range=1.0,
            full=True,
        )
        vals = [smap[r, col] for r in range(3, 5) for col in range(3, 6) if valid[i][r, col]]
        assert got[i] == pytest.approx(1 - sum(vals) / len(vals), abs=1e-12)


# ------------------------------------------------------------------------------------------
# hand-computed examples
# ------------------------------------------------------------------------------------------


def test_tiny_examples_by_hand():
    lower = np.array([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    upper = np.array([[[1.0, 2.0], [1.0, 0.0]], [[1.0, 3.0], [1.0, 1.0]]])
    truth = np.array([[[1.0, 3.0], [0.5, 0.0]], [[0.0, 2.0], [5.0, 1.0]]])
    # tile 0: 1.0 in [0, 1] yes, 3 in [0, 2] no, 0.5 yes, 0 in [0, 0] yes -> 1/4
    # tile 1: 0 in [1, 1] no, 2 in [1, 3] yes, 5 no, 1 in [1, 1] yes -> 2/4
    np.testing.assert_array_equal(interval_miscoverage(lower, upper, truth), [0.25, 0.5])
    np.testing.assert_array_equal(interval_size(lower, upper), [1.0, 0.5])
    np.testing.assert_array_equal(
        spatial_miscoverage(lower, upper, truth), [[0.5, 0.5], [0.5, 0.0]]
    )
    valid = np.array([[[True, True], [False, False]], [[False, False], [False, True]]])
    np.testing.assert_array_equal(
        interval_miscoverage(lower, upper, truth, valid=valid), [0.5, 0.0]
    )
    np.testing.assert_array_equal(
        spatial_miscoverage(lower, upper, truth, valid=valid), [[0.0, 1.0], [np.nan, 0.0]]
    )
    # sizes pooled: [1, 2, 1, 0, 0, 2, 0, 0]; quartile edges [0, 0, 0.5, 1.25, 2]
    strata = size_stratified_risk(lower, upper, truth)
    np.testing.assert_allclose(strata["edges"], [0, 0, 0.5, 1.25, 2])
    # [0, 0) empty; [0, 0.5): the four zeros (0 in [0,0] yes, 0 in [1,1] no, 5 no, 1 yes);
    # [0.5, 1.25): the two ones (both covered); [1.25, 2]: the two twos (3 no, 2 yes)
    np.testing.assert_array_equal(strata["count"], [0, 4, 2, 2])
    np.testing.assert_array_equal(strata["risk"], [np.nan, 0.5, 0.0, 0.5])


def test_constant_width_puts_every_pixel_in_the_last_stratum():
    lower = np.zeros((3, 4, 4))
    upper = np.full((3, 4, 4), 0.2)
    truth = np.linspace(-0.5, 0.5, 48).reshape(3, 4, 4)
    got = size_stratified_risk(lower, upper, truth)
    np.testing.assert_array_equal(got["edges"], np.full(5, 0.2))
    np.testing.assert_array_equal(got["count"], [0, 0, 0, 48])
    assert np.isnan(got["risk"][:3]).all()
    assert got["risk"][3] == interval_miscoverage(lower, upper, truth).mean()


def test_mask_examples_by_hand():
    mask = np.array([[[True, False, True, True]], [[False, False, False, False]]])
    err = np.array([[[0.1, 0.9, 0.3, 0.2]], [[0.5, 0.5, 0.5, 0.5]]])
    np.testing.assert_array_equal(fidelity_error(mask, err), [0.3, 0.0])
    np.testing.assert_array_equal(mask_size(mask), [0.75, 0.0])
    pred = np.array([[[0.5, 0.0, 0.5, 0.4]], [[0.0, 0.0, 0.0, 0.0]]])
    truth = np.array([[[0.5, 1.0, 0.5, 0.5]], [[0.0, 0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(mse(pred, truth), [(1 + 0.01) / 4, 0.0])
    np.testing.assert_allclose(mse(pred, truth, mask=mask), [0.01 / 3, np.nan])
    got = psnr(pred, truth, data_range=1.0, mask=mask)
    assert got[0] == pytest.approx(10 * math.log10(300))
    assert np.isnan(got[1])
    assert psnr(pred, truth, data_range=[1.0, 2.0])[1] == np.inf
    # per-tile data_range
    np.testing.assert_allclose(
        psnr(pred, truth, data_range=[2.0, 2.0], mask=mask)[:1],
        [10 * math.log10(1200)],
    )


def test_activation_ratio_example_by_hand():
    sets = np.zeros((2, 3, 2), dtype=bool)
    sets[0, 0, :] = True  # one class per pixel
    sets[1, :, 0] = True  # all three classes at pixel 0, none at pixel 1
    np.testing.assert_array_equal(activation_ratio(sets), [1.0, 1.5])
    valid = np.array([[True, True], [True, False]])
    np.testing.assert_array_equal(activation_ratio(sets, valid=valid), [1.0, 3.0])


def test_oracle_examples_by_hand():
    truth = np.zeros((1, 1, 4))
    pred = np.array([[[0.0, 0.1, 0.2, 0.4]]])
    # budget 4 * alpha; alpha = 0.05 -> 0.2: keep 0 and 0.1, then 0.1 / 0.2 of the third
    assert oracle_mask_size(pred, truth, alpha=0.05)[0] == pytest.approx(2.5 / 4)
    assert oracle_mask_size(pred, truth, alpha=0.0)[0] == 0.25
    assert oracle_mask_size(pred, truth, alpha=0.175)[0] == 1.0
    assert oracle_mask_size(np.zeros((2, 3)), np.zeros((2, 3)), alpha=0.0).tolist() == [1, 1]
    # l2 with one error: m^2 e^2 / d <= alpha -> m = sqrt(alpha d) / e
    pred = np.array([[[0.0, 2.0]]])
    got = oracle_mask_size(pred, np.zeros((1, 1, 2)), alpha=0.5, distance="l2")
    assert got[0] == pytest.approx((1 + math.sqrt(0.5 * 2) / 2) / 2)


def test_masked_distortion_example_by_hand():
    truth = np.array([[[0.0, 0.0, 0.0, 0.0]]])
    pred = np.array([[[0.4, 0.2, 0.0, 0.8]]])
    mask = np.array([[[1.0, 0.5, 1.0, 0.0]]])
    np.testing.assert_allclose(masked_distortion(mask, pred, truth), [0.5 / 4])
    np.testing.assert_allclose(
        masked_distortion(mask, pred, truth, distance="l2"), [(0.16 + 0.01) / 4]
    )
    # the oracle mask meets the threshold it was computed for
    binary_keep = np.array([[[1.0, 1.0, 1.0, 0.0]]])
    assert masked_distortion(binary_keep, pred, truth)[0] == pytest.approx(0.15)


def test_risk_histogram():
    got = risk_histogram([0.02, 0.06, 0.09, 0.12], bins=4, limits=(0.0, 0.2), alpha=0.1)
    np.testing.assert_array_equal(got["counts"], [1, 2, 1, 0])
    np.testing.assert_allclose(got["edges"], [0, 0.05, 0.1, 0.15, 0.2])
    assert got["violation_rate"] == 0.25
    default = risk_histogram(np.array([0.1, 0.2]), bins=10)
    assert default["edges"][0] == 0.0
    assert default["edges"][-1] == 1.0
    assert default["violation_rate"] is None
    wide = risk_histogram([2.0, 3.0], bins=2)
    np.testing.assert_array_equal(wide["edges"], [2.0, 2.5, 3.0])


# ------------------------------------------------------------------------------------------
# batching, lazy inputs, no mutation
# ------------------------------------------------------------------------------------------


def all_metrics(c):
    lo, up, y, pred, valid = c["lower"], c["upper"], c["truth"], c["prediction"], c["valid"]
    mask = c["mask"]
    err = np.abs(np.nan_to_num(y) - pred)
    return {
        "miscoverage": interval_miscoverage(lo, up, y, valid=valid),
        "size": interval_size(lo, up, valid=valid),
        "strata": size_stratified_risk(lo, up, y, valid=valid)["risk"],
        "spearman": spearman_size_error(lo, up, y, pred, valid=valid, max_pixels=40),
        "spatial": spatial_miscoverage(lo, up, y, valid=valid),
        "mask_size": mask_size(mask, valid=valid),
        "fidelity": fidelity_error(mask > 0.5, err, valid=valid),
        "mse": mse(pred, y, mask=mask > 0.5, valid=valid),
        "psnr": psnr(pred, y, data_range=3.0, valid=valid),
        "distortion": masked_distortion(mask, pred, y, distance="l2", valid=valid),
        "ssim": masked_distortion(mask, pred, y, distance="ssim", data_range=3.0, valid=valid),
        "oracle": oracle_mask_size(pred, y, alpha=0.3, valid=valid),
    }


def stack_case():
    rng = np.random.default_rng(11)
    shape = (7, 8, 9)
    pred = rng.normal(size=shape)
    half = np.abs(rng.normal(size=shape))
    valid = rng.random(shape) < 0.8
    valid[:, 4, 4] = True
    truth = np.where(valid, pred + rng.normal(size=shape), np.nan)
    return {
        "lower": pred - half,
        "upper": pred + half,
        "truth": truth,
        "prediction": pred,
        "valid": valid,
        "mask": rng.random(shape),
    }


def test_batches_of_one_tile_give_the_same_results(monkeypatch):
    c = stack_case()
    whole = all_metrics(c)
    monkeypatch.setattr(metrics, "_BATCH_ELEMENTS", 1)
    for key, value in all_metrics(c).items():
        np.testing.assert_array_equal(value, whole[key], err_msg=key)


def test_dask_inputs_give_the_same_results():
    da = pytest.importorskip("dask.array")
    c = stack_case()
    whole = all_metrics(c)
    lazy = {k: da.from_array(v, chunks=(3, 5, 4)) for k, v in c.items()}
    for key, value in all_metrics(lazy).items():
        np.testing.assert_array_equal(value, whole[key], err_msg=key)
    sets = da.from_array(np.random.default_rng(0).random((5, 3, 4, 4)) < 0.4, chunks=2)
    np.testing.assert_array_equal(activation_ratio(sets), activation_ratio(np.asarray(sets)))


def test_inputs_are_not_mutated():
    c = stack_case()
    c["lower"] = c["lower"].astype(np.float32)  # a dtype the functions convert
    copies = {k: v.copy() for k, v in c.items()}
    all_metrics(c)
    sets = np.random.default_rng(0).random((7, 3, 8, 9)) < 0.5
    sets_copy = sets.copy()
    activation_ratio(sets, valid=c["valid"])
    for key, value in c.items():
        np.testing.assert_array_equal(value, copies[key], err_msg=key)
    np.testing.assert_array_equal(sets, sets_copy)


def test_integer_inputs_do_not_wrap():
    lower = np.array([[[5, 3]]], dtype=np.uint8)
    upper = np.array([[[7, 4]]], dtype=np.uint8)
    truth = np.array([[[4, 4]]], dtype=np.uint8)
    np.testing.assert_array_equal(interval_size(lower, upper), [1.5])
    np.testing.assert_array_equal(interval_miscoverage(lower, upper, truth), [0.5])
    np.testing.assert_array_equal(mse(lower, upper), [2.5])


def test_lists_are_accepted():
    np.testing.assert_array_equal(interval_size([[0, 0]], [[1, 3]]), [2.0])


# ------------------------------------------------------------------------------------------
# refusals
# ------------------------------------------------------------------------------------------


def test_refusals_name_the_argument():
    a = np.zeros((2, 3, 3))
    b = np.ones((2, 3, 3))
    with pytest.raises(ValueError, match=r"truth must have the same shape as lower, \(2, 3, 3\)"):
        interval_miscoverage(a, b, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"upper must have the same shape as lower"):
        interval_size(a, np.ones((3, 3, 3)))
    bad = a.copy()
    bad[1, 2, 2] = 5
    with pytest.raises(ValueError, match=r"lower must not exceed upper; tile 1 has 1 pixel"):
        interval_size(bad, b)
    nan = a.copy()
    nan[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"truth must be finite on every pixel; tile 1 has 1"):
        interval_miscoverage(a, b, nan)
    with pytest.raises(ValueError, match=r"upper must be finite on valid pixels"):
        interval_size(a, b + np.inf, valid=np.ones_like(a, dtype=bool))
    holes = np.ones_like(a, dtype=bool)
    holes[1] = False
    with pytest.raises(ValueError, match=r"valid must keep at least one pixel.*tile 1"):
        interval_size(a, b, valid=holes)
    with pytest.raises(ValueError, match=r"valid must be a boolean array.*float64"):
        interval_size(a, b, valid=np.ones_like(a))
    with pytest.raises(ValueError, match=r"valid must have the shape of lower"):
        interval_size(a, b, valid=np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"lower must have shape \(n, \.\.\.\).*got shape \(3,\)"):
        interval_size(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"lower must hold at least one tile"):
        interval_size(np.zeros((0, 3)), np.ones((0, 3)))
    with pytest.raises(ValueError, match=r"lower has tiles without pixels"):
        interval_size(np.zeros((2, 0)), np.ones((2, 0)))
    with pytest.raises(ValueError, match=r"lower must be a real-valued .* got dtype complex"):
        interval_size(a.astype(complex), b)
    with pytest.raises(ValueError, match=r"n_strata must be an integer >= 1; got 0"):
        size_stratified_risk(a, b, a, n_strata=0)
    with pytest.raises(ValueError, match=r"n_strata must be an integer"):
        size_stratified_risk(a, b, a, n_strata=2.5)
    with pytest.raises(ValueError, match=r"per must be one of 'pixel', 'tile'; got 'image'"):
        spearman_size_error(a, b, a, a, per="image")
    with pytest.raises(ValueError, match=r"max_pixels must be an integer >= 2"):
        spearman_size_error(a, b, a, a, max_pixels=1)
    with pytest.raises(ValueError, match=r"prediction must have the same shape as lower"):
        spearman_size_error(a, b, a, np.zeros((2, 3)))


def test_mask_refusals():
    a = np.zeros((2, 8, 8))
    m = a.copy()
    m[0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"mask must lie in \[0, 1\]; tile 0 has 1 value"):
        mask_size(m)
    with pytest.raises(ValueError, match=r"mask must be a boolean array; got dtype float64"):
        fidelity_error(a, a)
    err = a.copy()
    err[1, :2, 0] = -1
    with pytest.raises(ValueError, match=r"error_map must be >= 0.*tile 1 has 2 negative"):
        fidelity_error(a > 0, err)
    with pytest.raises(ValueError, match=r"mask must be a boolean array"):
        mse(a, a, mask=a)
    with pytest.raises(ValueError, match=r"data_range must be a positive finite number"):
        psnr(a, a, data_range=0)
    with pytest.raises(ValueError, match=r"data_range must be a positive finite number"):
        psnr(a, a, data_range=None)
    with pytest.raises(ValueError, match=r"data_range must be a number or have one value per"):
        psnr(a, a, data_range=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"sets must be a boolean array"):
        activation_ratio(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"sets must have shape \(n, K, \.\.\.\)"):
        activation_ratio(np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"valid must have the shape of sets without its class"):
        activation_ratio(np.zeros((2, 3, 4), dtype=bool), valid=np.ones((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"distance must be one of 'l1', 'l2', 'ssim'; got 'l3'"):
        masked_distortion(a, a, a, distance="l3")
    with pytest.raises(ValueError, match=r"distance='ssim' needs data_range"):
        masked_distortion(a, a, a, distance="ssim")
    with pytest.raises(ValueError, match=r"7-pixel window.*\(8, 6\)"):
        masked_distortion(a[:, :, :6], a[:, :, :6], a[:, :, :6], distance="ssim", data_range=1)
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0.*-0.1"):
        oracle_mask_size(a, a, alpha=-0.1)
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0"):
        oracle_mask_size(a, a, alpha=np.nan)
    with pytest.raises(ValueError, match=r"distance must be one of 'l1', 'l2'; got 'ssim'"):
        oracle_mask_size(a, a, alpha=0.1, distance="ssim")
    with pytest.raises(ValueError, match=r"at least 2 points; got 1"):
        spearman_size_error(a[:1], a[:1] + 1, a[:1], a[:1], per="tile")


def test_risk_histogram_refusals():
    with pytest.raises(ValueError, match=r"risks must be a non-empty 1-D array"):
        risk_histogram([])
    with pytest.raises(ValueError, match=r"risks must be a non-empty 1-D array.*\(2, 2\)"):
        risk_histogram(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"risks must be finite; got 1 NaN or inf"):
        risk_histogram([0.1, np.nan])
    with pytest.raises(ValueError, match=r"bins must be an integer >= 1; got 0"):
        risk_histogram([0.1], bins=0)
    with pytest.raises(ValueError, match=r"limits must be two finite numbers"):
        risk_histogram([0.1], limits=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"alpha must be a finite number"):
        risk_histogram([0.1], alpha=float("nan"))


def test_public_names():
    assert sorted(metrics.__all__) == sorted(
        name
        for name in dir(metrics)
        if not name.startswith("_")
        and callable(getattr(metrics, name))
        and getattr(metrics, name).__module__ == metrics.__name__
    )
