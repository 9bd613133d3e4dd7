"""Issue 14: the whole ``api.calibrate`` on a zarr-backed prediction reads each chunk at most twice.

The outputs and the truth are zarr arrays opened lazily (``da.from_zarr``), wrapped in a
:class:`ReadCounter` exactly as the API receives them; every method is calibrated through the
API and the most reads of any chunk is counted. The tiles are smaller than the chunks, so a
chunk holds several tiles (cut once per chunk, not once per tile), and the result is the same
as on the arrays in memory.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from napari_im2im_uq import api
from napari_im2im_uq.workflows._reads import ReadCounter
from napari_im2im_uq.workflows.calibrate import collect
from napari_im2im_uq.workflows.tiles import cut, cut_many

SIDE, CHUNK, TILE = 96, 48, (16, 16)


def _outputs(seed=0):
    rng = np.random.default_rng(seed)
    shape = (2, SIDE, SIDE)
    f = rng.random(shape).astype(np.float32)
    s = (0.02 + 0.1 * rng.random(shape)).astype(np.float32)
    y = np.clip(f + s * rng.standard_normal(shape).astype(np.float32), 0, 1)
    w = (s * np.exp(0.4 * rng.standard_normal(shape))).astype(np.float32)
    logits = rng.normal(size=(3,) + shape) * 2
    p = (np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float32)
    labels = (p.cumsum(axis=0) < rng.random(shape)).sum(axis=0) + 1
    return {"prediction": f, "lower": f - w, "upper": f + w, "std": w,
            "mask": np.clip(1 - 5 * w, 0, 1), "probabilities": p}, y, labels.astype(np.int32)


def _zarr(tmp_path, name, a, counter):
    chunks = (1, CHUNK, CHUNK) if a.ndim == 3 else (a.shape[0], 1, CHUNK, CHUNK)
    z = zarr.open_array(str(tmp_path / f"{name}.zarr"), mode="w", shape=a.shape, dtype=a.dtype,
                        chunks=chunks)
    z[...] = a
    return counter.wrap(da.from_zarr(str(tmp_path / f"{name}.zarr")), name)


CASES = [("intervals", {"rule": "rcps"}), ("intervals", {"bound": "wsr"}),
         ("intervals", {"rule": "crc"}), ("trust_mask", {"data_range": (0.0, 1.0)}),
         ("mask", {"rule": "conformal", "alpha": 0.05, "data_range": (0.0, 1.0)}),
         ("mask", {"rule": "crc", "alpha": 0.05, "data_range": (0.0, 1.0)}),
         ("segmentation", {"rule": "crc"}), ("segmentation", {"rule": "rcps"})]


@pytest.mark.parametrize(("method", "options"), CASES)
def test_api_calibrate_reads_a_zarr_prediction_at_most_twice(tmp_path, method, options):
    outputs, y, labels = _outputs()
    truth = labels if method == "segmentation" else y
    counter = ReadCounter()
    lazy = {k: _zarr(tmp_path, k, v, counter) for k, v in outputs.items()}
    lazy_truth = _zarr(tmp_path, "truth", truth, counter)
    kw = {"alpha": 0.2, "tile_shape": TILE, **options}
    with dask.config.set(scheduler="threads"):
        cal = api.calibrate(lazy, lazy_truth, method=method, **kw)
    assert cal.result.n == 2 * (SIDE // TILE[0]) ** 2  # 18 tiles in each chunk
    # the record's tile fingerprints cut the truth again, and the products' contrast limits
    # sample a few chunks of the outputs: the second pass
    assert 1 <= counter.passes() <= 2, counter._counts
    ref = api.calibrate(outputs, truth, method=method, **kw)
    assert cal.result.lam == ref.result.lam
    assert cal.result.empirical_risk == ref.result.empirical_risk


@pytest.mark.parametrize(("method", "options"), CASES[::2])
def test_collect_reads_every_chunk_once(tmp_path, method, options):
    outputs, y, labels = _outputs(1)
    counter = ReadCounter()
    lazy = {k: _zarr(tmp_path, k, v, counter) for k, v in outputs.items()}
    truth = _zarr(tmp_path, "truth", labels if method == "segmentation" else y, counter)
    col = collect(lazy, truth, method=method, tile_shape=TILE)
    assert counter.passes() == 1
    read = {name for name, _ in counter._counts}
    assert "truth" in read and len(read) >= 2
    for name in read:  # every chunk of what is read (tiles cover the images), once
        assert counter.mean_passes(name) == 1.0
    assert len(col.origins) == 2 * (SIDE // TILE[0]) ** 2


def test_cut_reads_each_chunk_once_and_equals_numpy():
    rng = np.random.default_rng(3)
    a = rng.random((3, 40, 50))
    b = rng.random((2, 3, 40, 50))
    origins = np.array([[z, r, c] for z in range(3) for r in range(0, 33, 8)
                        for c in range(0, 43, 7)])
    counter = ReadCounter()
    la = counter.wrap(da.from_array(a, chunks=(1, 13, 17)), "a")
    lb = counter.wrap(da.from_array(b, chunks=(2, 1, 20, 20)), "b")
    out = cut_many({"a": (la, False), "b": (lb, True), "c": (a, False)}, origins, (8, 8))
    assert counter.passes() == 1 and counter.reads("a") == 3 * 4 * 3
    np.testing.assert_array_equal(out["a"], cut(a, origins, (8, 8)))
    np.testing.assert_array_equal(out["c"], out["a"])
    np.testing.assert_array_equal(out["b"], cut(b, origins, (8, 8), class_axis=True))
    for z, r, c in origins[::11]:  # against plain slicing
        i = int(np.flatnonzero((origins == (z, r, c)).all(axis=1))[0])
        np.testing.assert_array_equal(out["b"][i], b[:, z, r:r + 8, c:c + 8])
    two_d = cut_many({"x": (da.from_array(a[0], chunks=16), False)}, origins[:5, :], (8, 8))
    np.testing.assert_array_equal(two_d["x"], cut(a[0], origins[:5], (8, 8)))
    empty = cut_many({"x": (la, False)}, np.empty((0, 3), int), (8, 8))
    assert empty["x"].shape == (0, 8, 8)
