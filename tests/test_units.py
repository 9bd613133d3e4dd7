"""Units (issue 10, part 1): declared pre/post-processing, dtype-independent predictions,
outputs in the declared range, and calibration that refuses truth in other units."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from napari_im2im_uq import Im2ImUQWarning, api
from napari_im2im_uq.data import _readers
from napari_im2im_uq.models import BundleError, read_spec
from napari_im2im_uq.models._spec import validate_spec
from napari_im2im_uq.models._units import apply, output_clip, resolve

ROOT = _readers.shared_data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="../shared/data not found")
MODEL = "tem-sr4x-quantile"
#: float32 rounding of x / 255 against x * (1 / 255), through a U-Net: measured 3e-7 (synthetic)
TOL = 1e-5


def _layers(tuples) -> dict:
    out = {}
    for data, kwargs, _ in tuples:
        meta = kwargs["metadata"]["im2im_uq"]
        out[meta["output"]] = SimpleNamespace(
            data=np.asarray(data), metadata=kwargs["metadata"], name=kwargs["name"],
            scale=kwargs["scale"], translate=kwargs["translate"])
    return out


def _three(f: np.ndarray):
    """uint8, uint16 and float32 versions of one picture in [0, 1] (exactly the same values)."""
    u8 = np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)
    return {"uint8": u8, "uint16": u8.astype(np.uint16) * 257,
            "float32": u8.astype(np.float32) / 255}


# -- the declarations -----------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "match"), [
    ("preprocessing", {"id": "clip"}, r"preprocessing must be a list"),
    ("preprocessing", [{"id": "fixed_linear"}], r"preprocessing\[0\] must be an object with 'id'"),
    ("preprocessing", [{"id": "scale_linear", "kwargs": {"gain": [1, 2]}}],
     r"preprocessing\[0\]\.kwargs\['gain'\] must be a finite number or a list of 1"),
    ("preprocessing", [{"id": "scale_linear", "kwargs": {"scale": 2}}],
     r"preprocessing\[0\]\.kwargs\['scale'\] is not a kwarg of 'scale_linear'"),
    ("preprocessing", [{"id": "scale_range", "kwargs": {"min_percentile": 99,
                                                        "max_percentile": 1}}],
     r"preprocessing\[0\]\.kwargs min_percentile, max_percentile"),
    ("preprocessing", [{"id": "scale_range", "kwargs": {"max_percentile": 99}}],
     r"preprocessing\[0\]\.kwargs is missing 'min_percentile'"),
    ("preprocessing", [{"id": "zero_mean_unit_variance", "kwargs": {"mode": "fixed", "mean": 0}}],
     r"preprocessing\[0\]\.kwargs is missing 'std'"),
    ("preprocessing", [{"id": "zero_mean_unit_variance",
                        "kwargs": {"mode": "fixed", "mean": 0, "std": 0}}],
     r"preprocessing\[0\]\.kwargs\['std'\] must be positive"),
    ("preprocessing", [{"id": "zero_mean_unit_variance", "kwargs": {"mode": "per_dataset"}}],
     r"kwargs\['mode'\] must be 'fixed' or 'per_sample'"),
    ("preprocessing", [{"id": "clip", "kwargs": {"min": 1, "max": 0}}],
     r"preprocessing\[0\]\.kwargs 'max' must exceed 'min'"),
    ("postprocessing", [{"id": "scale_range", "kwargs": {}}],
     r"postprocessing\[0\] must be an object with 'id' in \['clip'\]"),
    ("postprocessing", [{"id": "clip", "kwargs": {"min": 0}}],
     r"postprocessing\[0\]\.kwargs is missing 'max'"),
    ("input_range", [1, 0], r"input_range must be null or \[lo, hi\]"),
])
def test_bad_declarations_are_refused_naming_the_field(field, value, match):
    spec = copy.deepcopy(read_spec(MODEL))
    validate_spec(spec)
    spec[field] = value
    with pytest.raises(BundleError, match=match):
        validate_spec(spec)


def test_every_zoo_bundle_declares_its_units():
    for name in api.list_models():
        spec = read_spec(name)
        assert spec["preprocessing"] == [{"id": "scale_dtype_range"}], name
        assert spec["input_range"] == [0.0, 1.0], name
        if spec["heuristic"] not in ("mask", "segmentation"):
            assert output_clip(spec) == tuple(spec["output_range"]), name


def test_steps_resolve_to_the_bioimageio_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (2, 2, 30, 40)).astype(np.float32)
    steps = [
        {"id": "scale_linear", "kwargs": {"gain": [2.0, 0.5], "offset": 1.0}},
        {"id": "zero_mean_unit_variance", "kwargs": {"mode": "per_sample", "eps": 0.0}},
        {"id": "clip", "kwargs": {"min": -1.5, "max": 1.5}},
    ]
    units = resolve({"preprocessing": steps}, x)
    got = apply(x, units["ops"], channel_axis=1)
    ref = x.astype(np.float64) * np.array([2.0, 0.5])[:, None, None] + 1.0
    ref = (ref - ref.mean(axis=(0, 2, 3), keepdims=True)) / ref.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(got, np.clip(ref, -1.5, 1.5), atol=1e-5)
    sr = resolve({"preprocessing": [{"id": "scale_range", "kwargs": {
        "min_percentile": 1, "max_percentile": 99, "eps": 0.0}}]}, x)
    out = apply(x, sr["ops"], channel_axis=1)
    for c in range(2):
        np.testing.assert_allclose(np.percentile(out[:, c], [1, 99]), [0, 1], atol=1e-5)
    assert sr["statistics_from"] == "the whole image"


def test_per_sample_statistics_of_a_lazy_volume_come_from_one_subsample():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    vol = rng.normal(10.0, 3.0, (20, 1, 600, 600)).astype(np.float32)
    spec = {"preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"mode": "per_sample"}}]}
    lazy = resolve(spec, da.from_array(vol, chunks=(1, 1, 300, 300)))
    stats = lazy["steps"][0]["statistics"]
    assert abs(stats["mean"][0] - 10.0) < 0.05 and abs(stats["std"][0] - 3.0) < 0.05
    assert "subsample" in lazy["statistics_from"]


# -- uint8, uint16 and float give the same prediction ---------------------------------------

def _api_predictions(images):
    return {k: {o: np.asarray(v.data) for o, v in _layers(
        api.predict(MODEL, im, device="cpu", tile_shape=(64, 64))).items()}
        for k, im in images.items()}


def _assert_same(preds) -> float:
    worst = 0.0
    for name in ("uint8", "uint16"):
        for key, value in preds[name].items():
            worst = max(worst, float(np.abs(value - preds["float32"][key]).max()))
    assert worst < TOL, worst
    return worst


def test_uint8_uint16_float32_give_the_same_prediction_api_and_cli(tmp_path):
    zarr = pytest.importorskip("zarr")
    from napari_im2im_uq.cli import main

    rng = np.random.default_rng(2)
    images = _three(rng.random((48, 56)))
    preds = _api_predictions(images)
    _assert_same(preds)  # measured max difference 3e-7
    lo, hi = read_spec(MODEL)["output_range"]
    for out in preds.values():
        assert out["lower"].min() >= lo and out["upper"].max() <= hi
    cli = {}
    for name, im in images.items():
        np.save(tmp_path / f"{name}.npy", im)
        out = tmp_path / f"{name}.zarr"
        assert main(["predict", str(tmp_path / f"{name}.npy"), "--model", MODEL, "--axes", "YX",
                     "--output", str(out), "--device", "cpu", "--no-progress"]) == 0
        cli[name] = {k: zarr.open_array(str(out / k / "0"), mode="r")[...]
                     for k in ("prediction", "lower", "upper")}
    _assert_same(cli)
    np.testing.assert_allclose(cli["uint8"]["prediction"], preds["uint8"]["prediction"],
                               atol=TOL)


def test_the_output_metadata_states_the_preprocessing():
    im = _three(np.random.default_rng(3).random((40, 40)))["uint16"]
    meta = api.predict(MODEL, im, device="cpu")[0][1]["metadata"]["im2im_uq"]["units"]
    assert meta["dtype"] == "uint16"
    assert meta["steps"][0]["applied"] == "uint16: (x - 0) / 65535"
    assert 0 <= meta["observed_range"][0] < meta["observed_range"][1] <= 1


def test_input_far_outside_the_training_range_warns_with_both_ranges():
    im = _three(np.random.default_rng(4).random((40, 40)))["uint8"].astype(np.float32)  # 0-255
    with pytest.warns(Im2ImUQWarning, match=r"span \[\d+, 255\].*far outside \[0, 1\]"):
        api.predict(MODEL, im, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Im2ImUQWarning)
        api.predict(MODEL, im / 255, device="cpu")  # in range: silent
        api.predict(MODEL, im.astype(np.uint8), device="cpu")  # uint8: divided by 255


# -- calibration ----------------------------------------------------------------------------

def test_calibration_refuses_truth_in_other_units():
    rng = np.random.default_rng(5)
    truth = rng.random((64, 64)).astype(np.float32)
    f = np.clip(truth + 0.05 * rng.standard_normal(truth.shape), 0, 1).astype(np.float32)
    outputs = {"prediction": f, "lower": np.clip(f - 0.1, 0, 1), "upper": np.clip(f + 0.1, 0, 1)}
    for bad in (truth * 255, truth + 1000):
        with pytest.raises(ValueError, match=r"truth spans \[.*\] but the prediction spans "
                                             r"\[.*\]: .*divided by 255"):
            api.calibrate(outputs, bad, method="intervals", alpha=0.2, tile_shape=(16, 16))
    with pytest.raises(ValueError, match="different units"):
        api.calibrate(outputs, truth * 255, method="trust_mask", alpha=0.3, sigma="width",
                      data_range=(0, 1), tile_shape=(16, 16))
    api.calibrate(outputs, truth, method="intervals", alpha=0.2, tile_shape=(16, 16))  # same units


# -- real data ------------------------------------------------------------------------------

def _vnc_crop():
    em = _readers.load_em_drosophila(stack=1, slices=[16], root=ROOT)["raw"][0]
    return em[512:768:4, 256:512:4], em[512:768, 256:512]  # the input grid, its truth


@pytest.mark.realdata
@needs_data
def test_real_vnc_crop_same_prediction_in_every_dtype_and_calibratable(tmp_path):
    small, truth = _vnc_crop()
    images = _three(small)
    preds = _api_predictions(images)
    worst = _assert_same(preds)
    assert worst < TOL
    outputs = _layers(api.predict(MODEL, images["uint8"], device="cpu", tile_shape=(64, 64)))
    pred = outputs["prediction"].data
    assert 0.0 <= pred.min() and pred.max() <= 1.0
    # the record's data range is the model's output range: no clipping by hand needed
    cal = api.calibrate(outputs, np.round(truth * 255) / 255, method="trust_mask", alpha=0.3,
                        sigma="width", tile_shape=(32, 32))
    assert cal.record["calibration"]["method"] == "trust_mask"


def test_predict_widget_gives_the_same_prediction_for_every_dtype(request):
    pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    from _display import HAS_DISPLAY, REASON

    if not HAS_DISPLAY:
        pytest.skip(REASON)
    from napari_im2im_uq._widgets import PredictWidget

    qtbot = request.getfixturevalue("qtbot")
    viewer = request.getfixturevalue("make_napari_viewer")()
    images = _three(np.random.default_rng(6).random((40, 48)))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    got = {}
    for name, im in images.items():
        layer = viewer.add_image(im, name=name)
        widget.reset_choices()
        widget.image.value = layer
        assert widget.run_button.enabled, widget.status.value
        widget.start()
        qtbot.waitUntil(lambda: not widget.runner.running, timeout=180_000)
        outs = [ly for ly in viewer.layers
                if ly.metadata.get("im2im_uq", {}).get("input_layer") == name
                and ly.metadata["im2im_uq"].get("output") == "prediction"]
        assert len(outs) == 1, [ly.name for ly in viewer.layers]
        got[name] = np.asarray(outs[0].data, dtype=np.float32)
    for name in ("uint8", "uint16"):
        assert np.abs(got[name] - got["float32"]).max() < TOL
