"""Applying a calibration is lazy: dask in, dask out, block by block, equal to the numpy path."""

from __future__ import annotations

import numpy as np
import pytest

from napari_im2im_uq import api, layers

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

SHAPE = (96, 96)
VOLUME = (3, 96, 96)
CHUNKS = (1, 32, 32)


def _outputs(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape).astype(np.float32)
    f = truth + 0.05 * rng.standard_normal(shape).astype(np.float32)
    width = 0.03 + 0.06 * rng.random(shape).astype(np.float32)
    labels = rng.integers(1, 4, size=shape)
    logits = rng.normal(size=(3, *shape)) + 2.0 * np.moveaxis(np.eye(3)[labels - 1], -1, 0)
    p = (np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float32)
    return {"prediction": f, "lower": f - width, "upper": f + width,
            "mask": rng.random(shape).astype(np.float32), "probabilities": p}, truth, labels


def _records():
    out, truth, labels = _outputs()
    iv = {k: out[k] for k in ("prediction", "lower", "upper")}
    return {
        "intervals": api.calibrate(iv, truth, method="intervals", alpha=0.2, rule="crc",
                                   tile_shape=(16, 16)).record,
        "trust_mask": api.calibrate(iv, truth, method="trust_mask", alpha=0.3, sigma="width",
                                    data_range=(-1, 2), tile_shape=(16, 16)).record,
        "mask": api.calibrate({"mask": out["mask"], "prediction": out["prediction"]}, truth,
                              method="mask", alpha=0.05, beta=0.8, tile_shape=(16, 16)).record,
        "segmentation": api.calibrate({"probabilities": out["probabilities"]}, labels,
                                      method="segmentation", alpha=0.2, rule="crc",
                                      tile_shape=(16, 16)).record,
    }


@pytest.fixture(scope="module")
def records():
    return _records()


class Counting(zarr.storage.LocalStore):
    """A local store that records every key read (the chunks a computation touched)."""

    def __init__(self, root, *, read_only=True, reads=None):
        super().__init__(root, read_only=read_only)
        self.reads = [] if reads is None else reads

    def with_read_only(self, read_only=False):
        return type(self)(self.root, read_only=read_only, reads=self.reads)

    async def get(self, key, prototype=None, byte_range=None):
        self.reads.append(key)
        return await super().get(key, prototype, byte_range)


def _volume_store(tmp_path):
    """The outputs of a 3-plane volume in a zarr store (class axis first), opened lazily."""
    planes = [_outputs(seed=10 + z)[0] for z in range(VOLUME[0])]
    whole = {k: np.stack([p[k] for p in planes], axis=-3 if k != "probabilities" else 1)
             for k in planes[0]}
    root = zarr.open_group(store=str(tmp_path / "v.zarr"), mode="w")
    for name, arr in whole.items():
        chunks = CHUNKS if arr.ndim == 3 else (3, *CHUNKS)
        root.create_array(name, shape=arr.shape, chunks=chunks, dtype=arr.dtype)[...] = arr
    store = Counting(str(tmp_path / "v.zarr"))
    group = zarr.open_group(store=store, mode="r")
    lazy = {k: da.from_zarr(group[k]) for k in whole}
    return whole, lazy, store


def _inputs(record, outputs):
    name = record["calibration"]["method"]
    keys = {"intervals": ("prediction", "lower", "upper"),
            "trust_mask": ("prediction", "lower", "upper"),
            "mask": ("mask", "prediction"), "segmentation": ("probabilities",)}[name]
    return {k: outputs[k] for k in keys}


@pytest.mark.parametrize("method", ["intervals", "trust_mask", "mask", "segmentation"])
def test_a_zarr_backed_prediction_gives_dask_layers_equal_to_the_numpy_ones(
        records, tmp_path, method):
    whole, lazy, store = _volume_store(tmp_path)
    record = records[method]
    eager = api.apply_record(record, _inputs(record, whole), show_bounds=True,
                             check_drift=False)
    store.reads.clear()
    shown = api.apply_record(record, _inputs(record, lazy), show_bounds=True, check_drift=False)
    # building the layers (styles included) reads at most the sampled chunks of each product
    assert len([k for k in store.reads if "/c/" in k]) <= (
        layers.SAMPLE_CHUNKS * len(shown) * 3)
    assert [kw["name"] for _, kw, _ in shown] == [kw["name"] for _, kw, _ in eager]
    for (lz, kw, kind), (ev, ekw, ekind) in zip(shown, eager, strict=True):
        assert isinstance(ev, np.ndarray), kw["name"]
        assert hasattr(lz, "dask"), kw["name"]  # lazy, not computed
        assert kind == ekind and lz.shape == ev.shape and lz.dtype == ev.dtype
        np.testing.assert_array_equal(np.asarray(lz), ev, err_msg=kw["name"])
        for key in ("colormap", "visible", "opacity", "blending"):
            assert (key in kw) == (key in ekw)


@pytest.mark.parametrize("method", ["intervals", "trust_mask", "mask", "segmentation"])
def test_one_plane_of_a_calibrated_layer_reads_only_that_planes_chunks(
        records, tmp_path, method):
    _, lazy, store = _volume_store(tmp_path)
    record = records[method]
    shown = api.apply_record(record, _inputs(record, lazy), show_bounds=True, check_drift=False)
    for data, kwargs, _ in shown:
        store.reads.clear()
        np.asarray(data[1])  # what napari computes to show plane 1
        chunks = [k for k in store.reads if "/c/" in k]
        assert chunks, kwargs["name"]
        # chunk keys: <array>/c/<z>/<row>/<col> or <array>/c/<class>/<z>/<row>/<col>
        planes = {int(k.split("/c/")[1].split("/")[-3]) for k in chunks}
        assert planes == {1}, (kwargs["name"], sorted(chunks))
        n_arrays = len({k.split("/c/")[0] for k in chunks})
        assert len(chunks) == n_arrays * 9  # the 3 x 3 chunks of one plane, once each


def test_numpy_outputs_give_the_arithmetic_of_the_kernels(records):
    out, _, _ = _outputs(seed=5)
    from napari_im2im_uq.calibration import CalibrationResult

    rec = records["intervals"]
    res = CalibrationResult.from_dict(rec["calibration"])
    (width, kw, _), = api.apply_record(rec, _inputs(rec, out), check_drift=False)
    lo, up = res.intervals(out["prediction"], out["lower"], out["upper"])
    np.testing.assert_array_equal(width, (up - lo).astype(np.float32))
    assert kw["contrast_limits"] == layers.robust_limits(width)

    rec = records["segmentation"]
    res = CalibrationResult.from_dict(rec["calibration"])
    seg, size, var = (d for d, _, _ in api.apply_record(rec, _inputs(rec, out),
                                                         check_drift=False))
    p = out["probabilities"]
    np.testing.assert_array_equal(seg, p.argmax(axis=0) + 1)
    sets = np.asarray(res.prediction_sets(p[None]))[0]
    np.testing.assert_array_equal(size, sets.sum(axis=0))
    np.testing.assert_array_equal(var, (sets.sum(axis=0) / 3).astype(np.float32))


def test_the_style_of_a_lazy_product_computes_a_bounded_sample(tmp_path):
    arr = np.random.default_rng(0).random((8, 64, 64)).astype(np.float32)
    root = zarr.open_group(store=str(tmp_path / "s.zarr"), mode="w")
    root.create_array("w", shape=arr.shape, chunks=(1, 16, 16), dtype=arr.dtype)[...] = arr
    store = Counting(str(tmp_path / "s.zarr"))
    lazy = da.from_zarr(zarr.open_group(store=store, mode="r")["w"])
    for role in ("width", "bound"):
        store.reads.clear()
        style = layers.product_style(role, lazy)
        lo, hi = style["contrast_limits"]
        assert 0.0 <= lo < 0.1 and 0.9 < hi <= 1.0
        assert len([k for k in store.reads if "/c/" in k]) == layers.SAMPLE_CHUNKS
