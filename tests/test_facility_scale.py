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
from napari_im2im_uq.inference import _graph, _worker, make_plan  # noqa: E402
from napari_im2im_uq.workflows.apply import read_chunks  # noqa: E402
from test_inference import make_model  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    _worker.clear_cache()
    yield
    torch.set_num_threads(before)


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
