"""Tests of napari_im2im_uq.inference: tiled == untiled, one graph, OOM retry, load once,
resumable OME-Zarr output and the ``predict`` command."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

import dask  # noqa: E402

from napari_im2im_uq import Im2ImUQWarning  # noqa: E402
from napari_im2im_uq.inference import (  # noqa: E402
    _worker,  # noqa: E402
    output_axes,
    predict,
    predict_to_zarr,
    write_zarr,
)
from napari_im2im_uq.models import Im2ImModel, build_network, save_model  # noqa: E402

SMALL = {"depth": 2, "base_channels": 8}
CALLS: list[tuple[int, ...]] = []
FAIL: dict = {}


class CountingModel(Im2ImModel):
    """Counts forward passes; can fake a CUDA out-of-memory error or a crash."""

    __slots__ = ()

    def predict_tensor(self, x, *, prediction=None):
        CALLS.append(tuple(x.shape))
        if FAIL.get("batch_above") is not None and x.shape[0] > FAIL["batch_above"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (fake, batch)")
        if FAIL.get("pixels_above") is not None and x.shape[-2] * x.shape[-1] > FAIL["pixels_above"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (fake, tile)")
        if FAIL.get("after_calls") is not None and len(CALLS) > FAIL["after_calls"]:
            raise RuntimeError("model crashed (test)")
        return super().predict_tensor(x, prediction=prediction)


@pytest.fixture
def one_torch_thread():
    """One torch thread and an empty model cache for the test (the tests share 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    _worker.clear_cache()
    yield
    _worker.clear_cache()
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    CALLS.clear()
    FAIL.clear()
    _worker.clear_cache()
    yield
    FAIL.clear()
    torch.set_num_threads(before)


def make_model(heuristic="quantile", *, scale=1, channels=1, seed=0, cls=Im2ImModel, **kwargs):
    """A tiny U-Net whose outputs are O(1), so tiling errors would show."""
    torch.manual_seed(seed)
    n_in = channels + (1 if heuristic == "mask" else 0)
    options = {**SMALL, **kwargs}
    if heuristic != "mask":
        options["scale_factor"] = scale
    net = build_network(
        heuristic,
        in_channels=n_in,
        bins=6 if heuristic == "softmax" else None,
        n_classes=3 if heuristic == "segmentation" else None,
        **options,
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    spec = {
        "heuristic": heuristic,
        "name": f"test-{heuristic}",
        "input_channels": [f"c{i}" for i in range(channels)] if channels > 1 else ["input"],
        "scale_factor": scale,
    }
    if heuristic == "softmax":
        spec["output_range"] = [-1.0, 3.0]
    return cls(net, spec)


def untiled(model, image, axes, prediction=None):
    """model(...) on the image, plane by plane, in the documented output layout."""
    canon = [a for a in "ZCYX" if a in axes]
    x = np.transpose(image, [axes.index(a) for a in canon])
    if "Z" not in axes:
        x = x[None]
    if "C" not in axes:
        x = x[:, None]
    p = None
    if prediction is not None:
        p = prediction if "Z" in axes else prediction[None]
        p = p[:, None]
    out = model(x, prediction=p)
    result = {}
    for name, value in out.items():  # (B, ch, H, W)
        if name == "probabilities":
            value = value.transpose(1, 0, 2, 3)
            result[name] = value if "Z" in axes else value[:, 0]
        else:
            result[name] = value[:, 0] if "Z" in axes else value[0, 0]
    return result


def rand(shape, seed=1):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# -- import hygiene ------------------------------------------------------------------------


def test_import_does_not_load_torch_or_dask():
    code = (
        "import sys, napari_im2im_uq.inference, napari_im2im_uq.inference._cli;"
        "print([m for m in ('torch', 'dask', 'zarr') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- tiled == untiled ----------------------------------------------------------------------

CASES = [
    # axes, shape, heuristic, scale, tile, batch
    ("YX", (45, 61), "quantile", 1, (12, 20), 1),
    ("YX", (29, 38), "gaussian", 3, (16, 12), 3),
    ("ZYX", (3, 37, 50), "residual", 1, (13, 18), 2),
    ("ZYX", (2, 23, 30), "segmentation", 3, (8, 12), 4),
    ("CYX", (2, 41, 39), "quantile", 1, (16, 16), 1),
    ("CYX", (2, 26, 21), "softmax", 3, (12, 8), 2),
    ("ZCYX", (2, 2, 30, 43), "segmentation", 1, (12, 20), 3),
    ("ZCYX", (3, 2, 19, 22), "quantile", 3, (8, 8), 5),
    ("YCXZ", (21, 2, 26, 2), "gaussian", 2, (8, 12), 2),
]


@pytest.mark.parametrize(("axes", "shape", "heuristic", "scale", "tile", "batch"), CASES)
def test_tiled_equals_untiled(axes, shape, heuristic, scale, tile, batch):
    channels = shape[axes.index("C")] if "C" in axes else 1
    model = make_model(heuristic, scale=scale, channels=channels)
    image = rand(shape)
    out = predict(model, image, axes=axes, tile_shape=tile, batch_size=batch, device="cpu")
    ref = untiled(model, image, axes)
    assert sorted(out) == sorted(model.output_names)
    computed = dask.compute(out)[0]
    for name, value in computed.items():
        assert value.dtype == np.float32
        assert len(output_axes(axes, name)) == value.ndim
        assert value.shape == ref[name].shape, name
        np.testing.assert_allclose(value, ref[name], rtol=0, atol=1e-5, err_msg=name)
    # The tiling really cut the image, and outputs have chunks on the output grid.
    assert out[model.output_names[0]].numblocks[-1] > 1


def test_halo_smaller_than_receptive_field_warns_and_differs():
    model = make_model("quantile")
    image = rand((37, 45))
    with pytest.warns(Im2ImUQWarning, match="smaller than the model's receptive field"):
        out = predict(model, image, axes="YX", tile_shape=(12, 20), halo=model.halo - 1)
    diff = np.abs(out["prediction"].compute() - model(image)["prediction"]).max()
    assert diff > 1e-3  # the equality tests above can see a tiling error


def test_larger_halo_and_non_numpy_inputs_give_the_same_result():
    model = make_model("quantile", scale=2)
    image = rand((2, 33, 27))
    ref = untiled(model, image, "ZYX")
    lazy = da.from_array(image, chunks=(1, 10, 7))
    store = zarr.array(image, chunks=(1, 16, 16))
    for source in (lazy, store, image.astype(np.float64)):
        out = predict(model, source, axes="ZYX", tile_shape=(8, 8), halo=model.halo + 5)
        np.testing.assert_allclose(out["upper"].compute(), ref["upper"], atol=1e-5)


def test_image_smaller_than_halo():
    model = make_model("gaussian", scale=2)
    image = rand((5, 7))
    out = predict(model, image, axes="YX", tile_shape=(4, 4))
    ref = model(image)
    for name in model.output_names:
        np.testing.assert_allclose(out[name].compute(), ref[name], atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2])
def test_mask_model_tiled_equals_untiled(scale):
    model = make_model("mask", scale=scale)
    image = rand((2, 22, 27))
    prediction = rand((2, 22 * scale, 27 * scale), seed=2)
    out = predict(model, image, axes="ZYX", prediction=prediction, tile_shape=(8, 12))
    ref = untiled(model, image, "ZYX", prediction=prediction)
    np.testing.assert_allclose(out["mask"].compute(), ref["mask"], atol=1e-5)
    with pytest.raises(ValueError, match="prediction is required"):
        predict(model, image, axes="ZYX")
    with pytest.raises(ValueError, match="prediction must have shape"):
        predict(model, image, axes="ZYX", prediction=prediction[:, :-1])


def test_bfloat16_on_cpu_is_close():
    model = make_model("quantile")
    image = rand((30, 30))
    out = predict(model, image, axes="YX", tile_shape=(16, 16), precision="bfloat16")
    ref = model(image)["prediction"]
    assert np.abs(out["prediction"].compute() - ref).max() < 0.2 * np.abs(ref).max()


def test_the_callers_model_is_not_changed():
    model = make_model("quantile")
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    predict(model, rand((20, 20)), axes="YX", precision="bfloat16")["prediction"].compute()
    assert model.dtype == torch.float32
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, before[key])


# -- one graph -----------------------------------------------------------------------------


def test_outputs_come_from_one_graph():
    model = make_model("quantile", cls=CountingModel)
    image = rand((2, 40, 40))
    out = predict(model, image, axes="ZYX", tile_shape=(16, 16), batch_size=1)
    n_blocks = out["prediction"].npartitions
    assert n_blocks == 2 * 3 * 3
    CALLS.clear()
    dask.compute(out["prediction"], out["lower"], out["upper"])
    assert len(CALLS) == n_blocks  # one forward pass per tile, shared by the three outputs
    CALLS.clear()
    out["lower"][0, :16, :16].compute()
    assert len(CALLS) == 1  # a region needs only its own block


def test_batches_hold_several_tiles():
    model = make_model("quantile", cls=CountingModel)
    image = rand((3, 40, 40))
    out = predict(model, image, axes="ZYX", tile_shape=(16, 16), batch_size=4)
    dask.compute(out)
    assert max(shape[0] for shape in CALLS) == 3  # planes of a block share a batch
    CALLS.clear()
    out = predict(model, image[0], axes="YX", tile_shape=(16, 16), batch_size=4)
    dask.compute(out)
    assert max(shape[0] for shape in CALLS) >= 2  # 2-D: tiles of a block share a batch


# -- out of memory -------------------------------------------------------------------------


def test_out_of_memory_retries_with_fewer_tiles():
    model = make_model("quantile", cls=CountingModel)
    image = rand((4, 24, 24))
    ref = untiled(model, image, "ZYX")
    FAIL["batch_above"] = 1
    out = predict(model, image, axes="ZYX", tile_shape=(24, 24), batch_size=4)
    with pytest.warns(Im2ImUQWarning, match="out of memory.*retrying with"):
        got = out["prediction"].compute()
    np.testing.assert_allclose(got, ref["prediction"], atol=1e-5)
    # The smaller batch is kept: no new failure for the next prediction.
    CALLS.clear()
    out = predict(model, image, axes="ZYX", tile_shape=(24, 24), batch_size=4)
    out["prediction"].compute()
    assert all(shape[0] == 1 for shape in CALLS)


def test_out_of_memory_retries_with_smaller_tiles():
    model = make_model("residual", cls=CountingModel, scale=2)
    image = rand((40, 36))
    ref = model(image)
    halo = model.halo
    FAIL["pixels_above"] = (16 + 2 * halo) * (20 + 2 * halo)
    out = predict(model, image, axes="YX", tile_shape=(40, 36))
    with pytest.warns(Im2ImUQWarning, match="retrying with tiles of"):
        got = dask.compute(out)[0]
    for name in model.output_names:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-5)


def test_out_of_memory_at_the_smallest_tile_is_an_error():
    model = make_model("quantile", cls=CountingModel)
    FAIL["pixels_above"] = 1
    out = predict(model, rand((8, 8)), axes="YX", tile_shape=(8, 8))
    with pytest.warns(Im2ImUQWarning), pytest.raises(MemoryError, match="even with one tile"):
        out["prediction"].compute()


# -- the model is loaded once per process --------------------------------------------------


def test_bundle_is_loaded_once(tmp_path):
    path = save_model(make_model("quantile"), tmp_path / "bundle")
    out = predict(path, rand((3, 40, 40)), axes="ZYX", tile_shape=(8, 8))
    assert out["prediction"].npartitions == 75
    dask.compute(out, scheduler="threads")
    assert _worker.cache_info()["loads"] == 1


def test_model_object_is_not_loaded_again(tmp_path):
    out = predict(make_model("quantile"), rand((40, 40)), axes="YX", tile_shape=(8, 8))
    dask.compute(out)
    assert _worker.cache_info()["loads"] == 0


def test_a_fresh_process_loads_from_the_shipped_bytes():
    model = make_model("quantile")
    out = predict(model, rand((20, 24)), axes="YX", tile_shape=(8, 8))
    _worker.clear_cache()  # as in another process: only the graph's copy of the model
    got = out["prediction"].compute()
    assert _worker.cache_info()["loads"] == 1
    np.testing.assert_allclose(got, model(rand((20, 24)))["prediction"], atol=1e-5)


# -- argument checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("axes", "shape", "match"),
    [
        ("YX", (3, 4, 5), "one letter per image dimension"),
        ("ZYQ", (3, 4, 5), "only the letters"),
        ("YYX", (3, 4, 5), "at most once"),
        ("ZCX", (3, 1, 5), "both Y"),
        ("CYX", (3, 4, 5), "model's 1 input channel"),
        (3, (4, 5), "must be a string"),
    ],
)
def test_bad_axes(axes, shape, match):
    with pytest.raises(ValueError, match=match):
        predict(make_model(), np.zeros(shape, np.float32), axes=axes)


def test_bad_arguments():
    model = make_model()
    image = np.zeros((16, 16), np.float32)
    two = make_model(channels=2)
    with pytest.raises(ValueError, match="axes must contain C"):
        predict(two, np.zeros((2, 16, 16), np.float32), axes="ZYX")
    with pytest.raises(ValueError, match="tile_shape must be two positive integers"):
        predict(model, image, axes="YX", tile_shape=(0, 8))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict(model, image, axes="YX", batch_size=0)
    with pytest.raises(ValueError, match="halo must be a non-negative integer"):
        predict(model, image, axes="YX", halo=-1)
    with pytest.raises(ValueError, match="device must be one of"):
        predict(model, image, axes="YX", device="tpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        predict(model, image, axes="YX", precision="int8")
    with pytest.raises(ValueError, match="'float32' or 'bfloat16' on the CPU; got 'float16'"):
        predict(model, image, axes="YX", device="cpu", precision="float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.cuda.is_available"):
            predict(model, image, axes="YX", device="cuda")
    with pytest.raises(ValueError, match="image must be a real numeric array"):
        predict(model, np.zeros((4, 4), dtype=complex), axes="YX")
    with pytest.raises(ValueError, match="model must be an Im2ImModel"):
        predict(42, image, axes="YX")
    with pytest.raises(ValueError, match="only accepted by mask models"):
        predict(model, image, axes="YX", prediction=image)


# -- zarr ----------------------------------------------------------------------------------


def run_all(gen):
    steps = []
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        return steps, stop.value


def test_zarr_outputs_and_ome_metadata(tmp_path):
    model = make_model("segmentation", scale=2)
    image = rand((2, 30, 26))
    store = tmp_path / "out.zarr"
    gen = predict_to_zarr(
        model,
        image,
        store,
        axes="ZYX",
        tile_shape=(12, 12),
        pixel_size=(2.0, 0.5, 0.5),
        unit="micrometer",
    )
    steps, arrays = run_all(gen)
    assert steps[0] == (0, 18)
    assert steps[-1] == (18, 18)
    assert [d for d, _ in steps] == list(range(19))
    ref = untiled(model, image, "ZYX")
    np.testing.assert_allclose(arrays["probabilities"][...], ref["probabilities"], atol=1e-5)
    root = zarr.open_group(str(store), mode="r")
    meta = root.attrs["napari_im2im_uq"]
    assert meta["complete"] is True
    assert meta["outputs"]["probabilities"] == {
        "path": "probabilities/0",
        "axes": "CZYX",
        "channels": 3,
    }
    ome = root["probabilities"].attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space", "space"]
    assert ms["axes"][1]["unit"] == "micrometer"
    transforms = ms["datasets"][0]["coordinateTransformations"]
    assert transforms[0] == {"type": "scale", "scale": [1.0, 2.0, 0.25, 0.25]}
    assert transforms[1] == {"type": "translation", "translation": [0.0, 0.0, -0.125, -0.125]}
    assert arrays["probabilities"].shape == (3, 2, 60, 52)
    assert arrays["probabilities"].metadata.dimension_names == ("c", "z", "y", "x")
    assert arrays["probabilities"].chunks == (3, 1, 24, 24)
    # A complete store runs again without computing anything.
    CALLS.clear()
    steps, again = run_all(predict_to_zarr(model, image, store, axes="ZYX"))
    assert steps == [(18, 18)]
    np.testing.assert_array_equal(again["probabilities"][...], arrays["probabilities"][...])


def test_write_zarr_equals_predict(tmp_path):
    model = make_model("gaussian", channels=2, scale=3)
    image = rand((2, 17, 23))
    seen = []
    arrays = write_zarr(
        model,
        image,
        tmp_path / "o.zarr",
        axes="CYX",
        tile_shape=(8, 8),
        progress=lambda d, t: seen.append((d, t)),
    )
    lazy = dask.compute(predict(model, image, axes="CYX", tile_shape=(8, 8)))[0]
    for name in model.output_names:
        # the same graph; torch's CPU kernels may round differently with the number of threads
        # a thread pool gives them (seen once in a full run: 2e-7), so up to float32 rounding
        np.testing.assert_allclose(arrays[name][...], lazy[name], rtol=1e-6, atol=1e-6)
    assert seen[-1] == (9, 9)


def _done_count(store):
    return int(np.count_nonzero(zarr.open_group(str(store), mode="r")["_done"][...]))


def test_cancel_then_resume(tmp_path):
    model = make_model("quantile", cls=CountingModel)
    image = rand((40, 48))
    store = tmp_path / "o.zarr"
    gen = predict_to_zarr(model, image, store, axes="YX", tile_shape=(8, 8))
    total = 30
    for done, n in gen:
        assert n == total
        if done >= 3:
            break
    gen.close()  # cancel: blocks in flight finish, nothing new starts
    marked = _done_count(store)
    assert 3 <= marked < total
    time.sleep(0.3)
    assert _done_count(store) == marked  # nothing runs after close()
    assert zarr.open_group(str(store), mode="r").attrs["napari_im2im_uq"]["complete"] is False
    CALLS.clear()
    steps, arrays = run_all(predict_to_zarr(model, image, store, axes="YX"))
    assert steps[0] == (marked, total)
    assert len(CALLS) == total - marked  # only the missing blocks ran
    np.testing.assert_allclose(arrays["upper"][...], model(image)["upper"], atol=1e-5)


def test_crash_then_resume(tmp_path):
    model = make_model("quantile", cls=CountingModel)
    image = rand((2, 24, 24))
    store = tmp_path / "o.zarr"
    FAIL["after_calls"] = 5
    with pytest.raises(RuntimeError, match="model crashed"):
        run_all(predict_to_zarr(model, image, store, axes="ZYX", tile_shape=(8, 8)))
    marked = _done_count(store)
    assert marked <= 5
    FAIL.clear()
    CALLS.clear()
    steps, arrays = run_all(predict_to_zarr(model, image, store, axes="ZYX", tile_shape=(8, 8)))
    assert steps[0] == (marked, 18)
    assert len(CALLS) == 18 - marked
    ref = untiled(model, image, "ZYX")
    for name in model.output_names:
        np.testing.assert_allclose(arrays[name][...], ref[name], atol=1e-5)


def test_existing_stores_are_never_overwritten(tmp_path):
    model = make_model("quantile")
    image = rand((20, 20))
    store = tmp_path / "o.zarr"
    write_zarr(model, image, store, axes="YX", tile_shape=(8, 8))
    with pytest.raises(ValueError, match=r"different run.*tile_shape: stored \[8, 8\]"):
        predict_to_zarr(model, image, store, axes="YX", tile_shape=(12, 12))
    with pytest.raises(ValueError, match="image changed since store"):  # every block read it
        predict_to_zarr(model, image + 1, store, axes="YX")
    with pytest.raises(ValueError, match="different run.*model.id"):
        predict_to_zarr(make_model("quantile", seed=3), image, store, axes="YX")
    # overwrite=True replaces it, saying what it removes.
    with pytest.warns(Im2ImUQWarning, match="replacing the store.*removing _done"):
        _, arrays = run_all(
            predict_to_zarr(model, image + 1, store, axes="YX", tile_shape=(12, 12),
                            overwrite=True)
        )
    np.testing.assert_allclose(arrays["prediction"][...], model(image + 1)["prediction"], atol=1e-5)
    # A folder that is not a zarr store is refused, even with overwrite=True.
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a zarr store"):
            predict_to_zarr(model, image, folder, axes="YX", overwrite=overwrite)
    assert (folder / "notes.txt").read_text() == "keep me"
    # A zarr store written by someone else needs overwrite=True.
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").create_array("data", shape=(2,), dtype="f4")
    with pytest.raises(FileExistsError, match="not written by predict_to_zarr"):
        predict_to_zarr(model, image, other, axes="YX")
    file = tmp_path / "file.zarr"
    file.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        predict_to_zarr(model, image, file, axes="YX", overwrite=True)


def test_zarr_argument_checks(tmp_path):
    model = make_model()
    image = rand((16, 16))
    with pytest.raises(ValueError, match="pixel_size must be 2 positive numbers"):
        predict_to_zarr(model, image, tmp_path / "a.zarr", axes="YX", pixel_size=(1, 2, 3))
    with pytest.raises(ValueError, match="scheduler must be None"):
        predict_to_zarr(model, image, tmp_path / "b.zarr", axes="YX", scheduler=3)
    with pytest.raises(ValueError, match="store must be a folder path"):
        predict_to_zarr(model, image, 5, axes="YX")


# -- command line --------------------------------------------------------------------------


def test_cli_predict_npy_and_tif(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    from napari_im2im_uq.cli import main

    model = make_model("quantile", scale=2)
    bundle = save_model(model, tmp_path / "bundle")
    image = rand((2, 20, 26))
    np.save(tmp_path / "img.npy", image)
    tifffile.imwrite(tmp_path / "img.tif", image, metadata={"axes": "ZYX"})
    ref = untiled(model, image, "ZYX")
    for name, extra in (("img.npy", ["--axes", "ZYX"]), ("img.tif", [])):
        out = tmp_path / f"{name}.zarr"
        argv = [
            "predict",
            str(tmp_path / name),
            "--model",
            str(bundle),
            "--output",
            str(out),
            "--tile",
            "8",
            "12",
            "--batch",
            "2",
            "--device",
            "cpu",
            *extra,
        ]
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert "prediction:" in captured.out
        assert "block" in captured.err  # the progress bar
        got = zarr.open_array(str(out / "upper" / "0"), mode="r")[...]
        np.testing.assert_allclose(got, ref["upper"], atol=1e-5)
    # Errors are reported, not raised.
    assert (
        main(
            [
                "predict",
                str(tmp_path / "img.npy"),
                "--model",
                str(bundle),
                "--output",
                str(tmp_path / "x.zarr"),
            ]
        )
        == 1
    )
    assert "--axes is needed" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                str(tmp_path / "img.npy"),
                "--model",
                str(bundle),
                "--axes",
                "ZYX",
                "--output",
                str(tmp_path / "img.tif.zarr"),
                "--tile",
                "16",
                "16",
            ]
        )
        == 1
    )
    assert "different run" in capsys.readouterr().err


def test_cli_reads_ome_zarr_input(tmp_path, capsys):
    from napari_im2im_uq.cli import main

    model = make_model("quantile")
    bundle = save_model(model, tmp_path / "bundle")
    image = rand((18, 22))
    src = tmp_path / "in.zarr"
    root = zarr.open_group(str(src), mode="w")
    root.create_array("0", data=image, chunks=(8, 8))
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [0.3, 0.3]}],
                    }
                ],
            }
        ],
    }
    out = tmp_path / "out.zarr"
    assert (
        main(["predict", str(src), "--model", str(bundle), "--output", str(out), "--no-progress"]) == 0
    )
    capsys.readouterr()
    got = zarr.open_array(str(out / "prediction" / "0"), mode="r")[...]
    np.testing.assert_allclose(got, model(image)["prediction"], atol=1e-5)
    meta = json.loads((out / "prediction" / "zarr.json").read_text())["attributes"]["ome"]
    ms = meta["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.3, 0.3]
    assert ms["axes"][0]["unit"] == "micrometer"
