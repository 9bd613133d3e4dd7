"""Planning a prediction costs no Python work per block: the graph is rules, built a wave at a time.

Exactness: on many random geometries the lazy graph's blocks are bit-identical to a slow,
obviously correct reference (each block's window cut from the whole image mirrored once by
``np.pad``, run through the same block function), and close to the whole-image model. Size:
planning a 10^5-block volume builds no block's tasks; running its first block builds one wave.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")

import dask  # noqa: E402

from napari_im2im_uq._jobs import run_to_end  # noqa: E402
from napari_im2im_uq.inference import (  # noqa: E402
    _executor,
    _graph,
    _worker,
    compute_outputs,
    make_plan,
    predict_to_zarr,
)
from test_inference import make_model, one_torch_thread, run_all, untiled  # noqa: E402, F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_blocks(plan, image_zcyx, prediction_zyx=None) -> np.ndarray:
    """The stacked outputs, block by block, from windows cut out of the mirrored whole image."""
    s, h = plan.scale_factor, plan.halo
    x = np.asarray(plan.x.compute())  # the model's input (units and derived channels applied)
    assert x.shape[0] == image_zcyx.shape[0]
    padded = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (h, h), (h, h)), mode="symmetric")
    pred = None
    if prediction_zyx is not None:
        p = prediction_zyx.astype(np.float32)[:, None]
        pred = np.pad(p, ((0, 0), (0, 0), (h * s, h * s), (h * s, h * s)), mode="symmetric")
    n_channels = sum(n for _, n in plan.layout)
    planes, _, rows, cols = x.shape
    out = np.full((planes, n_channels, rows * s, cols * s), np.nan, dtype=np.float32)
    bz, by, bx = (np.cumsum((0, *plan.x.chunks[i])) for i in (0, 2, 3))
    for iz in range(len(bz) - 1):
        for iy in range(len(by) - 1):
            for ix in range(len(bx) - 1):
                z0, z1, y0, y1, x0, x1 = bz[iz], bz[iz + 1], by[iy], by[iy + 1], bx[ix], bx[ix + 1]
                window = padded[z0:z1, :, y0 : y1 + 2 * h, x0 : x1 + 2 * h]
                pwin = None if pred is None else [[pred[z0:z1, :, y0 * s : (y1 + 2 * h) * s,
                                                         x0 * s : (x1 + 2 * h) * s]]]
                out[z0:z1, :, y0 * s : y1 * s, x0 * s : x1 * s] = _worker.run_block(
                    plan.ref, [[window]], pwin, pads=((0, 0), (0, 0)), halo=h,
                    tile=plan.tile_shape, batch=plan.batch_size, device="cpu",
                    precision="float32", n_channels=n_channels, uq=plan.uncertainty)
    return out


def _random_chunks(rng, size):
    cuts = np.sort(rng.choice(np.arange(1, size), size=min(size - 1, int(rng.integers(0, 4))),
                              replace=False))
    return tuple(int(v) for v in np.diff([0, *cuts, size]))


def _case(seed):
    rng = np.random.default_rng(seed)
    has_z = bool(rng.integers(2))
    heuristic = ["quantile", "gaussian", "segmentation", "mask"][int(rng.integers(4))]
    scale = int(rng.choice([1, 4]))
    shape = (int(rng.integers(1, 4)) if has_z else 1, int(rng.integers(5, 41)),
             int(rng.integers(5, 41)))
    tile = (int(rng.integers(4, 25)), int(rng.integers(4, 25)))
    return rng, has_z, heuristic, scale, shape, tile


@pytest.mark.parametrize("seed", range(24))
def test_blocks_equal_the_mirrored_whole_image_reference(seed):
    rng, has_z, heuristic, scale, shape, tile = _case(seed)
    model = make_model(heuristic, scale=scale, seed=seed % 3)
    image = np.random.default_rng(seed).random(shape, dtype=np.float32)
    extra = int(rng.integers(0, 2)) * int(rng.integers(1, 9))
    given = image if has_z else image[0]
    axes = "ZYX" if has_z else "YX"
    if rng.integers(2):  # a lazy input with awkward chunks: the blocks reassemble them
        given = da.from_array(given, chunks=tuple(_random_chunks(rng, n) for n in given.shape))
    prediction = None
    if heuristic == "mask":
        prediction = np.random.default_rng(seed + 100).random(
            (shape[0], shape[1] * scale, shape[2] * scale), dtype=np.float32)
    pgiven = None if prediction is None else (prediction if has_z else prediction[0])
    batch = int(rng.integers(1, 4))
    plan = make_plan(model, given, axes=axes, tile_shape=tile, halo=model.halo + extra,
                     batch_size=batch, device="cpu", prediction=pgiven)
    got = plan.stacked.compute(scheduler="threads")
    ref = reference_blocks(plan, image[:, None], prediction)
    # block by block, to float32 rounding: the reference runs on this thread, the plan on the
    # executor's; in a full test run torch's convolutions can round the last bit differently
    # there (a misplaced window or halo is off by far more)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    # and the documented views, through the executor, equal the whole-image model
    outs = run_to_end(compute_outputs(plan.outputs()))
    whole = untiled(model, given if isinstance(given, np.ndarray) else np.asarray(given), axes,
                    prediction=pgiven)
    for name, value in outs.items():
        np.testing.assert_allclose(value, whole[name], rtol=0, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("chunks", [(1, 7, 9), (2, 40, 3), (3, 5, 40)])
def test_rechunk_rule_equals_dask_rechunk(chunks):
    x = da.from_array(np.arange(3 * 40 * 40).reshape(3, 40, 40), chunks=(2, 13, 17))
    got = _graph.rechunk(x, chunks)
    want = x.rechunk(chunks)
    assert got.chunks == want.chunks
    np.testing.assert_array_equal(got.compute(), want.compute())
    assert _graph.rechunk(x, x.chunks) is x


def _count_waves(monkeypatch):
    sizes: list[int] = []
    built = {"blocks": 0}
    real_wave, real_init = _graph.wave_graph, _graph.BlockLayer.__init__

    def wave(graph, keys):
        dsk = real_wave(graph, keys)
        sizes.append(len(dsk))
        return dsk

    def init(self, name, grid, build, helpers=()):
        def counted(index):
            built["blocks"] += 1
            return build(index)

        real_init(self, name, grid, counted, helpers)

    monkeypatch.setattr(_graph, "wave_graph", wave)
    monkeypatch.setattr(_graph.BlockLayer, "__init__", init)
    return sizes, built


def test_planning_a_huge_volume_builds_no_block_and_its_first_wave_only(tmp_path, monkeypatch):
    sizes, built = _count_waves(monkeypatch)
    model = make_model("quantile")
    tile = 8
    volume = da.zeros((1000, 10 * tile, 10 * tile), chunks=(1, tile, tile), dtype=np.float32)
    plan = make_plan(model, volume, axes="ZYX", tile_shape=(tile, tile), device="cpu")
    assert plan.stacked.npartitions == 100_000
    assert built["blocks"] == 0  # planning: no block's tasks exist
    # Every layer below the prediction is a rule (no table of one entry per chunk).
    tables = [n for n, layer in plan.stacked.dask.layers.items()
              if layer.is_materialized() and len(layer) > 1]
    assert tables == []
    gen = predict_to_zarr(model, volume, tmp_path / "big.zarr", axes="ZYX",
                          tile_shape=(tile, tile), device="cpu")
    assert next(gen) == (0, 100_000)
    assert built["blocks"] == 0  # store created, nothing built yet
    assert next(gen)[0] == 1  # the first block is written
    gen.close()
    wave = _executor.FIRST_WAVE
    # One wave was built: its blocks' store, fingerprint and prediction tasks (and their
    # neighbours' input chunks), each a handful of tasks: O(wave), not O(volume).
    assert len(sizes) == 1
    assert sizes[0] <= 40 * wave
    assert built["blocks"] <= 3 * 2 * wave  # prediction, fingerprint, store; their pieces


def test_waves_on_both_backends_give_the_same_store(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(_executor, "WAVE", 5)  # many waves on a small volume
    sizes, _ = _count_waves(monkeypatch)
    model = make_model("gaussian", scale=2)
    image = np.random.default_rng(3).random((2, 30, 34), dtype=np.float32)
    local = dask.compute(make_plan(model, image, axes="ZYX", tile_shape=(8, 12),
                                   device="cpu").outputs(), scheduler="threads")[0]
    steps, arrays = run_all(predict_to_zarr(model, image, tmp_path / "t.zarr", axes="ZYX",
                                            tile_shape=(8, 12), device="cpu"))
    assert steps[-1] == (24, 24) and len(sizes) == 5  # 24 blocks in waves of 5
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        steps_d, arrays_d = run_all(predict_to_zarr(model, image, tmp_path / "d.zarr",
                                                    axes="ZYX", tile_shape=(8, 12),
                                                    device="cpu", scheduler=client))
    assert [d for d, _ in steps_d] == list(range(25))
    for name in model.output_names:
        np.testing.assert_array_equal(arrays[name][...], arrays_d[name][...])
        np.testing.assert_allclose(arrays[name][...], local[name], rtol=0, atol=1e-6)


def test_resume_reads_the_marks_of_written_blocks_only(tmp_path):
    model = make_model("quantile")
    image = np.random.default_rng(4).random((3, 40, 40), dtype=np.float32)
    store = tmp_path / "r.zarr"
    gen = predict_to_zarr(model, image, store, axes="ZYX", tile_shape=(8, 8), device="cpu")
    for done, _ in gen:
        if done >= 7:
            break
    gen.close()
    import zarr

    from napari_im2im_uq.inference._zarr import DONE, _read_marks

    marks = _read_marks(store, (3, 5, 5))
    np.testing.assert_array_equal(marks, np.asarray(zarr.open_array(store / DONE)[...]))
    assert 7 <= marks.sum() < 75
    steps, arrays = run_all(predict_to_zarr(model, image, store, axes="ZYX", tile_shape=(8, 8),
                                            device="cpu"))
    assert steps[0] == (int(marks.sum()), 75) and steps[-1] == (75, 75)
    whole = untiled(model, image, "ZYX")
    np.testing.assert_allclose(arrays["upper"][...], whole["upper"], atol=1e-5)


def test_a_slice_of_a_huge_lazy_prediction_builds_its_blocks_only(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    _, built = _count_waves(monkeypatch)
    tile = 8
    # a zarr input (dask's from_array keeps an old-style task: HighLevelGraph.cull then asks
    # every layer for its keys) of 10^5 blocks, never written: reads give the fill value
    volume = zarr.open_array(tmp_path / "in.zarr", mode="w", shape=(1000, 10 * tile, 10 * tile),
                             chunks=(1, tile, tile), dtype="float32", fill_value=0.5)
    model = make_model("quantile")
    out = make_plan(model, volume, axes="ZYX", tile_shape=(tile, tile), device="cpu").outputs()
    assert out["prediction"].npartitions == 100_000 and built["blocks"] == 0
    value = out["prediction"][3, :tile, :tile].compute()  # as napari reads a plane's corner
    assert value.shape == (tile, tile)
    assert built["blocks"] <= 2  # the block, built once by the cull (and once by its lookup)
    whole = model(np.full((1, 1, 10 * tile, 10 * tile), 0.5, np.float32))["prediction"]
    np.testing.assert_allclose(value, whole[0, 0, :tile, :tile], atol=1e-5)
