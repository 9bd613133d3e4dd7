"""Facility scale (issue 14): applying a record to a huge lazy prediction costs what it reads.

Structural, not timed: styling the products of a 10^5-block lazy prediction builds the tasks of
the sampled chunks only and enumerates no layer's keys; the chunks computed alone equal the
chunks dask computes; products on class scores split in several chunks are one blockwise layer.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

from dask.blockwise import Blockwise  # noqa: E402

from napari_im2im_uq import api, layers  # noqa: E402
from napari_im2im_uq.calibration._apply import per_pixel  # noqa: E402
from napari_im2im_uq.inference import _graph, make_plan  # noqa: E402
from napari_im2im_uq.workflows import _chunks  # noqa: E402
from napari_im2im_uq.workflows._chunks import read_chunks  # noqa: E402
from test_inference import make_model, one_torch_thread  # noqa: E402, F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _interval_record(seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random((64, 64)).astype(np.float32)
    f = truth + 0.05 * rng.standard_normal(truth.shape).astype(np.float32)
    out = {"prediction": f, "lower": f - 0.05, "upper": f + 0.05}
    return api.calibrate(out, truth, method="intervals", alpha=0.2, rule="crc",
                         tile_shape=(16, 16)).record


def _count_graph_work(monkeypatch):
    """Blocks built by rules, and keys enumerated by any layer (a walk over the whole graph)."""
    counts = {"built": 0, "enumerated": 0}
    real_init = _graph.BlockLayer.__init__
    real_block_keys, real_blockwise_keys = (_graph.BlockLayer.get_output_keys,
                                            Blockwise.get_output_keys)

    def init(self, name, grid, build, helpers=()):
        def counted(index):
            counts["built"] += 1
            return build(index)

        real_init(self, name, grid, counted, helpers)

    def block_keys(self):
        keys = real_block_keys(self)
        counts["enumerated"] += len(keys)
        return keys

    def blockwise_keys(self):
        keys = real_blockwise_keys(self)
        counts["enumerated"] += len(keys)
        return keys

    monkeypatch.setattr(_graph.BlockLayer, "__init__", init)
    monkeypatch.setattr(_graph.BlockLayer, "get_output_keys", block_keys)
    monkeypatch.setattr(Blockwise, "get_output_keys", blockwise_keys)
    return counts


def test_applying_to_a_huge_lazy_prediction_builds_the_sampled_chunks_only(tmp_path,
                                                                           monkeypatch):
    counts = _count_graph_work(monkeypatch)
    tile = 8
    # a zarr input of 10^5 blocks, never written (reads give the fill value)
    volume = zarr.open_array(tmp_path / "in.zarr", mode="w", shape=(1000, 10 * tile, 10 * tile),
                             chunks=(1, tile, tile), dtype="float32", fill_value=0.5)
    out = make_plan(make_model("quantile"), volume, axes="ZYX", tile_shape=(tile, tile),
                    device="cpu").outputs()
    assert out["prediction"].npartitions == 100_000 and counts["built"] == 0
    shown = api.apply_record(_interval_record(), out, check_drift=False, show_bounds=True)
    assert [kw["name"].split(" (")[0] for _, kw, _ in shown] == [
        "interval width", "calibrated lower", "calibrated upper"]
    # the width and the two bounds sample SAMPLE_CHUNKS chunks each: their blocks' tasks are
    # built (a handful of rule layers per block), no layer lists its 10^5 keys
    assert counts["enumerated"] == 0
    assert 0 < counts["built"] <= 3 * layers.SAMPLE_CHUNKS * len(shown)
    for data, kwargs, _ in shown:
        assert hasattr(data, "dask")  # nothing computed whole
        assert kwargs["contrast_limits"][0] < kwargs["contrast_limits"][1]


@pytest.mark.parametrize("seed", range(20))
def test_read_chunks_equals_the_chunks_dask_computes(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(v) for v in rng.integers(1, 12, size=ndim))
    chunks = tuple(int(rng.integers(1, s + 1)) for s in shape)
    x = da.from_array(rng.random(shape), chunks=chunks)
    y = (x * 2 - x[..., ::-1] if ndim else x) + rng.random()  # blockwise and a moved slice
    grid = y.numblocks
    picks = rng.choice(int(np.prod(grid)), size=min(3, int(np.prod(grid))), replace=False)
    indices = [tuple(int(v) for v in np.unravel_index(int(i), grid)) for i in picks]
    got = read_chunks(y, indices)
    for idx, chunk in zip(indices, got, strict=True):
        np.testing.assert_array_equal(chunk, y.blocks[idx].compute())
    assert read_chunks(y, []) == []


@pytest.mark.parametrize("seed", range(10))
def test_product_limits_are_the_same_through_read_chunks_and_the_culled_graph(seed):
    rng = np.random.default_rng(seed)
    x = da.from_array(rng.random((3, 40, 40)), chunks=(1, int(rng.integers(5, 40)), 16))
    width = x * 0.1 + 0.01
    assert layers._product_limits(width) == layers._product_limits(width,
                                                                   read_chunks=read_chunks)
    style = layers.product_style("width", width, read_chunks=read_chunks)
    assert style["contrast_limits"] == layers._product_limits(width)


@pytest.mark.parametrize("seed", range(10))
def test_per_pixel_on_class_chunks_is_one_blockwise_layer_equal_to_numpy(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    scores = rng.random((k, 2, 9, 11))
    chunks = (int(rng.integers(1, k + 1)), 1, int(rng.integers(1, 10)), int(rng.integers(1, 12)))
    lazy = da.from_array(scores, chunks=chunks)
    got = per_pixel(lambda s: s.argmax(axis=0).astype(np.int16), lazy, dtype=np.int16)
    new = [n for n in got.dask.layers if n not in lazy.dask.layers]
    assert len(new) == 1 and isinstance(got.dask.layers[new[0]], Blockwise)
    assert got.chunks == lazy.chunks[1:]
    np.testing.assert_array_equal(got.compute(), scores.argmax(axis=0).astype(np.int16))


# -------------------------------------------------- the drift check on lazy outputs: a sample
from napari_im2im_uq.calibration import methods  # noqa: E402
from napari_im2im_uq.workflows import drift as wdrift  # noqa: E402
from napari_im2im_uq.workflows._reads import ReadCounter  # noqa: E402
from napari_im2im_uq.workflows.tiles import calibration_tiles  # noqa: E402
from test_drift import _all_outputs  # noqa: E402

_KWARGS = {"intervals": {"alpha": 0.2, "rule": "crc"},
           "trust_mask": {"alpha": 0.5, "data_range": (0.0, 1.0)},
           "mask": {"alpha": 0.3, "rule": "crc", "data_range": (0.0, 1.0)},
           "segmentation": {"alpha": 0.3, "rule": "crc"}}


def _need(method):
    return methods.get(method).needs + (("std",) if method == "trust_mask" else ())


def _calibrated(method):
    outputs, truth = _all_outputs(seed=0, planes=2)
    if method == "segmentation":
        truth = (truth < 0.45).astype(np.uint8) + 1
    image = outputs["prediction"][:, ::2, ::2] if method == "intervals" else None
    return api.calibrate({k: outputs[k] for k in _need(method)}, truth, method=method,
                         tile_shape=(32, 32), image=image, **_KWARGS[method]).record


def _lazy(arrays, chunks):
    return {k: da.from_array(v, chunks=(v.shape[0], *chunks) if v.ndim == 4 else chunks)
            for k, v in arrays.items()}


@pytest.mark.parametrize("method", ["intervals", "trust_mask", "mask", "segmentation"])
def test_drift_on_lazy_outputs_read_whole_equals_the_in_memory_check(method):
    record = _calibrated(method)
    half, _ = _all_outputs(seed=10, planes=3, shift_from=2)
    half = {k: half[k] for k in _need(method)}
    image = half["prediction"][:, ::2, ::2] if method == "intervals" else None
    want, (want_map, _, _) = api.check_drift(record, half, image=image)
    # awkward chunks: tiles straddle chunks, the class axis in several chunks
    lazy = _lazy(half, (1, 45, 70))
    if "probabilities" in lazy:
        lazy["probabilities"] = lazy["probabilities"].rechunk((1, 1, 45, 70))
    lazy_image = None if image is None else da.from_array(image, chunks=(2, 17, 40))
    got, (got_map, _, _) = api.check_drift(record, lazy, image=lazy_image, max_tiles=10**6)
    assert "sampled" not in got and got["message"] == want["message"]
    assert got["p_value"] == want["p_value"] and got["whole"] == want["whole"]
    assert got["regions"] == want["regions"]
    np.testing.assert_array_equal(got_map, want_map)


@pytest.mark.parametrize("at_once", [1, 5, 32])
def test_a_sampled_drift_check_reads_each_chunk_under_the_sample_once(monkeypatch, at_once):
    monkeypatch.setattr(_chunks, "CHUNKS_AT_ONCE", at_once)
    record = _calibrated("intervals")
    half, _ = _all_outputs(seed=10, planes=4, shift_from=2)
    counter = ReadCounter()
    lazy = {k: counter.wrap(da.from_array(half[k], chunks=(1, 64, 64)), k)
            for k in ("prediction", "lower", "upper")}
    steps = []
    verdict, (data, _, _) = api.check_drift(record, lazy, max_tiles=40, seed=3,
                                            progress=lambda *s: steps.append(s))
    assert verdict["sampled"] == {"tiles": 40, "of": 4 * 8 * 8, "seed": 3}
    assert "Checked on 40 random tiles of 256 (seed 3" in verdict["message"]
    assert "the map covers the planes holding a sampled tile only" in verdict["message"]
    origins, _ = wdrift._sample_origins((4, 256, 256), (32, 32), 40, 3)
    under = {(int(z), int(r) // 64, int(c) // 64) for z, r, c in origins}  # a tile in a chunk
    for k in lazy:
        assert counter.passes(k) == 1 and counter.reads(k) == len(under), k
    assert steps[-1] == (40, 40)
    # the contrast shift of planes 2 and 3 is found; the map marks whole sampled planes
    assert verdict["drifted"] and [r["drifted"] for r in verdict["regions"]] == [
        False, False, True, True]
    assert data.shape == (4, 8, 8) and data[:2].max() == 0 and data[2:].min() == 1


def test_a_sampled_map_marks_only_blocks_holding_a_sampled_tile():
    record = _calibrated("intervals")
    half, _ = _all_outputs(seed=10, planes=2, shift_from=1)
    lazy = _lazy({k: half[k] for k in ("prediction", "lower", "upper")}, (1, 128, 128))
    verdict, (data, _, _) = api.check_drift(record, lazy, regions=2, max_tiles=12, seed=1)
    origins, _ = wdrift._sample_origins((2, 256, 256), (32, 32), 12, 1)
    blocks = {(int(z), int(r) // 64, int(c) // 64) for z, r, c in origins}
    marked = {(z, i // 2, j // 2) for z, i, j in zip(*np.nonzero(data), strict=True)}
    assert marked <= blocks and "blocks of 2 x 2 tiles holding a sampled tile" in (
        verdict["message"])
    for z, bi, bj in blocks:  # a block is marked whole or not at all
        block = data[z, 2 * bi:2 * bi + 2, 2 * bj:2 * bj + 2]
        assert block.min() == block.max()


@pytest.mark.parametrize("seed", range(30))
def test_sampled_origins_are_whole_calibration_tiles_drawn_without_repeats(seed):
    rng = np.random.default_rng(seed)
    grid = (int(rng.integers(1, 4)), int(rng.integers(1, 90)), int(rng.integers(1, 90)))
    tile = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
    every = calibration_tiles(grid, tile)
    cap = int(rng.integers(1, 60))
    got, total = wdrift._sample_origins(grid, tile, cap, seed)
    assert total == len(every) and len(got) == min(cap, total)
    rows = {tuple(o) for o in every.tolist()}
    assert {tuple(o) for o in got.tolist()} <= rows and len({tuple(o) for o in got.tolist()}) == len(got)
    if total <= cap:
        np.testing.assert_array_equal(got, every)
    else:
        np.testing.assert_array_equal(got, np.array(sorted(got.tolist())).reshape(-1, 3))
    with pytest.raises(ValueError, match="max_tiles must be a positive int"):
        wdrift._sample_origins(grid, tile, 0, seed)


# ---------------------------------------- `napari-im2im-uq apply`: block tasks built per wave
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A complete prediction store of 4 x 64 x 64 in blocks of 16 x 16, and a record."""
    from napari_im2im_uq._jobs import run_to_end
    from napari_im2im_uq.inference import predict_to_zarr

    folder = tmp_path_factory.mktemp("facility_cli")
    image = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    path = folder / "pred.zarr"
    run_to_end(predict_to_zarr(make_model("quantile"), image, str(path), axes="ZYX",
                               tile_shape=(16, 16), device="cpu"))
    return folder, path, image, _interval_record()


def test_cli_apply_plans_no_block_and_builds_a_wave_at_a_time(small_store, monkeypatch):
    import shutil

    from napari_im2im_uq._cli_calibration import _apply_job
    from napari_im2im_uq._jobs import run_to_end
    from napari_im2im_uq.inference import _executor

    folder, path, _, record = small_store
    store = folder / "waves.zarr"
    shutil.copytree(path, store)
    monkeypatch.setattr(_executor, "WAVE", 8)
    counts = _count_graph_work(monkeypatch)
    job = _apply_job(record, store, bounds=True, drift=False, scheduler=None)
    assert next(job) == (0, 64)
    assert counts["built"] <= 3 * layers.SAMPLE_CHUNKS * 3  # the styles' samples only
    before = counts["built"]
    for done, _ in job:
        if done >= 3:
            job.close()
            break
    # the first wave's block tasks were built (8), not the store's 64
    assert counts["built"] - before <= 2 * _executor.FIRST_WAVE
    steps = []
    run_to_end(_apply_job(record, store, bounds=True, drift=False, scheduler=None),
               callback=steps.append)
    assert 3 <= steps[0][0] < 64 and steps[-1] == (64, 64)
    whole = api.apply_record(record, {k: np.asarray(v) for k, v in
                                      _read_store(path).items()}, show_bounds=True,
                             check_drift=False)
    width = np.asarray(zarr.open_array(store=str(store / "calibrated/interval_width/0")))
    np.testing.assert_array_equal(width, whole[0][0])


def _read_store(path):
    from napari_im2im_uq.inference._store import read_outputs

    return {k: v for k, v in read_outputs(path).items() if k in ("prediction", "lower", "upper")}


def test_cli_apply_refuses_an_interrupted_prediction_and_says_what_is_missing(small_store,
                                                                              capsys):
    from napari_im2im_uq.cli import main
    from napari_im2im_uq.inference import predict_to_zarr

    folder, _, image, record = small_store
    store = folder / "interrupted.zarr"
    gen = predict_to_zarr(make_model("quantile"), image, str(store), axes="ZYX",
                          tile_shape=(16, 16), device="cpu")
    for done, _ in gen:
        if done >= 5:
            break
    gen.close()
    from napari_im2im_uq.inference._zarr import _read_marks

    written = int(_read_marks(store, (4, 4, 4)).sum())
    path = folder / "record.json"
    import json

    path.write_text(json.dumps(record))
    assert main(["apply", str(path), str(store), "--no-progress", "--no-drift"]) != 0
    err = capsys.readouterr().err
    assert f"{written} of 64 blocks are written, {64 - written} missing" in err
    assert "run the same `napari-im2im-uq predict` command again" in err
    assert "on a grid of (4, 4, 4)" in err
    assert not (store / "calibrated").exists()


@pytest.mark.parametrize("seed", range(40))
def test_tile_reader_equals_slicing_the_whole_array(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(_chunks, "CHUNKS_AT_ONCE", int(rng.integers(1, 6)))
    planes = int(rng.integers(1, 4))
    f = int(rng.choice([1, 2]))
    tile = (f * int(rng.integers(1, 5)), f * int(rng.integers(1, 5)))
    grid = (planes, f * int(rng.integers(3, 12)), f * int(rng.integers(3, 12)))
    every = calibration_tiles(grid, tile)
    origins = every[np.sort(rng.choice(len(every), size=min(len(every), 7), replace=False))]
    k = int(rng.integers(1, 4))
    flat = planes == 1 and bool(rng.integers(2))  # a 2-D output
    spatial_shape = grid[1:] if flat else grid
    whole = {"a": rng.random(spatial_shape), "s": rng.random((k, *spatial_shape)),
             "i": rng.random((grid[1] // f, grid[2] // f) if flat else
                             (planes, grid[1] // f, grid[2] // f))}

    def chunks_of(shape):
        return tuple(int(rng.integers(1, n + 1)) for n in shape)

    arrays = {"a": (da.from_array(whole["a"], chunks=chunks_of(whole["a"].shape)), False),
              "s": (da.from_array(whole["s"], chunks=chunks_of(whole["s"].shape)), True),
              "i": (da.from_array(whole["i"], chunks=chunks_of(whole["i"].shape)), False)}
    got = _chunks.TileReader(arrays, origins, tile, factor={"i": f}).take(
        np.arange(len(origins)))
    th, tw = tile
    a3 = whole["a"][None] if flat else whole["a"]
    s4 = whole["s"][:, None] if flat else whole["s"]
    i3 = whole["i"][None] if flat else whole["i"]
    want = {"a": np.stack([a3[z, r:r + th, c:c + tw] for z, r, c in origins]),
            "s": np.stack([s4[:, z, r:r + th, c:c + tw] for z, r, c in origins]),
            "i": np.stack([i3[z, r // f:(r + th) // f, c // f:(c + tw) // f]
                           for z, r, c in origins])}
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
