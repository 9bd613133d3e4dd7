"""Tests of training._baselines: the baselines of a trained model and its held-back quality."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_im2im_uq.training._baselines import (
    _cubic_box,
    _regression_figures,
    _segmentation_figures,
    _smooth,
    _spline,
    _threshold_scores,
    baseline_predict,
    fit_baseline,
    held_back_quality,
)
from napari_im2im_uq.training._recipes_tem import bicubic_upsample


def _smooth_field(shape, seed):
    """A smooth random field: a few low-frequency sines."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    out = np.zeros(shape)
    for _ in range(4):
        fr, fc = rng.uniform(0.005, 0.04, 2)
        out += rng.normal() * np.sin(2 * np.pi * (fr * r + fc * c) + rng.uniform(0, 6.3))
    return out


def _nearest_up(lr, f):
    return np.kron(lr, np.ones((f, f)))


# -- cubic up-sampling ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_corner_cubic_is_bicubic_upsample(seed):
    rng = np.random.default_rng(seed)
    f = int(rng.integers(2, 5))
    lr = rng.random((int(rng.integers(3, 12)), int(rng.integers(3, 12))))
    shape = (lr.shape[0] * f, lr.shape[1] * f)
    whole = _cubic_box(_spline(lr), f, (0, 0, *shape), "corner")
    np.testing.assert_allclose(whole, bicubic_upsample(lr, f, shape), atol=1e-5)
    r0, c0 = int(rng.integers(0, shape[0] - 1)), int(rng.integers(0, shape[1] - 1))
    box = (r0, c0, int(rng.integers(r0 + 1, shape[0] + 1)), int(rng.integers(c0 + 1, shape[1] + 1)))
    np.testing.assert_allclose(_cubic_box(_spline(lr), f, box, "corner"),
                               whole[box[0]:box[2], box[1]:box[3]], atol=1e-12)


# -- regression ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_affine_fit_recovers_a_known_affine_map(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 4))
    w, b = rng.normal(size=c) * 3, float(rng.normal())
    inputs = [rng.random((c, 20, 24)).astype(np.float32) for _ in range(2)]
    targets = [np.tensordot(w, x.astype(np.float64), axes=1) + b for x in inputs]
    regions = [[[0, 0, 10, 12]], [[5, 6, 20, 24], [0, 0, 4, 4]]]
    params = fit_baseline("regression", inputs, targets, regions)
    np.testing.assert_allclose(params["weights"], w, atol=1e-8)
    assert params["offset"] == pytest.approx(b, abs=1e-8)
    for x, t in zip(inputs, targets):
        np.testing.assert_allclose(baseline_predict(params, x), t, atol=1e-4)


@pytest.mark.parametrize(("seed", "alignment"), [(s, a) for s in range(4)
                                                 for a in ("corner", "centre")])
def test_super_resolution_fit_recovers_map_and_alignment(seed, alignment):
    rng = np.random.default_rng(seed)
    f = int(rng.integers(2, 5))
    x = rng.random((2, 12, 10))
    w, b = rng.normal(size=2), float(rng.normal())
    shape = (12 * f, 10 * f)
    up = [_cubic_box(_spline(ch), f, (0, 0, *shape), alignment) for ch in x]
    target = w[0] * up[0] + w[1] * up[1] + b
    params = fit_baseline("regression", [x], [target], [[[0, 0, shape[0] // 2, shape[1]]]],
                          scale_factor=f)
    assert params["alignment"] == alignment
    np.testing.assert_allclose(params["weights"], w, atol=1e-7)
    np.testing.assert_allclose(baseline_predict(params, x), target, atol=1e-4)


@pytest.mark.parametrize("f", [2, 4])
def test_cubic_beats_nearest_on_smooth_fields(f):
    # 20 seeds, every one: cubic up-sampling of a smooth field is closer than nearest
    for seed in range(20):
        hr = _smooth_field((96, 96), seed)
        lr = hr[::f, ::f]
        params = fit_baseline("regression", [lr], [hr], [[[0, 0, 48, 96]]], scale_factor=f)
        held = np.s_[48:96, :]
        err_cubic = np.sqrt(np.mean((baseline_predict(params, lr)[held] - hr[held]) ** 2))
        err_near = np.sqrt(np.mean((_nearest_up(lr, f)[held] - hr[held]) ** 2))
        assert err_cubic < 0.5 * err_near, (seed, err_cubic, err_near)


def test_fit_reads_the_training_regions_only():
    rng = np.random.default_rng(0)
    x = rng.random((1, 16, 16))
    y = 2 * x[0] + rng.normal(0, 0.1, (16, 16))
    regions = [[[0, 0, 8, 16]]]
    a = fit_baseline("regression", [x], [y], regions)
    y2 = y.copy()
    y2[8:] = rng.normal(size=(8, 16)) * 100
    x2 = x.copy()
    x2[0, 8:] = -5
    before = (x2.copy(), y2.copy())
    assert fit_baseline("regression", [x2], [y2], regions) == a
    np.testing.assert_array_equal(x2, before[0])  # inputs never mutated
    np.testing.assert_array_equal(y2, before[1])


# -- segmentation -------------------------------------------------------------------------------------
def _slow_best_mean_f1(values, labels, cands):
    """Obvious reference: every candidate and side, mean F1 of the two classes by boolean masks."""
    best = -1.0
    for t in cands:
        for below in (1, 2):
            pred = np.where(values < t, below, 3 - below)
            f1s = []
            for k in (1, 2):
                tp = sum(1 for p, y in zip(pred, labels) if p == k and y == k)
                fp = sum(1 for p, y in zip(pred, labels) if p == k and y != k)
                fn = sum(1 for p, y in zip(pred, labels) if p != k and y == k)
                f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
            best = max(best, sum(f1s) / 2)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_threshold_scores_against_slow_reference(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=200)
    labels = np.where(values + rng.normal(0, 1.0, 200) < rng.normal(), 1, 2)
    cands = np.unique(np.quantile(values, np.linspace(0.01, 0.99, 23)))
    fast = max(_threshold_scores(values[labels == 1], values[labels == 2], cands).max(),
               _threshold_scores(values[labels == 2], values[labels == 1], cands).max())
    assert fast == pytest.approx(_slow_best_mean_f1(values, labels, cands), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_segmentation_threshold_recovers_a_threshold_rule(seed):
    rng = np.random.default_rng(seed)
    x = rng.random((1, 40, 40)).astype(np.float32)
    sm = _smooth(x, 1)
    t0 = float(np.quantile(sm, rng.uniform(0.3, 0.7)))
    dark = 1 + int(rng.integers(0, 2))  # which label is below the threshold
    labels = np.where(sm < t0, dark, 3 - dark)
    labels[rng.random(labels.shape) < 0.3] = 0  # partial annotation
    params = fit_baseline("segmentation", [x], [labels], [[[0, 0, 40, 20]]])
    assert params["kind"] == "threshold" and params["below"] == dark
    pred = baseline_predict(params, x)
    annotated = labels[:, :20] > 0
    assert np.mean(pred[:, :20][annotated] == labels[:, :20][annotated]) > 0.97


def test_segmentation_majority_for_more_classes():
    rng = np.random.default_rng(1)
    x = rng.random((1, 16, 16))
    labels = rng.choice([0, 1, 2, 3, 3], size=(16, 16))
    params = fit_baseline("segmentation", [x], [labels], [[[0, 0, 16, 16]]])
    assert params["kind"] == "majority" and params["label"] == 3
    assert np.all(baseline_predict(params, x) == 3)


# -- figures against slow references ------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_regression_figures_against_slow_reference(seed):
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(11, 20)), int(rng.integers(11, 20))) for _ in range(3)]
    truths = [rng.random(s) for s in shapes]
    preds = [t + rng.normal(0, 0.2, t.shape) for t in truths]
    lowers = [p - rng.random(p.shape) * 0.3 for p in preds]
    uppers = [p + rng.random(p.shape) * 0.3 for p in preds]
    got = _regression_figures(preds, truths, 2.0, lowers, uppers)
    sq = ab = inside = width = n = 0.0
    for p, t, lo, up in zip(preds, truths, lowers, uppers):
        for i in range(t.shape[0]):
            for j in range(t.shape[1]):
                sq += (p[i, j] - t[i, j]) ** 2
                ab += abs(p[i, j] - t[i, j])
                inside += lo[i, j] <= t[i, j] <= up[i, j]
                width += up[i, j] - lo[i, j]
                n += 1
    assert got["rmse"] == pytest.approx(math.sqrt(sq / n), rel=1e-10)
    assert got["mae"] == pytest.approx(ab / n, rel=1e-10)
    assert got["psnr_db"] == pytest.approx(10 * math.log10(4.0 / (sq / n)), rel=1e-10)
    assert got["raw_interval_coverage"] == pytest.approx(inside / n, rel=1e-12)
    assert got["mean_interval_width"] == pytest.approx(width / n, rel=1e-10)
    assert -1 <= got["ssim"] <= 1


@pytest.mark.parametrize("seed", range(6))
def test_segmentation_figures_against_slow_reference(seed):
    rng = np.random.default_rng(seed)
    truths = [rng.integers(0, 4, (9, 7)) for _ in range(2)]
    preds = [rng.integers(1, 4, (9, 7)) for _ in range(2)]
    got = _segmentation_figures(preds, truths, 3)
    pairs = [(int(p), int(t)) for P, T in zip(preds, truths)
             for p, t in zip(P.ravel(), T.ravel()) if t > 0]
    assert got["pixel_accuracy"] == pytest.approx(sum(p == t for p, t in pairs) / len(pairs))
    f1s = []
    for k in (1, 2, 3):
        tp = sum(p == k and t == k for p, t in pairs)
        fp = sum(p == k and t != k for p, t in pairs)
        fn = sum(p != k and t == k for p, t in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn))
        assert got[f"f1_class_{k}"] == pytest.approx(f1s[-1])
    assert got["f1_mean"] == pytest.approx(sum(f1s) / 3)


# -- held-back quality ------------------------------------------------------------------------------
class _PixelModel:
    """A pixel-wise stand-in model: prediction = gain * x, interval +- 0.1 (scale factor 1)."""

    scale_factor = 1
    halo = 3

    def __init__(self, gain):
        self.gain = gain

    def __call__(self, x, batch_size=None):
        p = (self.gain * x[:1]).astype(np.float32)
        return {"prediction": p, "lower": p - 0.1, "upper": p + 0.1}


def _split(shape, train, validation, held_back):
    return {"images": [{"shape": list(shape), "train": train, "validation": validation,
                        "held_back": held_back}]}


def test_held_back_quality_scores_the_held_back_boxes_only():
    rng = np.random.default_rng(3)
    x = rng.random((1, 32, 48)).astype(np.float32)
    y = 1.5 * x[0] + rng.normal(0, 0.05, (32, 48))
    train, val, held = [[0, 0, 32, 24]], [[0, 24, 16, 48]], [[16, 24, 32, 36], [16, 36, 32, 48]]
    split = _split(y.shape, train, val, held)
    params = fit_baseline("regression", [x], [y], [train])
    model = _PixelModel(1.4)
    q = held_back_quality(model, [x], [y], split, params, task="regression")
    assert q["n_regions"] == 2 and q["n_pixels"] == 2 * 16 * 12
    sel = np.zeros(y.shape, bool)
    for r0, c0, r1, c1 in held:
        sel[r0:r1, c0:c1] = True
    err = 1.4 * x[0][sel] - y[sel]
    assert q["model"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-5)
    assert q["model"]["raw_interval_coverage"] == pytest.approx(np.mean(np.abs(err) <= 0.1),
                                                                abs=1e-9)
    peak = y[:, :24].max() - y[:, :24].min()
    assert q["model"]["psnr_db"] == pytest.approx(
        10 * math.log10(peak**2 / np.mean(err**2)), rel=1e-5)
    # the validation region and the untouched train pixels do not change the figures
    y2 = y.copy()
    y2[0:16, 24:48] = 1e6
    assert held_back_quality(model, [x], [y2], split, params, task="regression") == q
    assert q["baseline"]["rmse"] < q["model"]["rmse"]  # the fitted gain 1.5 beats 1.4


def test_held_back_quality_of_a_real_model_matches_whole_image_prediction():
    torch = pytest.importorskip("torch")
    from napari_im2im_uq.models import Im2ImModel, build_network

    torch.manual_seed(0)
    net = build_network("quantile", depth=2, base_channels=4)
    model = Im2ImModel(net, {"heuristic": "quantile", "name": "m"})
    rng = np.random.default_rng(0)
    x = rng.random((1, 64, 64)).astype(np.float32)
    y = x[0] + rng.normal(0, 0.1, (64, 64))
    held = [[32, 0, 64, 32], [32, 32, 64, 64]]
    split = _split(y.shape, [[0, 0, 32, 64]], [], held)
    params = fit_baseline("regression", [x], [y], [[[0, 0, 32, 64]]])
    q = held_back_quality(model, [x], [y], split, params, task="regression")
    whole = model(x)["prediction"][0]
    err = whole[32:] - y[32:]
    # the halo crop sees the same context as the whole image
    assert q["model"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-4)


class _SegModel:
    scale_factor = 1
    halo = 0

    def __call__(self, x, batch_size=None):
        p = (x[0] > 0.5).astype(np.float32)
        return {"probabilities": np.stack([1 - p, p])}


def test_held_back_quality_segmentation():
    rng = np.random.default_rng(2)
    x = rng.random((1, 32, 32)).astype(np.float32)
    labels = np.where(x[0] > 0.5, 2, 1)
    labels[rng.random(labels.shape) < 0.5] = 0
    split = _split(labels.shape, [[0, 0, 16, 32]], [], [[16, 0, 32, 32]])
    params = fit_baseline("segmentation", [x], [labels], [[[0, 0, 16, 32]]])
    q = held_back_quality(_SegModel(), [x], [labels], split, params, task="segmentation")
    assert q["model"]["pixel_accuracy"] == 1.0 and q["model"]["f1_mean"] == 1.0
    assert q["n_pixels"] == int(np.count_nonzero(labels[16:]))
    assert 0.5 < q["baseline"]["pixel_accuracy"] < 1.0  # smoothing blurs a pixel-wise rule


class _BaseModel:
    scale_factor = 2
    halo = 1

    def __call__(self, x, batch_size=None):
        up = np.kron(x[:1], np.ones((2, 2))).astype(np.float32)
        return {"prediction": up, "lower": up - 0.2, "upper": up + 0.2}


class _MaskModel:
    scale_factor = 2
    halo = 0

    def __call__(self, x, prediction, batch_size=None):
        return {"mask": np.clip(1 - np.abs(prediction - 0.5), 0, 1)}


def test_mask_baseline_is_the_best_constant():
    rng = np.random.default_rng(4)
    x = rng.random((1, 16, 16)).astype(np.float32)
    y = rng.random((32, 32))
    train = [[0, 0, 16, 32]]
    with pytest.raises(ValueError, match="base_model"):
        fit_baseline("mask", [x], [y], [train], scale_factor=2)
    params = fit_baseline("mask", [x], [y], [train], scale_factor=2, base_model=_BaseModel())
    err = np.abs(np.kron(x[0], np.ones((2, 2)))[:16] - y[:16])

    def loss(m):
        return np.mean((m - 1) ** 2) + 2.0 * np.mean(m * err)

    c = params["value"]
    assert 0 <= c <= 1
    assert all(loss(c) <= loss(np.clip(c + d, 0, 1)) + 1e-12 for d in (-0.01, 0.01, -0.2, 0.2))
    split = _split(y.shape, train, [], [[16, 0, 32, 32]])
    q = held_back_quality(_MaskModel(), [x], [y], split, params, task="mask",
                          base_model=_BaseModel())
    assert set(q["model"]) == {"spearman_error", "mask_loss", "mean_mask"}
    assert q["baseline"]["mean_mask"] == pytest.approx(c)
    assert "spearman_error" in q["baseline"]  # the base model's interval width


def test_errors_name_the_argument():
    x = np.zeros((1, 8, 8))
    with pytest.raises(ValueError, match="task must be one of"):
        fit_baseline("denoise", [x], [x[0]], [[[0, 0, 4, 4]]])
    with pytest.raises(ValueError, match=r"targets\[0\] must have shape"):
        fit_baseline("regression", [x], [np.zeros((9, 8))], [[[0, 0, 4, 4]]])
    with pytest.raises(ValueError, match="regions"):
        fit_baseline("regression", [x], [x[0]], [[[0, 0, 9, 4]]])
    with pytest.raises(ValueError, match="scale_factor"):
        fit_baseline("regression", [x], [x[0]], [[[0, 0, 4, 4]]], scale_factor=0)
    params = fit_baseline("regression", [x], [x[0]], [[[0, 0, 4, 4]]])
    with pytest.raises(ValueError, match="split"):
        held_back_quality(_PixelModel(1.0), [x], [x[0]], {"images": []}, params,
                          task="regression")
