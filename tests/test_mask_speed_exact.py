"""Issue 14: the mask method sorts the pixels once and reads every answer off that sort.

The orders it sorts by (32-bit masks: by the mask's bits, per tile as integer keys, pooled by
radix passes; else a stable argsort per tile, or a radix sort of the breakpoints' bits) are
compared with a stable argsort of the breakpoints; the calibrations with the frozen previous core
(``tests/_calibration_old``: lam_hat and the empirical risk identical, the curve within
1e-12) on many small random cases: mask dtypes float32 / float16 / float64 / bool, masks with
many ties, tiny values whose breakpoints round together, -0.0, float64 holding float32 values,
valid masks, every rule and distance.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from _calibration_old import mask as old_mask
from napari_im2im_uq.calibration import calibrate_mask
from napari_im2im_uq.calibration.mask import (
    _mask_bits,
    _order_keys,
    _pooled_order,
    _PooledTiles,
    _radix_order,
    _SortedTiles,
    _ties_agree,
    masked_distortion_curve,
)
from napari_im2im_uq.workflows._reads import ReadCounter

SEEDS = range(10)
CASES = [(rule, d) for rule in ("conformal", "crc", "paper") for d in ("l1", "l2")]


def tiles(seed, *, n=40, side=6, kind="float32"):
    """Mask scores of ``kind`` with ties (clipped at 0 and 1), prediction and truth."""
    rng = np.random.default_rng(seed)
    f = rng.random((n, side, side))
    s = 0.02 + 0.1 * rng.random((n, side, side))
    y = np.clip(f + s * rng.standard_normal((n, side, side)), 0, 1)
    m = np.clip(1.3 - 8 * s * np.exp(0.4 * rng.standard_normal(s.shape)), 0, 1)
    if kind == "bool":
        m = m > 0.5
    elif kind == "tiny":  # distinct float32 values whose breakpoints round to one float64
        m = m.astype(np.float32)
        m[:, 0, :3] = np.array([1e-30, 2e-30, 0.0], np.float32)
        m[::3, 1, 1] = np.float32(-0.0)
    elif kind == "tiny_across":  # the same, in two tiles: only the pooled order needs care
        m = np.maximum(m, 0.01).astype(np.float32)  # no 0 in a tile with a tiny value
        m[:2, 0, 0] = np.array([1e-30, 2e-30], np.float32)
    elif kind == "float64_of_32":  # a float32 output upcast: float32's bits still order it
        m = m.astype(np.float32).astype(np.float64)
    elif kind == "negzero":
        m = m.astype(np.float32)
        m[m == 0] = np.float32(-0.0)
    else:
        m = m.astype(kind)
    return m, f.astype(np.float32), y.astype(np.float32)


def _kwargs(rule, distance, seed):
    kw = dict(alpha=(0.02, 0.03, 0.05)[seed % 3] / (1 if distance == "l1" else 10), beta=0.8,
              rule=rule, distance=distance, data_range=(0, 1))
    if rule == "crc":  # B = 1 would need far more tiles at these alphas
        kw.update(data_range=None, loss_bound=0.5 if distance == "l1" else 0.05)
    return kw


def same_as_old(m, f, y, valid=None, **kw):
    new = calibrate_mask(m, f, y, valid=valid, **kw)
    old = old_mask.calibrate_mask(m, f, y, valid=valid, **kw)
    assert new.lam == old.lam
    assert new.empirical_risk == old.empirical_risk
    assert new.curve["lam"] == old.curve["lam"]
    np.testing.assert_allclose(new.curve["risk"], old.curve["risk"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(new.curve["bound"], old.curve["bound"], rtol=1e-12, atol=1e-15)
    return new


@pytest.mark.parametrize("kind", ["float32", "float16", "float64", "float64_of_32", "bool", "tiny",
                                  "tiny_across", "negzero"])
def test_orders_are_the_stable_order_of_the_breakpoints(kind):
    for seed in SEEDS:
        m, f, y = tiles(seed, kind=kind)
        st = _SortedTiles(m, f, y, None, distance="l1", eps=1e-3)
        assert st.sorted_by == ("argsort" if kind in ("float64", "tiny") else "mask bits")
        b = (1e-3 + 1.0 - m.astype(np.float64)).reshape(len(m), -1)
        np.testing.assert_array_equal(st.flat % b.shape[1],
                                      np.argsort(b, axis=1, kind="stable"))
        ref = np.argsort(b.ravel(), kind="stable")
        flat, bs = _pooled_order(m, b)
        np.testing.assert_array_equal(flat, ref)
        np.testing.assert_array_equal(bs, b.ravel()[ref])
        bits = _mask_bits(m)
        if bits is not None:  # the mask's bits are used unless b ties where m does not
            agree = _ties_agree(b.ravel()[ref], bits.ravel()[ref])
            assert agree == (kind not in ("tiny", "tiny_across"))


def test_radix_order_is_a_stable_argsort():
    rng = np.random.default_rng(0)
    for seed in range(40):
        dtype, width = ((np.uint32, 32), (np.uint64, 64))[seed % 2]
        size = int(rng.integers(1, 3000))
        top = int(rng.choice([2, 300, 70000, 2**31]))  # many ties, and digits always 0
        x = rng.integers(0, top, size=size).astype(dtype) << dtype(int(rng.integers(0, 17)))
        np.testing.assert_array_equal(_radix_order(x, width), np.argsort(x, kind="stable"))
    np.testing.assert_array_equal(_radix_order(np.zeros(5, np.uint32), 32), np.arange(5))


def test_keys_only_for_narrow_masks():
    wide = np.full((2, 3, 3), 0.1)  # 0.1 in float64 is not a float32 value
    assert _order_keys(wide) is None and _mask_bits(wide) is None  # a stable argsort instead
    assert _mask_bits(np.full((2, 3, 3), np.float32(0.1)).astype(np.float64)) is not None
    m = np.array([[[2e-30, 1e-30, 0.5]]], np.float32)  # 1 + eps - m: one value for 1e-30, 2e-30
    keys = np.sort(_order_keys(m), axis=1)
    b = (1e-3 + 1.0 - m.astype(np.float64)).reshape(1, -1)
    flat = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
    assert not _ties_agree(b.ravel()[flat], keys >> np.uint64(32))


@pytest.mark.parametrize(("rule", "distance"), CASES)
@pytest.mark.parametrize("kind", ["float32", "float64", "float64_of_32", "tiny", "tiny_across",
                                  "bool"])
def test_identical_to_the_previous_implementation(rule, distance, kind):
    for seed in SEEDS:
        m, f, y = tiles(seed, kind=kind)
        same_as_old(m, f, y, **_kwargs(rule, distance, seed))


@pytest.mark.parametrize(("rule", "distance"), CASES)
def test_identical_with_valid_pixels(rule, distance):
    for seed in SEEDS:
        m, f, y = tiles(seed)
        valid = np.random.default_rng(100 + seed).random(m.shape) > 0.4
        valid[:, 0, 0] = True
        same_as_old(m, f, y, valid=valid, **_kwargs(rule, distance, seed))


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("distance", ["l1", "l2"])
@pytest.mark.parametrize("with_valid", [False, True])
def test_curve_and_point_on_the_sorted_tiles_are_the_direct_distortion(pooled, distance,
                                                                      with_valid):
    m, f, y = tiles(3, n=30)
    valid = None
    if with_valid:
        valid = np.random.default_rng(7).random(m.shape) > 0.3
        valid[:, 0, 0] = True
    st = (_PooledTiles if pooled else _SortedTiles)(m, f, y, valid, distance=distance, eps=1e-3)
    b = np.unique(1e-3 + 1.0 - m.astype(np.float64))
    grid = np.unique(np.concatenate([np.linspace(0, 1.2, 17), b[:: max(1, b.size // 20)]]))
    direct = masked_distortion_curve(m, f, y, grid, distance=distance, valid=valid)
    np.testing.assert_allclose(st.on_grid(grid), direct, rtol=1e-12, atol=1e-15)
    for lam in (0.0, 0.37, float(b[len(b) // 2]), 2.0, np.inf):  # the same operations: equal
        point = masked_distortion_curve(m, f, y, [lam], distance=distance, valid=valid)[:, 0]
        np.testing.assert_array_equal(st.at(lam), point)


@pytest.mark.parametrize("rule", ["conformal", "crc"])
def test_float32_lazy_inputs_read_once_and_same_result(rule):
    m, f, y = tiles(5, n=64)
    counter = ReadCounter()
    wrapped = [counter.wrap(da.from_array(a, chunks=(16,) + a.shape[1:]), f"a{i}")
               for i, a in enumerate((m, f, y))]
    kw = dict(alpha=0.03, beta=0.8, rule=rule, data_range=(0, 1))
    with dask.config.set(scheduler="synchronous"):
        res = calibrate_mask(*wrapped, **kw)
    assert counter.passes() == 1
    ref = same_as_old(m, f, y, **kw)
    assert res.lam == ref.lam and res.empirical_risk == ref.empirical_risk


@pytest.mark.parametrize(("rule", "passes"), [("conformal", 2), ("crc", 1)])
def test_streamed_lazy_inputs_give_the_in_memory_result(monkeypatch, rule, passes):
    from napari_im2im_uq.calibration import mask as mask_module

    monkeypatch.setattr(mask_module, "_STORE_BYTES", 0)  # too big to keep: streamed by blocks
    m, f, y = tiles(6, n=64)
    counter = ReadCounter()
    wrapped = [counter.wrap(da.from_array(a, chunks=(16,) + a.shape[1:]), f"a{i}")
               for i, a in enumerate((m, f, y))]
    kw = dict(alpha=0.03, beta=0.8, rule=rule, data_range=None, loss_bound=0.5)
    if rule != "crc":
        kw.pop("loss_bound")
    with dask.config.set(scheduler="synchronous"):
        res = calibrate_mask(*wrapped, **kw)
    assert counter.passes() == passes  # crc keeps the pooled pixels: no second read
    ref = calibrate_mask(m, f, y, **kw)
    assert res.lam == ref.lam and res.empirical_risk == ref.empirical_risk
    np.testing.assert_allclose(res.curve["risk"], ref.curve["risk"], rtol=1e-12, atol=1e-15)
