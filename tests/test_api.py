"""The console/script API without Qt: tiles, plans, calibration, records, refusals."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_im2im_uq import Im2ImUQWarning, api
from napari_im2im_uq.workflows import predict as predict_workflow


def _brute_tiles(shape, tile, boxes):
    """Reference: scan every box's grid in order, keep tiles not overlapping kept pixels."""
    planes = shape[0] if len(shape) == 3 else 1
    used = np.zeros((planes, *shape[-2:]), bool)
    out = []
    th, tw = tile
    for plane, r0, r1, c0, c1 in boxes:
        r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, shape[-2]), min(c1, shape[-1])
        for z in (range(planes) if plane is None else [plane]):
            for r in range(r0, r1 - th + 1, th):
                for c in range(c0, c1 - tw + 1, tw):
                    if not used[z, r:r + th, c:c + tw].any():
                        used[z, r:r + th, c:c + tw] = True
                        out.append((z, r, c))
    return out


def test_calibration_tiles_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(v) for v in rng.integers(8, 60, size=rng.choice([2, 3])))
        if len(shape) == 3:
            shape = (int(rng.integers(1, 4)), *shape[1:])
        tile = tuple(int(v) for v in rng.integers(1, 12, size=2))
        rects, boxes = [], []
        for _ in range(rng.integers(1, 4)):
            r = np.sort(rng.uniform(-5, shape[-2] + 5, 2))
            c = np.sort(rng.uniform(-5, shape[-1] + 5, 2))
            verts = np.array([[r[0], c[0]], [r[0], c[1]], [r[1], c[1]], [r[1], c[0]]])
            plane = None
            if len(shape) == 3 and rng.random() < 0.5:
                plane = int(rng.integers(0, shape[0]))
                verts = np.concatenate([np.full((4, 1), plane), verts], axis=1)
            rects.append(verts)
            # reference: pixels whose centre lies inside
            boxes.append((plane, int(np.ceil(r[0])), int(np.floor(r[1])) + 1,
                          int(np.ceil(c[0])), int(np.floor(c[1])) + 1))
        got = api.calibration_tiles(shape, tile, regions=rects).tolist()
        assert got == [list(t) for t in _brute_tiles(shape, tile, boxes)]


def test_plan_tiles_is_random_non_overlapping_and_round_trips():
    image = np.zeros((2, 100, 130), np.float32)
    rects, kwargs, kind = api.plan_tiles(image, tile_shape=(20, 25), n_tiles=15, seed=3)
    assert kind == "shapes" and len(rects) == 15
    tiles = api.calibration_tiles(image.shape, (20, 25), regions=rects)
    assert len(tiles) == 15  # each rectangle is exactly one tile, none overlap
    assert len({tuple(t) for t in tiles}) == 15
    other, _, _ = api.plan_tiles(image, tile_shape=(20, 25), n_tiles=15, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(rects, other))
    with pytest.raises(ValueError, match="n_tiles must be at most the 50 whole tiles"):
        api.plan_tiles(image, tile_shape=(20, 25), n_tiles=51)


def _outputs(seed=0, shape=(96, 96)):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape).astype(np.float32)
    f = truth + 0.05 * rng.standard_normal(shape).astype(np.float32)
    return {"prediction": f, "lower": f - 0.06, "upper": f + 0.06}, truth


def test_calibrate_intervals_record_and_apply():
    outputs, truth = _outputs()
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                        tile_shape=(16, 16))
    assert cal.result.n == 36 and cal.record["tile_shape"] == [16, 16]
    assert len(cal.record["tiles_world"]) == 36
    json.dumps(cal.record, allow_nan=False)
    (width, kwargs, kind), = cal.layers
    lo, up = cal.result.intervals(outputs["prediction"], outputs["lower"], outputs["upper"])
    np.testing.assert_allclose(width, up - lo, rtol=1e-6)
    (again, _, _), = api.apply_record(cal.record, outputs)
    np.testing.assert_array_equal(again, width)


def test_records_save_load_and_never_overwrite_other_files(tmp_path):
    outputs, truth = _outputs()
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                        tile_shape=(16, 16))
    path = tmp_path / "r.json"
    api.save_record(cal, path)
    assert api.load_record(path)["calibration"] == cal.record["calibration"]
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    with pytest.raises(FileExistsError, match="not a calibration record"):
        api.save_record(cal, other)
    assert json.loads(other.read_text()) == {"mine": 1}
    with pytest.raises(ValueError, match="is not one"):
        api.load_record(other)


def test_calibrate_refuses_bad_input_naming_it():
    outputs, truth = _outputs()
    with pytest.raises(ValueError, match=r"outputs must hold \['prediction', 'lower', 'upper'\]"):
        api.calibrate({"prediction": outputs["prediction"]}, truth, method="intervals")
    with pytest.raises(ValueError, match="truth must be on the prediction's grid"):
        api.calibrate(outputs, truth[:50], method="intervals")
    with pytest.raises(ValueError, match="method must be one of"):
        api.calibrate(outputs, truth, method="quantiles")
    with pytest.raises(ValueError, match="tile_shape must be two positive integers"):
        api.calibrate(outputs, truth, tile_shape=(0, 16))
    with pytest.raises(ValueError, match="no whole 200 x 200 tile fits"):
        api.calibrate(outputs, truth, tile_shape=(200, 200))
    with pytest.raises(ValueError, match="rule must be one of"):
        api.calibrate(outputs, truth, rule="conformal", tile_shape=(16, 16))


def test_segmentation_labels_zero_is_not_annotated():
    rng = np.random.default_rng(1)
    p1 = rng.random((64, 64)).astype(np.float32)
    probs = np.stack([1 - p1, p1])
    labels = (rng.random((64, 64)) < p1).astype(np.int32) + 1  # 1 = class 0, 2 = class 1
    labels[:, :32] = 0  # the left half is not annotated
    cal = api.calibrate({"probabilities": probs}, labels, method="segmentation", alpha=0.2,
                        tile_shape=(16, 16))
    assert cal.result.n == 8  # tiles with no annotation are left out
    bad = labels.copy()
    bad[0, 40] = 3
    with pytest.raises(ValueError, match="truth labels must be 0 .* 1..2"):
        api.calibrate({"probabilities": probs}, bad, method="segmentation", alpha=0.2,
                      tile_shape=(16, 16))


def test_self_check_warns_when_the_held_out_half_is_above_alpha():
    outputs, truth = _outputs()
    report = api.self_check(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                            tile_shape=(16, 16))
    assert report["n_calibration"] == 18 and report["n_test"] == 18 and report["passed"]
    # a shifted population: the bottom half is much noisier than the top
    noisy = truth.copy()
    noisy[48:] += 0.5 * np.random.default_rng(2).standard_normal(noisy[48:].shape)
    top = [np.array([[0, 0], [0, 96], [48, 96], [48, 0]], float)]
    cal = api.calibrate(outputs, noisy, alpha=0.1, rule="crc", tile_shape=(16, 16), regions=top)
    bottom = [np.array([[48, 0], [48, 96], [96, 96], [96, 0]], float)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixed = api.self_check(outputs, noisy, alpha=cal.result.alpha, rule="crc",
                               tile_shape=(16, 16), regions=top + bottom, seed=1)
    assert not mixed["passed"] or mixed["test_risk"] <= 0.1
    if not mixed["passed"]:
        assert any(issubclass(w.category, Im2ImUQWarning) for w in caught)


def test_model_card_reads_json_only():
    card = api.model_card("qpi-dpc-quantile")
    assert card["heuristic"] == "quantile" and "Tikhonov" in card["task"]
    assert "PSNR" in card["quality"]


def test_qpi_model_takes_two_images_and_computes_its_third_channel():
    from napari_im2im_uq._sample_data import sample_qpi

    (images, ikw, _), (phase, _, _) = sample_qpi()
    both = api.predict("qpi-dpc-quantile", images, device="cpu")
    names = [kw["name"] for _, kw, _ in both]
    assert names == ["prediction (qpi-dpc-quantile)", "lower (qpi-dpc-quantile)",
                     "upper (qpi-dpc-quantile)"]
    assert both[0][0].shape == phase.shape
    separate = api.predict("qpi-dpc-quantile", images[0], second_image=images[1], device="cpu")
    np.testing.assert_allclose(separate[0][0], both[0][0], atol=1e-5)
    outputs = {kw["metadata"]["im2im_uq"]["output"]: d for d, kw, _ in both}
    cal = api.calibrate(outputs, phase, method="intervals", alpha=0.2, rule="crc",
                        tile_shape=(32, 32))
    assert cal.result.n == 64
    with pytest.raises(ValueError, match="second_image must have the shape"):
        api.predict("qpi-dpc-quantile", images[0], second_image=images[1][:100])


def test_predict_outputs_lazy_and_zarr(tmp_path, monkeypatch):
    import dask.array as da

    image = np.random.default_rng(0).random((2, 40, 48)).astype(np.float32)
    mem = api.predict("tem-sr4x-quantile", image, device="cpu")
    monkeypatch.setattr(predict_workflow, "MEMORY_LIMIT", 1)
    lazy = api.predict("tem-sr4x-quantile", image, device="cpu")
    assert all(isinstance(d, da.Array) for d, _, _ in lazy)
    assert lazy[0][1]["metadata"]["im2im_uq"]["storage"] == "lazy"
    np.testing.assert_allclose(lazy[0][0].compute(), mem[0][0], atol=1e-6)
    store = tmp_path / "out.zarr"
    steps = []
    stored = api.predict("tem-sr4x-quantile", image, device="cpu", output="zarr", store=store,
                         progress=lambda d, t: steps.append((d, t)))
    assert (store / "zarr.json").is_file() and steps[-1][0] == steps[-1][1]
    np.testing.assert_allclose(np.asarray(stored[0][0]), mem[0][0], atol=1e-6)
    # one geometry for every output: the prediction's pixels lie inside the input pixel they
    # come from, centred on it (4 x 4 of them: centres 1.5 output pixels either side)
    for (_, m, _), (_, z, _) in zip(mem, stored, strict=True):
        assert m["scale"] == z["scale"] == (1.0, 0.25, 0.25)
        assert m["translate"] == z["translate"] == (0.0, -0.375, -0.375)
    class Layer:  # an input layer with its own pixel size and offset
        data, scale, translate, name, metadata = image, (3.0, 2.0, 2.0), (1.0, 5.0, 7.0), "x", {}
    (_, kw, _), *_ = api.predict("tem-sr4x-quantile", Layer(), device="cpu")
    assert kw["scale"] == (3.0, 0.5, 0.5) and kw["translate"] == (1.0, 4.25, 6.25)
    with pytest.raises(ValueError, match="store must be given exactly when output is 'zarr'"):
        api.predict("tem-sr4x-quantile", image, output="zarr")


def test_diagnose_says_when_tiles_are_not_held_out():
    outputs, truth = _outputs(shape=(128, 128))
    left = [np.array([[0, 0], [0, 64], [128, 64], [128, 0]], float)]
    right = [np.array([[0, 64], [0, 128], [128, 128], [128, 64]], float)]
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                        tile_shape=(16, 16), regions=left)
    held = api.diagnose(cal.record, outputs, truth, regions=right, n_splits=5)
    assert held["tiles_used_to_calibrate"] == 0 and len(held["tiles"]) == 32
    assert held["summary"][0][0] != "NOT held out"
    both = api.diagnose(cal.record, outputs, truth, n_splits=5, leave_out_calibration=False)
    assert both["tiles_used_to_calibrate"] == 32
    assert both["summary"][0][0] == "NOT held out"
    auto = api.diagnose(cal.record, outputs, truth, n_splits=5)  # leaves them out
    assert auto["calibration_tiles_left_out"] == 32 and auto["tiles_used_to_calibrate"] == 0
    np.testing.assert_array_equal(auto["tiles"], held["tiles"])
    with pytest.raises(ValueError, match="no held-out ground truth"):
        api.diagnose(cal.record, outputs, truth, regions=left, n_splits=5)


@pytest.mark.parametrize("sigma", ["width", "std"])
def test_trust_mask_record_reapplies_and_diagnoses_with_its_score(sigma):
    outputs, truth = _outputs(shape=(128, 128))
    outputs["std"] = (outputs["upper"] - outputs["lower"]) * np.random.default_rng(3).random(
        truth.shape).astype(np.float32)
    right = [np.array([[0, 64], [0, 128], [128, 128], [128, 64]], float)]
    left = [np.array([[0, 0], [0, 64], [128, 64], [128, 0]], float)]
    cal = api.calibrate(outputs, truth, method="trust_mask", alpha=0.3, sigma=sigma,
                        data_range=(-1, 2), tile_shape=(16, 16), regions=left)
    assert cal.record["sigma"] == sigma
    (mask, kwargs, _), = cal.layers
    assert kwargs["name"] == "untrusted (model)" and mask.dtype == np.uint8
    (again, _, _), = api.apply_record(cal.record, outputs)
    np.testing.assert_array_equal(again, mask)
    report = api.diagnose(cal.record, outputs, truth, regions=right, n_splits=5)
    assert report["method"] == "trust_mask" and report["tiles_used_to_calibrate"] == 0


def test_record_tiles_are_pixel_boxes_in_world_coordinates_and_round_trip():
    rng = np.random.default_rng(5)
    truth = rng.random((2, 64, 64)).astype(np.float32)
    f = truth + 0.05 * rng.standard_normal(truth.shape).astype(np.float32)
    outputs = {"prediction": f, "lower": f - 0.06, "upper": f + 0.06}
    cal = api.calibrate(outputs, truth, alpha=0.3, rule="crc", tile_shape=(16, 16))
    assert cal.record["tiles_world"][0] == [-0.5, -0.5, -0.5, 0.5, 15.5, 15.5]
    rects, kwargs, kind = api.record_layer(cal.record)
    back = api.calibration_tiles(truth.shape, (16, 16), regions=rects)
    np.testing.assert_array_equal(back, cal.tiles)  # the Shapes layer marks the same tiles
    report = api.diagnose(cal.record, outputs, truth, n_splits=3, leave_out_calibration=False)
    assert report["tiles_used_to_calibrate"] == len(cal.tiles) == 32


def test_trust_mask_score_given_as_a_layer_is_read_as_its_array():
    from types import SimpleNamespace

    outputs, truth = _outputs(shape=(64, 64))
    score = (outputs["upper"] - outputs["lower"]).astype(np.float32)
    layer = SimpleNamespace(data=score, metadata={}, name="my score", scale=(1.0, 1.0),
                            translate=(0.0, 0.0))
    by_layer = api.calibrate(outputs, truth, method="trust_mask", alpha=0.3, sigma=layer,
                             data_range=(-1, 2), tile_shape=(16, 16))
    by_array = api.calibrate(outputs, truth, method="trust_mask", alpha=0.3, sigma=score,
                             data_range=(-1, 2), tile_shape=(16, 16))
    assert by_layer.result.lam == by_array.result.lam
    np.testing.assert_array_equal(by_layer.layers[0][0], by_array.layers[0][0])
