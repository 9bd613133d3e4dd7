"""Held-out diagnostics (the Diagnostics widget's computation and plots), without Qt."""

import json
import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from napari_im2im_uq._diagnostics import plot_diagnostics
from napari_im2im_uq.calibration import (
    CalibrationResult,
    InfeasibleCalibrationError,
    calibrate_intervals,
    calibrate_mask,
    calibrate_segmentation,
    calibrate_trust_mask,
)
from napari_im2im_uq.calibration.diagnostics import (
    check_tiles,
    diagnose_tiles,
    recalibrate_like,
)
from napari_im2im_uq.calibration.diagnostics import diagnostics_report as diagnose
from napari_im2im_uq.calibration.evaluation import held_out_losses
from napari_im2im_uq.data import tem_calibration_tiles

N_SPLITS = 40
IGNORE = 7  # ignore label of the partially annotated segmentation case


@pytest.fixture(scope="module")
def halves():
    """Generated TEM tiles (128 of 32 x 32), split in half as the demo does."""
    d = tem_calibration_tiles(n_images=2, size=256, tile=32, seed=0)
    d["scores"] = d.pop("probabilities")
    n = d["truth"].shape[0]
    perm = np.random.default_rng(0).permutation(n)
    cal = {k: v[perm[: n // 2]] for k, v in d.items()}
    test = {k: v[perm[n // 2 :]] for k, v in d.items()}
    return cal, test


def _partial_labels(tiles):
    out = dict(tiles)
    labels = tiles["labels"].copy()
    labels[:, :6, :] = IGNORE  # a strip of every tile is not annotated
    out["labels"] = labels
    return out


# the calibrations the tests diagnose: one per method with a CRC rule, and variants of settings
CALIBRATIONS = {
    "intervals": lambda c: calibrate_intervals(c["prediction"], c["lower"], c["upper"],
                                               c["truth"], alpha=0.1, rule="crc"),
    "trust_mask": lambda c: calibrate_trust_mask(c["sigma"], c["prediction"], c["truth"],
                                                 alpha=0.25, data_range=(0, 1)),
    "mask": lambda c: calibrate_mask(c["mask_scores"], c["prediction"], c["truth"], alpha=0.05,
                                     rule="crc", data_range=(0, 1)),
    "segmentation": lambda c: calibrate_segmentation(c["scores"], c["labels"], alpha=0.1),
}
VARIANTS = {
    "intervals_rcps_hb": lambda c: calibrate_intervals(c["prediction"], c["lower"], c["upper"],
                                                       c["truth"], alpha=0.1, delta=0.2),
    "intervals_rcps_wsr": lambda c: calibrate_intervals(
        c["prediction"], c["lower"], c["upper"], c["truth"], alpha=0.1, delta=0.1,
        bound="wsr", seed=5),
    "intervals_valid": lambda c: calibrate_intervals(
        c["prediction"], c["lower"], c["upper"], c["truth"], alpha=0.15, rule="crc",
        valid=c["valid"]),
    "trust_blurred_loss_bound": lambda c: calibrate_trust_mask(
        c["sigma"], c["prediction"], c["truth"], alpha=0.2, fidelity="blurred", blur_sigma=1.5,
        loss_bound=1.0),
    "trust_given": lambda c: calibrate_trust_mask(
        c["sigma"], alpha=0.3, fidelity="given", loss_bound=1.0,
        fidelity_error=c["fidelity_error"]),
    "mask_conformal": lambda c: calibrate_mask(c["mask_scores"], c["prediction"], c["truth"],
                                               alpha=0.02, beta=0.9),
    "mask_paper_l2": lambda c: calibrate_mask(c["mask_scores"], c["prediction"], c["truth"],
                                              alpha=0.002, beta=0.8, distance="l2",
                                              rule="paper", eps=0.01),
    "mask_crc_l2": lambda c: calibrate_mask(c["mask_scores"], c["prediction"], c["truth"],
                                            alpha=0.02, rule="crc", distance="l2",
                                            data_range=(0, 1)),
    "mask_crc_loss_bound": lambda c: calibrate_mask(c["mask_scores"], c["prediction"],
                                                    c["truth"], alpha=0.05, rule="crc",
                                                    loss_bound=0.8, data_range=(0, 1)),
    "segmentation_rcps_weighted": lambda c: calibrate_segmentation(
        c["scores"], c["labels"], alpha=0.1, loss="weighted_miscoverage",
        class_weights=[1.0, 3.0], rule="rcps", delta=0.1, bound="wsr", seed=2),
    "segmentation_coverage_ratio": lambda c: calibrate_segmentation(
        c["scores"], c["labels"], alpha=0.2, loss="coverage_ratio", tau=0.9),
    "segmentation_ignore": lambda c: calibrate_segmentation(
        c["scores"], _partial_labels(c)["labels"], alpha=0.1, ignore_label=IGNORE),
}


def _with_extras(tiles):
    out = dict(tiles)
    out["valid"] = np.ones(tiles["truth"].shape, bool)
    out["valid"][:, :, :4] = False
    out["fidelity_error"] = np.abs(tiles["truth"] - tiles["prediction"])
    return out


def _inputs(name, tiles):
    tiles = _with_extras(tiles)
    if name == "segmentation_ignore":
        tiles = _partial_labels(tiles)
    if name != "intervals_valid":
        tiles.pop("valid")
    return tiles


@pytest.fixture(scope="module")
def results(halves):
    cal, _ = halves
    return {name: make(cal) for name, make in CALIBRATIONS.items()}


@pytest.fixture(scope="module")
def reports(halves, results):
    _, test = halves
    return {name: diagnose(res, test, n_splits=N_SPLITS, seed=1) for name, res in results.items()}


# -------------------------------------------------------------------------------- recalibration


@pytest.mark.parametrize("name", [*CALIBRATIONS, *VARIANTS])
def test_recalibrate_like_reproduces_lam(halves, name):
    cal, _ = halves
    make = {**CALIBRATIONS, **VARIANTS}[name]
    tiles = _inputs(name, cal)
    result = make(tiles)
    again = recalibrate_like(result, tiles)
    assert again.lam == result.lam
    assert again == result  # every field and setting (the curve is not compared)
    # also after a JSON round trip, as the widget reads a saved calibration
    assert recalibrate_like(CalibrationResult.from_json(result.to_json()), tiles).lam == result.lam


# -------------------------------------------------------------------------------- the report

COMMON_KEYS = {"method", "rule", "lam", "alpha", "delta", "beta", "level", "valid_guarantee",
               "guarantee", "n_tiles", "tile_shape", "held_out", "splits", "metrics", "summary"}
METRIC_KEYS = {
    "intervals": {"interval_size", "mean_interval_size", "mean_heuristic_interval_size",
                  "size_stratified_risk", "spearman_size_error", "spatial_miscoverage"},
    "trust_mask": {"mask_size", "mean_mask_size", "empty_mask_fraction", "fidelity_error",
                   "mean_fidelity_error", "psnr_inside", "psnr_whole", "psnr_peak", "psnr_floor",
                   "median_psnr_inside", "median_psnr_whole"},
    "mask": {"mask_size", "mean_mask_size", "masked_distortion", "mean_masked_distortion",
             "fraction_above_alpha", "oracle_mask_size", "mean_oracle_mask_size",
             "oracle_correlation"},
    "segmentation": {"activation_ratio", "mean_activation_ratio", "set_size", "mean_set_size",
                     "set_size_counts", "varisco_mean", "ambiguous_fraction", "n_classes"},
}


@pytest.mark.parametrize("method", list(CALIBRATIONS))
def test_report_keys_and_shapes(halves, results, reports, method):
    _, test = halves
    report, result = reports[method], results[method]
    n = test["truth"].shape[0]
    assert set(report) == COMMON_KEYS
    assert set(report["metrics"]) == METRIC_KEYS[method]
    assert report["method"] == method and report["n_tiles"] == n
    assert report["level"] == result.alpha
    held = report["held_out"]
    assert len(held["losses"]) == n
    expected = held_out_losses(result, **test)
    assert held["mean"] == pytest.approx(expected.mean(), rel=1e-12)
    splits = report["splits"]
    assert len(splits["risk"]) == len(splits["lam"]) == splits["n_splits"] == N_SPLITS
    assert splits["n_cal"] == min(result.n, n // 2) and splits["n_test"] == n - splits["n_cal"]
    assert 0.0 <= splits["violation_rate"] <= 1.0
    m = report["metrics"]
    for key, value in m.items():  # per-tile values are lists of n floats
        if isinstance(value, list) and key != "size_stratified_risk":
            assert len(value) == n, key
    if method == "intervals":
        assert m["spatial_miscoverage"].shape == (32, 32)
        assert len(m["size_stratified_risk"]["risk"]) == 4
        assert sum(m["size_stratified_risk"]["count"]) == test["truth"].size
        assert m["spearman_size_error"] > 0  # wider where the cubic up-sampling errs more
    elif method == "trust_mask":
        assert 0 < m["mean_mask_size"] < 1
        assert m["psnr_floor"] == pytest.approx(20 * math.log10(1 / 0.25))
    elif method == "mask":
        assert 0 < m["mean_mask_size"] < 1 and 0 < m["mean_oracle_mask_size"] <= 1
        assert m["masked_distortion"] == report["held_out"]["losses"]  # crc: the loss itself
        assert -1 <= m["oracle_correlation"] <= 1
    else:
        assert m["mean_activation_ratio"] >= 1.0
        assert sum(m["set_size_counts"]["count"]) == test["labels"].size
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in report["summary"])
    labels = [a for a, _ in report["summary"]]
    assert "held-out risk" in labels and "split risk" in labels
    # JSON-serialisable apart from the maps
    plain = dict(report, metrics={k: v for k, v in m.items() if not isinstance(v, np.ndarray)})
    json.dumps(plain)


def test_split_reproduces_its_recalibration(halves, results, reports):
    """Split 0 is recalibrate_like on the tiles iter_risk_over_splits draws first."""
    _, test = halves
    result, report = results["intervals"], reports["intervals"]
    n, n_cal = report["n_tiles"], report["splits"]["n_cal"]
    cal = np.sort(np.random.default_rng(1).permutation(n)[:n_cal])
    again = recalibrate_like(result, {k: v[cal] for k, v in test.items()})
    assert report["splits"]["lam"][0] == again.lam


@pytest.mark.parametrize("method", list(CALIBRATIONS))
def test_crc_split_risk_is_controlled(results, reports, method):
    """CRC: E[test risk] <= alpha over random splits of a fixed set (they are exchangeable).

    Monte-Carlo tolerance: 3 standard errors of the mean over the splits (fixed seed).
    """
    assert results[method].rule == "crc"
    risks = np.asarray(reports[method]["splits"]["risk"])
    tolerance = 3 * risks.std(ddof=1) / math.sqrt(risks.size)
    assert risks.mean() <= results[method].alpha + tolerance


def test_conformal_mask_level_and_fraction_above(halves):
    cal, test = halves
    result = VARIANTS["mask_conformal"](cal)
    report = diagnose(result, test, n_splits=20)
    assert report["level"] == pytest.approx(1 - 0.9)
    assert report["splits"]["fraction_above"] == report["splits"]["mean_risk"]
    risks = np.asarray(report["splits"]["risk"])
    assert set(np.round(risks * report["splits"]["n_test"], 9)) <= set(range(33))  # counts
    assert report["summary"][0][0] == "held-out tiles above alpha"  # the loudest figure first


def test_rcps_reports_allowed_violation_rate(halves):
    cal, test = halves
    result = VARIANTS["intervals_rcps_hb"](cal)
    report = diagnose(result, test, n_splits=10, n_cal=40)
    assert report["splits"]["allowed_violation_rate"] == 0.2
    assert report["splits"]["n_cal"] == 40 and report["splits"]["n_test"] == 24
    assert report["splits"]["violation_rate"] <= 0.2


def test_valid_pixels_and_ignore_label(halves):
    cal, test = halves
    tiles = _with_extras(test)
    result = VARIANTS["intervals_valid"](_with_extras(cal))
    report = diagnose(result, tiles, n_splits=3)
    spatial = report["metrics"]["spatial_miscoverage"]
    assert np.all(np.isnan(spatial[:, :4])) and not np.any(np.isnan(spatial[:, 4:]))
    # segmentation: valid=False pixels get the ignore label
    seg = VARIANTS["segmentation_ignore"](_partial_labels(cal))
    with_valid = dict(test, valid=tiles["valid"])
    direct = dict(test, labels=np.where(tiles["valid"], test["labels"], IGNORE))
    a = diagnose(seg, with_valid, n_splits=3)
    b = diagnose(seg, direct, n_splits=3)
    assert a["held_out"] == b["held_out"] and a["splits"]["lam"] == b["splits"]["lam"]
    plain = CALIBRATIONS["segmentation"](cal)
    with pytest.raises(ValueError, match="ignore_label"):
        diagnose(plain, with_valid, n_splits=3)


def test_progress(halves, results):
    _, test = halves
    steps = list(diagnose_tiles(results["segmentation"], test, n_splits=5))
    assert steps == [(i, 8) for i in range(1, 9)]


# -------------------------------------------------------------------------------- bad input


def test_method_mismatch_names_the_key(halves, results):
    _, test = halves
    interval_tiles = {k: test[k] for k in ("prediction", "lower", "upper", "truth")}
    with pytest.raises(ValueError, match="missing the key 'scores'"):
        diagnose(results["segmentation"], interval_tiles, n_splits=2)
    with pytest.raises(ValueError, match="missing the key 'sigma'"):
        check_tiles(results["trust_mask"], interval_tiles)
    with pytest.raises(ValueError, match="missing the key 'mask_scores'"):
        recalibrate_like(results["mask"], interval_tiles)


@pytest.mark.parametrize(("change", "match"), [
    (lambda t: t.update(truth=t["truth"][:, :16]), r"tiles\['truth'\] must have the shape"),
    (lambda t: t.update({k: t[k][:, :16, :16] for k in list(t)}), r"shape \(n, 32, 32\)"),
    (lambda t: t.update({k: t[k][:1] for k in list(t)}), "at least 2 tiles"),
    (lambda t: t.update(valid=np.ones(t["truth"].shape)), r"tiles\['valid'\] must hold booleans"),
])
def test_bad_tiles(halves, results, change, match):
    _, test = halves
    tiles = {k: test[k] for k in ("prediction", "lower", "upper", "truth")}
    change(tiles)
    with pytest.raises(ValueError, match=match):
        diagnose(results["intervals"], tiles, n_splits=2)


def test_bad_scores_and_labels(halves, results):
    _, test = halves
    with pytest.raises(ValueError, match=r"tiles\['scores'\] must have shape"):
        check_tiles(results["segmentation"], dict(test, scores=test["scores"][:, :1]))
    with pytest.raises(ValueError, match=r"tiles\['labels'\] must hold integers"):
        check_tiles(results["segmentation"], dict(test, labels=test["labels"] * 1.0))


@pytest.mark.parametrize(("kw", "match"), [
    ({"n_splits": 0}, "n_splits must be an integer >= 1; got 0"),
    ({"n_splits": 2.5}, "n_splits"),
    ({"n_cal": 64}, r"n_cal must be an integer in \[1, 63\]; got 64"),
    ({"n_cal": 0}, "n_cal"),
])
def test_bad_arguments(halves, results, kw, match):
    _, test = halves
    gen = diagnose_tiles(results["intervals"], test, **kw)
    with pytest.raises(ValueError, match=match):
        next(gen)


def test_bad_result_and_infeasible_split(halves, results):
    _, test = halves
    with pytest.raises(ValueError, match="result must be a CalibrationResult"):
        diagnose(results["intervals"].to_dict(), test)
    with pytest.raises(InfeasibleCalibrationError, match="n_cal=10"):
        diagnose(results["mask"], test, n_splits=2, n_cal=10)  # crc at alpha=0.05 needs 19


# -------------------------------------------------------------------------------- plots


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]


@pytest.mark.parametrize(("method", "n_axes"), [("intervals", 3), ("trust_mask", 3),
                                                ("mask", 2), ("segmentation", 2)])
def test_plot_diagnostics(reports, method, n_axes):
    report = reports[method]
    fig = Figure(figsize=(5, 9))
    axes = plot_diagnostics(report, fig)
    assert len(axes) == n_axes
    hist = axes[0]
    assert len(_bars(hist)) > 0
    xs = {float(line.get_xdata()[0]) for line in hist.get_lines()}
    assert report["level"] in xs and report["held_out"]["mean"] in xs
    assert hist.get_xlabel() and hist.get_ylabel() and hist.get_title()
    for ax in axes:
        assert ax.get_title()
    if method == "intervals":
        assert len(axes[1].patches) == 4
        assert axes[2].get_images()[0].get_array().shape == (32, 32)
        assert len(fig.axes) == 4  # with the colorbar
    elif method == "trust_mask":
        assert len(_bars(axes[1])) > 0
        assert axes[2].collections[0].get_offsets().shape[0] > 0
    elif method == "mask":
        assert len(_bars(axes[1])) > 0
    else:
        assert len(axes[1].patches) == 2  # set sizes 1 and 2
    fig.canvas.draw()  # the whole figure renders (Agg)
    # drawing again on the same figure replaces the plots
    assert len(plot_diagnostics(report, fig, ncols=2)) == n_axes


def test_plot_rejects_other_objects():
    with pytest.raises(ValueError, match="report must be the dict"):
        plot_diagnostics({"lam": 1.0}, Figure())
