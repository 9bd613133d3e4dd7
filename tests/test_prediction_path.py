"""The prediction path: one executor, one plan, one model cache, derived channels from the bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dask  # noqa: E402

from napari_im2im_uq._jobs import run_to_end  # noqa: E402
from napari_im2im_uq.inference import (  # noqa: E402
    _worker,
    compute_outputs,
    make_plan,
    plan_to_zarr,
)
from napari_im2im_uq.models import (  # noqa: E402
    BundleError,
    add_derived_channels,
    given_channels,
    load_cached,
    load_model,
    qpi_tikhonov_channel,
    read_spec,
)
from test_inference import make_model, rand  # noqa: E402


def test_compute_outputs_equals_dask_compute_with_one_model_run_per_block():
    model = make_model("segmentation")
    plan = make_plan(model, rand((2, 20, 24)), axes="ZYX", tile_shape=(8, 8), device="cpu")
    outs = plan.outputs()
    expected = dask.compute(outs, scheduler="threads")[0]
    steps = []
    gen = compute_outputs(outs)
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        got = stop.value
    total = plan.stacked.npartitions
    assert steps[0] == (0, total) and steps[-1] == (total, total)
    for name in outs:
        assert isinstance(got[name], np.ndarray)
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5)


def test_closing_compute_outputs_cancels():
    plan = make_plan(make_model("quantile"), rand((4, 32, 32)), axes="ZYX", tile_shape=(8, 8),
                     device="cpu")
    gen = compute_outputs(plan.outputs())
    assert next(gen)[0] == 0
    next(gen)
    gen.close()  # no error; the blocks in flight finish, no new one starts


def test_outputs_on_different_grids_are_refused():
    a = dask.array.zeros((8, 8), chunks=4)
    with pytest.raises(ValueError, match="one block grid"):
        compute_outputs({"a": a, "b": a.rechunk(2)})


def test_a_cached_bundle_travels_by_path_and_is_loaded_once(tmp_path):
    _worker.clear_cache()
    from napari_im2im_uq.models import save_model

    path = save_model(make_model("quantile"), tmp_path / "bundle")
    model = load_cached(path)
    assert load_cached(path) is model
    plan = make_plan(model, rand((20, 20)), axes="YX", tile_shape=(8, 8), device="cpu")
    assert plan.ref.path == str(path.resolve()) and plan.ref.weights is None
    dask.compute(plan.outputs())
    assert _worker.cache_info()["loads"] == 1
    # A model loaded directly (not from the cache) travels by its bytes.
    assert make_plan(load_model(path), rand((20, 20)), axes="YX", device="cpu").ref.weights


def test_plan_to_zarr_writes_the_planned_graph(tmp_path):
    model = make_model("gaussian")
    image = rand((24, 20))
    plan = make_plan(model, image, axes="YX", tile_shape=(8, 8), device="cpu")
    arrays = run_to_end(plan_to_zarr(plan, tmp_path / "o.zarr"))
    local = dask.compute(plan.outputs())[0]
    for name in model.output_names:
        np.testing.assert_allclose(arrays[name][...], local[name], atol=1e-6)


def test_derived_channels_are_declared_lazy_and_equal_the_whole_field_transform():
    spec = read_spec("qpi-dpc-quantile")
    assert given_channels(spec) == ["r1", "r2"]
    images = np.random.default_rng(0).uniform(0.3, 0.7, (2, 2, 64, 48))  # Z, C, Y, X
    arr, axes = add_derived_channels(spec, images, "ZCYX")
    assert axes == "ZCYX" and isinstance(arr, dask.array.Array)
    got = arr.compute()
    for z in range(2):
        r1, r2 = images[z].astype(np.float32)
        np.testing.assert_array_equal(got[z, :2], images[z].astype(np.float32))
        np.testing.assert_array_equal(got[z, 2], qpi_tikhonov_channel(r1, r2))
    with pytest.raises(ValueError, match="2 given channels"):
        add_derived_channels(spec, np.zeros((3, 64, 48)), "CYX")


@pytest.mark.parametrize(
    ("derived", "match"),
    [
        ({"nope": {"transform": "dpc_tikhonov", "from": ["r1", "r2"]}}, "not in input_channels"),
        ({"phase_tikhonov_r1r2": {"transform": "fft", "from": ["r1"]}}, "'transform' is one of"),
        ({"phase_tikhonov_r1r2": {"transform": "dpc_tikhonov", "from": ["x"]}}, "given input"),
        ({"phase_tikhonov_r1r2": {"transform": "dpc_tikhonov", "from": ["r1", "r2"],
                                  "sigma": 1}}, "unknown parameters"),
    ],
)
def test_a_bad_derived_channel_declaration_is_refused(tmp_path, derived, match):
    folder = tmp_path / "qpi"
    shutil.copytree(read_spec("qpi-dpc-quantile")["path"], folder)
    spec = json.loads((folder / "model.json").read_text())
    spec["derived_channels"] = derived
    (folder / "model.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=match):
        load_model(folder)


def test_derived_channels_over_several_waves_equal_one_tile():
    """More blocks than the executor's first wave (8): later waves still find the derived
    (whole-field) channel's tasks; they were once left in a task as a literal key (TypeError
    on the real QPI field with 3 x 3 blocks)."""
    from napari_im2im_uq import api

    model = load_model("qpi-dpc-quantile")
    images = np.random.default_rng(1).uniform(0.3, 0.7, (2, 96, 96)).astype(np.float32)
    many = api.predict(model, images, axes="CYX", output="memory", tile_shape=(24, 24))
    one = api.predict(model, images, axes="CYX", output="memory", tile_shape=(96, 96))
    assert len(many) == len(one) == 3
    for (a, kw, _), (b, _, _) in zip(many, one, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5,
                                   err_msg=kw["name"])
