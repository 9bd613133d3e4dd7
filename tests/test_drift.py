"""The drift alarm (issue 16): exact pieces, its false-alarm rate, its power, the map, the faces.

Statistical claims are checked over many random splits with fixed seeds; the tolerance is three
Monte-Carlo standard errors of a rate, ``3 sqrt(level (1 - level) / splits)``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_im2im_uq import api
from napari_im2im_uq.calibration import drift, methods
from napari_im2im_uq.data import shared_data_root, synthetic_em_tissue, tem_calibration_tiles

LEVEL = 0.05


def mc_tolerance(level, splits):
    return 3.0 * np.sqrt(level * (1.0 - level) / splits)


# ------------------------------------------------------------------------- exact pieces
def test_rank_test_auc_and_p_value_match_a_slow_reference():
    from scipy import stats

    rng = np.random.default_rng(1)
    for _ in range(20):
        m, n = rng.integers(3, 30, size=2)
        x = rng.integers(0, 6, size=(m, 3)).astype(float)  # ties on purpose
        y = rng.integers(0, 6, size=(n, 3)).astype(float) + rng.integers(0, 2)
        p, auc, smd = drift.rank_test(x, y)
        for j in range(3):
            pairs = x[:, j][:, None] - y[:, j][None, :]
            ref_auc = (np.sum(pairs > 0) + 0.5 * np.sum(pairs == 0)) / (m * n)
            assert auc[j] == pytest.approx(ref_auc)
            if np.ptp(np.r_[x[:, j], y[:, j]]) > 0:
                ref_p = stats.mannwhitneyu(x[:, j], y[:, j], alternative="two-sided").pvalue
                assert p[j] == pytest.approx(ref_p)
            s = np.sqrt((x[:, j].var() + y[:, j].var()) / 2)
            assert smd[j] == pytest.approx((x[:, j].mean() - y[:, j].mean()) / s if s else 0.0)


def test_holm_matches_the_step_down_definition():
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.random(rng.integers(1, 12)) ** 3
        adj = drift.holm(p)
        order = np.argsort(p)
        m = len(p)
        for level in (0.01, 0.05, 0.2):
            # reference: reject p_(1..k) while p_(i) <= level / (m - i + 1)
            rejected = np.zeros(m, bool)
            for i, j in enumerate(order):
                if p[j] <= level / (m - i):
                    rejected[j] = True
                else:
                    break
            np.testing.assert_array_equal(adj <= level, rejected)
    assert np.isnan(drift.holm([0.1, np.nan])[1])


def test_weighted_holm_matches_the_sequentially_rejective_definition():
    rng = np.random.default_rng(3)
    for _ in range(100):
        m = int(rng.integers(1, 10))
        p, w = rng.random(m) ** 3, rng.random(m) + 0.1
        adj = drift.holm(p, weights=w)
        for level in (0.01, 0.05, 0.2):
            # reference: repeatedly reject any i with p_i <= level w_i / (weights left)
            left = set(range(m))
            while True:
                total = sum(w[i] for i in left)
                hit = [i for i in left if p[i] <= level * w[i] / total]
                if not hit:
                    break
                left -= set(hit)
            rejected = np.array([i not in left for i in range(m)])
            np.testing.assert_array_equal(adj <= level + 1e-12, rejected)


def test_summary_is_a_few_numbers_per_tile_and_json_ready():
    d = tem_calibration_tiles(size=256, tile=32)
    feats = methods.get("intervals").drift_features(d)
    s = drift.summarize(feats, tile_shape=(32, 32))
    assert s["n"] == len(d["prediction"]) == 64
    assert all(len(v) == 64 for v in s["features"].values())
    assert "interval width mean" in s["features"] and "prediction gradient" in s["features"]
    assert len(s["features"]) <= 10  # a few numbers per tile, never pixels
    json.dumps(s, allow_nan=False)
    small = drift.summarize(feats, tile_shape=(32, 32), max_tiles=10)
    assert small["n"] == 10 and small["n_tiles"] == 64


def test_every_method_contributes_its_score():
    d = tem_calibration_tiles(size=128, tile=32)
    tiles = {"prediction": d["prediction"], "lower": d["lower"], "upper": d["upper"],
             "sigma": d["sigma"], "mask_scores": d["mask_scores"], "scores": d["probabilities"]}
    expect = {"intervals": "interval width mean", "trust_mask": "sigma mean",
              "mask": "mask mean", "segmentation": "max probability mean"}
    for name in methods.names():
        entry = methods.get(name)
        feats = entry.drift_features({k: tiles[k] for k in entry.inputs(_names(entry))})
        assert expect[name] in feats
        assert all(np.shape(v) == (16,) and np.isfinite(v).all() for v in feats.values())


def _names(entry):
    """The input names a method cuts, from a dict holding every output name."""
    arrays = {k: np.zeros((2, 2)) for k in ("prediction", "lower", "upper", "std", "mask",
                                             "probabilities")}
    arrays["probabilities"] = np.zeros((2, 2, 2))
    return arrays


def test_drift_test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="level must be in"):
        drift.drift_test({"a": np.zeros(5)}, {"a": np.zeros(5)}, np.zeros(5), level=1.5)
    with pytest.raises(ValueError, match="missing"):
        drift.drift_test({"a": np.zeros(5)}, {"b": np.zeros(5)}, np.zeros(5))
    with pytest.raises(ValueError, match="one entry per new tile"):
        drift.drift_test({"a": np.zeros(5)}, {"a": np.zeros(5)}, np.zeros(3))


# ------------------------------------------------------------------------- validity
def _pool_features(pool):
    tiles = {"prediction": pool["prediction"], "lower": pool["lower"], "upper": pool["upper"],
             "sigma": pool["sigma"], "mask_scores": pool["mask_scores"],
             "scores": pool["probabilities"]}
    out = {}
    for name in methods.names():
        entry = methods.get(name)
        out[name] = entry.drift_features({k: tiles[k] for k in entry.inputs(_names(entry))})
    return out


def alarm_rate(features, *, splits, n_cal, n_new, n_regions, seed, level=LEVEL):
    """Fraction of random exchangeable splits where the alarm sounds (anywhere)."""
    n = len(next(iter(features.values())))
    rng = np.random.default_rng(seed)
    region = np.repeat(np.arange(n_regions), -(-n_new // n_regions))[:n_new]
    alarms = 0
    for _ in range(splits):
        perm = rng.permutation(n)
        cal, new = perm[:n_cal], perm[n_cal:n_cal + n_new]
        out = drift.drift_test({k: v[cal] for k, v in features.items()},
                               {k: v[new] for k, v in features.items()}, region, level=level)
        alarms += out["drifted"]
    return alarms / splits


@pytest.mark.parametrize("method", ["intervals", "trust_mask", "mask", "segmentation"])
def test_false_alarm_rate_is_at_most_level_on_exchangeable_synthetic_tiles(method):
    pool = tem_calibration_tiles(n_images=2, size=512, tile=32, seed=3)  # 512 tiles
    feats = _pool_features(pool)[method]
    splits = 300
    for n_cal, n_new, n_regions in [(30, 60, 4), (100, 200, 8)]:
        rate = alarm_rate(feats, splits=splits, n_cal=n_cal, n_new=n_new, n_regions=n_regions,
                          seed=n_cal)
        assert rate <= LEVEL + mc_tolerance(LEVEL, splits), (method, n_cal, rate)


@pytest.mark.realdata
def test_false_alarm_rate_is_at_most_level_on_real_vnc_tiles():
    if shared_data_root() is None:
        pytest.skip("../shared/data not found")
    from napari_im2im_uq.data import load_em_drosophila

    raw = load_em_drosophila(stack=1, slices=range(0, 20, 2))["raw"][:, :512, :512]
    pool = tem_calibration_tiles(raw, tile=64)  # 10 slices x 64 tiles
    splits = 300
    for method in ("intervals", "trust_mask"):
        feats = _pool_features(pool)[method]
        rate = alarm_rate(feats, splits=splits, n_cal=64, n_new=128, n_regions=4, seed=7)
        assert rate <= LEVEL + mc_tolerance(LEVEL, splits), (method, rate)


# ------------------------------------------------------------------------- power
def _shifted_pool(kind, *, seed, n_images=2):
    """Synthetic TEM tiles whose ground truth lost contrast, or gained acquisition noise."""
    truths = []
    for i in range(n_images):
        img = synthetic_em_tissue((512, 512), seed=seed + i)["image"].astype(np.float64)
        if kind == "contrast":
            img = 0.5 + 0.7 * (img - 0.5)
        elif kind == "noise":
            img = np.clip(img + 0.08 * np.random.default_rng(seed + i).standard_normal(img.shape),
                          0, 1)
        truths.append(img)
    return tem_calibration_tiles(np.stack(truths), tile=32)


def power(ref_feats, new_feats, *, draws, n_cal, n_new, seed, level=LEVEL):
    n, m = len(next(iter(ref_feats.values()))), len(next(iter(new_feats.values())))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        cal = rng.choice(n, n_cal, replace=False)
        new = rng.choice(m, n_new, replace=False)
        out = drift.drift_test({k: v[cal] for k, v in ref_feats.items()},
                               {k: v[new] for k, v in new_feats.items()},
                               np.zeros(n_new, int), level=level)
        hits += out["drifted"]
    return hits / draws


@pytest.mark.parametrize("kind", ["contrast", "noise"])
def test_alarm_sounds_on_a_synthetic_shift_of_contrast_or_noise(kind):
    ref = _pool_features(tem_calibration_tiles(n_images=2, size=512, tile=32, seed=3))
    new = _pool_features(_shifted_pool(kind, seed=50))
    for method in ("intervals", "trust_mask"):
        p = power(ref[method], new[method], draws=100, n_cal=60, n_new=128, seed=1)
        assert p >= 0.9, (kind, method, p)


@pytest.mark.realdata
def test_alarm_sounds_on_isbi_to_vnc():
    if shared_data_root() is None:
        pytest.skip("../shared/data not found")
    from napari_im2im_uq.data import load_em_drosophila, load_isbi2012

    isbi = load_isbi2012(slices=range(0, 15, 3))["raw"]
    vnc = load_em_drosophila(stack=1, slices=range(0, 20, 4))["raw"][:, :512, :512]
    ref = _pool_features(tem_calibration_tiles(isbi, tile=64))["intervals"]
    new = _pool_features(tem_calibration_tiles(vnc, tile=64))["intervals"]
    assert power(ref, new, draws=100, n_cal=64, n_new=128, seed=2) >= 0.9


# ------------------------------------------------------------------------- the api, end to end
def _volume(seed=0, planes=4, size=256, shift_from=None):
    """Interval outputs of a (planes, rows, cols) volume; planes >= shift_from lose contrast."""
    truth = np.stack([synthetic_em_tissue((size, size), seed=seed + z)["image"]
                      for z in range(planes)]).astype(np.float32)
    if shift_from is not None:
        truth[shift_from:] = 0.5 + 0.6 * (truth[shift_from:] - 0.5)
    smooth = ndimage.gaussian_filter(truth, (0, 1.5, 1.5))
    grad = np.hypot(*np.gradient(smooth, axis=(1, 2)))
    half = (1.5 * grad + 0.02).astype(np.float32)
    return {"prediction": smooth, "lower": smooth - half, "upper": smooth + half}, truth


def test_record_keeps_a_drift_summary_and_the_map_marks_the_shifted_half():
    outputs, truth = _volume(seed=0, planes=2)
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(32, 32))
    summary = cal.record["drift_summary"]
    assert summary["n"] == cal.result.n == 128 and summary["tile_shape"] == [32, 32]
    json.dumps(cal.record, allow_nan=False)
    # the same population, other planes: no alarm
    same, _ = _volume(seed=10, planes=4)
    verdict, _ = api.check_drift(cal.record, same)
    assert not verdict["drifted"] and verdict["message"].startswith("No drift")
    # half the volume loses contrast: the alarm sounds and the map marks that half only
    half, _ = _volume(seed=10, planes=4, shift_from=2)
    verdict, (data, kwargs, kind) = api.check_drift(cal.record, half)
    assert verdict["drifted"] and verdict["message"].startswith("DRIFT")
    assert verdict["p_value"] <= LEVEL and verdict["auc"] != 0.5
    assert [r["drifted"] for r in verdict["regions"]] == [False, False, True, True]
    assert kind == "image" and data.shape == (4, 8, 8)
    assert data[:2].max() == 0 and data[2:].min() == 1
    assert kwargs["scale"] == (1.0, 32.0, 32.0) and kwargs["translate"] == (0.0, 15.5, 15.5)
    assert kwargs["metadata"]["im2im_uq"]["verdict"]["drifted"]


def test_blocks_of_one_image_and_the_job_generator():
    outputs, truth = _volume(seed=0, planes=1, size=512)
    cal = api.calibrate({k: v[0] for k, v in outputs.items()}, truth[0], alpha=0.2, rule="crc",
                        tile_shape=(32, 32))
    new, _ = _volume(seed=5, planes=1, size=512)
    new = {k: v[0].copy() for k, v in new.items()}
    for k in new:  # the right half loses contrast
        new[k][:, 256:] = 0.5 + 0.6 * (new[k][:, 256:] - 0.5)
    job = api.check_drift_job(cal.record, new, regions=8)  # 8 x 8 tiles: 4 blocks
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration as stop:
        verdict, (data, _, _) = stop.value
    assert steps[-1] == (1, 1)
    assert data.shape == (16, 16)
    assert data[:, :8].max() == 0 and data[:, 8:].min() == 1


def test_check_drift_errors_name_the_argument():
    outputs, truth = _volume(seed=0, planes=1)
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(32, 32))
    with pytest.raises(ValueError, match="tile_shape must be the record's"):
        api.check_drift(cal.record, outputs, tile_shape=(16, 16))
    with pytest.raises(ValueError, match="outputs must hold"):
        api.check_drift(cal.record, {"prediction": outputs["prediction"]})
    with pytest.raises(ValueError, match="regions must be"):
        api.check_drift(cal.record, outputs, regions="rows")
    from napari_im2im_uq.workflows.records import seal

    old = seal({k: v for k, v in cal.record.items() if k not in ("drift_summary", "checksum")})
    with pytest.raises(ValueError, match="drift_summary"):
        api.check_drift(old, outputs)


def test_apply_record_shows_the_verdict_next_to_the_guarantee():
    outputs, truth = _volume(seed=0, planes=2)
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(32, 32))
    half, _ = _volume(seed=10, planes=4, shift_from=2)
    (width, kwargs, _), = api.apply_record(cal.record, half)
    info = kwargs["metadata"]["im2im_uq"]
    assert info["record"] is cal.record and info["drift"]["drifted"]
    assert "DRIFT" in info["drift"]["message"]
    shown = api.apply_record(cal.record, half, drift_layer=True)
    assert len(shown) == 2 and shown[1][1]["metadata"]["im2im_uq"]["role"] == "drift"
    (_, kwargs, _), = api.apply_record(cal.record, half, check_drift=False)
    assert "drift" not in kwargs["metadata"]["im2im_uq"]


def test_input_statistics_join_when_the_image_is_given():
    outputs, truth = _volume(seed=0, planes=2)
    low = truth[:, ::4, ::4]
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(32, 32), image=low)
    assert "input mean" in cal.record["drift_summary"]["features"]
    verdict, _ = api.check_drift(cal.record, outputs, image=low)
    assert "input mean" in verdict["whole"] and not verdict["drifted"]
    verdict, _ = api.check_drift(cal.record, outputs)  # without the image: outputs only
    assert "input mean" not in verdict["whole"]
    with pytest.raises(ValueError, match="image must be the model's input"):
        api.check_drift(cal.record, outputs, image=truth[:, ::3, ::3])


def test_cli_drift_reads_a_prediction_store(tmp_path, capsys):
    import zarr

    from napari_im2im_uq.cli import main
    from napari_im2im_uq.workflows.records import save_record

    outputs, truth = _volume(seed=0, planes=2)
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(32, 32))
    record = save_record(cal.record, tmp_path / "record.json")
    half, _ = _volume(seed=10, planes=4, shift_from=2)
    store = tmp_path / "pred.zarr"
    root = zarr.open_group(store=str(store), mode="w", zarr_format=3)
    for name, arr in half.items():
        root.create_group(name).create_array("0", data=arr)
    root.attrs["napari_im2im_uq"] = {"outputs": {k: {"path": f"{k}/0"} for k in half},
                                     "complete": True}
    out_json = tmp_path / "verdict.json"
    assert main(["drift", record, str(store), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("DRIFT") and "plane 3" in printed
    saved = json.loads(out_json.read_text())
    assert saved["drifted"] and np.array(saved["tile_map"]).shape == (4, 8, 8)
    assert main(["drift", record, str(store), "--fail-on-drift"]) == 3
    assert main(["drift", record, str(tmp_path / "missing.zarr")]) == 2


# ------------------------------------------------------------------------- the Drift section
def test_diagnostics_drift_section_shows_the_verdict_and_the_map(request):
    pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    from _display import HAS_DISPLAY, REASON

    if not HAS_DISPLAY:
        pytest.skip(REASON)
    from napari_im2im_uq._widgets import DiagnosticsWidget

    viewer = request.getfixturevalue("make_napari_viewer")()
    qtbot = request.getfixturevalue("qtbot")
    outputs, truth = _volume(seed=0, planes=2)
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(32, 32))
    api.show(viewer, cal.layers)
    half, _ = _volume(seed=10, planes=4, shift_from=2)
    for k, v in half.items():
        viewer.add_image(v, name=f"{k} (new)", metadata={
            "im2im_uq": {"role": "output", "output": k, "run": "new"}})
    widget = DiagnosticsWidget(viewer)
    widget.reset_choices()
    widget.record.value = viewer.layers["interval width (model)"]
    widget.prediction.value = viewer.layers["prediction (new)"]
    assert widget.drift_button.enabled, widget.drift_button.tooltip
    assert not widget.run_button.enabled  # diagnostics need held-out truth; the drift check not
    widget.start_drift()
    qtbot.waitUntil(lambda: "drift (model)" in viewer.layers and not widget.drift_runner.running,
                    timeout=60_000)
    assert widget.drift_message.value.startswith("DRIFT")
    layer = viewer.layers["drift (model)"]
    assert layer.data[2:].min() == 1 and layer.data[:2].max() == 0
    assert layer.metadata["im2im_uq"]["role"] == "drift"


def _all_outputs(seed, planes, shift_from=None):
    out, truth = _volume(seed=seed, planes=planes, shift_from=shift_from)
    half = (out["upper"] - out["lower"]) / 2
    p = 1.0 / (1.0 + np.exp(-10.0 * (0.45 - out["prediction"])))
    return {"prediction": out["prediction"], "lower": out["lower"], "upper": out["upper"],
            "std": half, "mask": np.clip(1.0 - half / 0.3, 0.0, 1.0),
            "probabilities": np.stack([1.0 - p, p]).astype(np.float32)}, truth


@pytest.mark.parametrize(("method", "kwargs"), [
    ("trust_mask", {"alpha": 0.5, "data_range": (0.0, 1.0)}),
    ("mask", {"alpha": 0.3, "rule": "crc", "data_range": (0.0, 1.0)}),
    ("segmentation", {"alpha": 0.3, "rule": "crc"}),
])
def test_every_method_records_a_summary_and_raises_the_alarm(method, kwargs):
    outputs, truth = _all_outputs(seed=0, planes=2)
    if method == "segmentation":
        truth = (truth < 0.45).astype(np.uint8) + 1
    need = methods.get(method).needs + (("std",) if method == "trust_mask" else ())
    cal = api.calibrate({k: outputs[k] for k in need}, truth, method=method,
                        tile_shape=(32, 32), **kwargs)
    assert set(cal.record["drift_summary"]["features"]) == set(
        methods.get(method).drift_features(
            {k: v[:1] for k, v in _tiles_of(method, outputs).items()}))
    same, _ = _all_outputs(seed=10, planes=4)
    verdict, _ = api.check_drift(cal.record, {k: same[k] for k in need})
    assert not verdict["drifted"], verdict["message"]
    half, _ = _all_outputs(seed=10, planes=4, shift_from=2)
    verdict, (data, _, _) = api.check_drift(cal.record, {k: half[k] for k in need})
    assert verdict["drifted"] and data[2:].min() == 1 and data[:2].max() == 0, verdict["message"]


def _tiles_of(method, outputs):
    entry = methods.get(method)
    arrays = entry.inputs(outputs)
    return {k: (v[:, 0, :32, :32][None] if entry.class_axis else v[:1, :32, :32])
            for k, v in arrays.items()}


@pytest.mark.realdata
def test_zoo_model_calibrated_on_isbi_raises_the_alarm_on_vnc():
    if shared_data_root() is None:
        pytest.skip("../shared/data not found")
    from napari_im2im_uq.data import load_em_drosophila, load_isbi2012

    def outputs_of(hr):
        low = _binned(hr)  # the model's own degradation (4 x 4 binning, shot noise)
        shown = api.predict("tem-sr4x-quantile", low, output="memory")
        return {kw["metadata"]["im2im_uq"]["output"]: np.asarray(d) for d, kw, _ in shown}

    isbi = load_isbi2012(slices=range(0, 8))["raw"][:, :256, :256]
    cal = api.calibrate(outputs_of(isbi), isbi, alpha=0.1, delta=0.1, tile_shape=(64, 64))
    other = load_isbi2012(slices=range(8, 12))["raw"][:, :256, :256]
    vnc = load_em_drosophila(stack=1, slices=range(14, 18))["raw"][:, :256, :256]
    verdict, _ = api.check_drift(cal.record, outputs_of(vnc))
    assert verdict["drifted"], verdict["message"]
    assert verdict["p_value"] <= LEVEL
    # the whole volume is tested with planes as units (C(12, 4) = 495 sets of 4 planes)
    assert verdict["whole_test"] == "planes" and verdict["whole_drifted"]
    assert "permutation test over planes" in verdict["message"]
    whole_p = [v["p_adjusted"] for v in verdict["whole"].values() if v["p_adjusted"] is not None]
    assert len(whole_p) == 1 and whole_p[0] <= LEVEL
    # other ISBI slices: the verdict runs (ISBI slices drift along the stack: slices 0-14 ->
    # 15-29 sound the test over planes in every draw of bench_drift, so no null case here)
    same, _ = api.check_drift(cal.record, outputs_of(other))
    assert same["whole_test"] == "planes" and same["n_new_planes"] == 4


def test_apply_record_still_applies_when_the_check_cannot_run():
    outputs, truth = _volume(seed=0, planes=1, size=256)
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(64, 64))
    small = {k: v[:, :32, :32] for k, v in outputs.items()}  # smaller than one tile
    shown = api.apply_record(cal.record, small, drift_layer=True)
    assert len(shown) == 1
    info = shown[0][1]["metadata"]["im2im_uq"]["drift"]
    assert info["drifted"] is None and info["message"].startswith("drift check not run")


def test_regions_given_per_tile_span_planes():
    outputs, truth = _volume(seed=0, planes=2)
    cal = api.calibrate(outputs, truth, alpha=0.2, rule="crc", tile_shape=(32, 32))
    new, _ = _volume(seed=10, planes=4)
    new = {k: v.copy() for k, v in new.items()}
    for k in new:  # the right half of every plane loses contrast
        new[k][:, :, 128:] = 0.5 + 0.6 * (new[k][:, :, 128:] - 0.5)
    halves = np.repeat([[0, 1]], 8, axis=0).repeat(4, axis=1)  # (8 tile rows, 8 tile columns)
    verdict, (data, _, _) = api.check_drift(cal.record, new, regions=halves)
    assert [r["drifted"] for r in verdict["regions"]] == [False, True]
    assert data[:, :, :4].max() == 0 and data[:, :, 4:].min() == 1
    with pytest.raises(ValueError, match="regions given as an array"):
        api.check_drift(cal.record, new, regions=np.zeros((3, 3), int))


def _binned(hr, seed=0):
    """The zoo SR model's input for high-resolution planes: its recorded degradation, seeded."""
    from napari_im2im_uq.training._recipes_tem import TEM_DEGRADATION, degrade

    return np.stack([degrade(p, TEM_DEGRADATION, [seed, i]) for i, p in enumerate(hr)])
