"""Throughput defaults of tiled inference (issue 14): tile sizes, even tiles, channels-last.

Exactness: with the default tiles spread evenly over random geometries, the tiled prediction
equals the whole-image model within float32 rounding; :func:`_tiles.balanced` equals a slow
search (the smallest multiple of the divisor that needs no more tiles than the default side);
the channels-last copy that runs tiles on the CPU gives the contiguous layout's outputs
within rounding and never changes the caller's model. Speed is measured in
``benchmarks/bench_inference.py``, not here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dask  # noqa: E402

from napari_im2im_uq.inference import _predict, _tiles, predict  # noqa: E402
from napari_im2im_uq.models import read_spec  # noqa: E402
from test_inference import make_model, one_torch_thread, untiled  # noqa: E402, F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _slow_balanced(size, side, divisor):
    """The smallest multiple of ``divisor`` that cuts ``size`` into no more tiles than ``side``."""
    wanted = math.ceil(size / side)
    t = divisor
    while math.ceil(size / t) > wanted:
        t += divisor
    return t


def test_balanced_equals_a_slow_search():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        size, side = int(rng.integers(1, 3000)), int(rng.integers(1, 1500))
        div = int(rng.choice([1, 2, 4, 8, 16]))
        got = _tiles.balanced(size, side, div)
        assert got == _slow_balanced(size, side, div), (size, side, div)
        assert got % div == 0 and got <= -(-side // div) * div
        n = math.ceil(size / got)
        assert size - (n - 1) * got > got - n * div  # the last tile is not a thin remainder


@pytest.mark.parametrize("name", ["tem-sr4x-quantile", "tem-membrane-seg"])
def test_default_tiles_keep_the_halo_small_on_the_cpu_and_grow_on_a_gpu(name):
    spec = read_spec(name)
    kwargs, s, halo = spec["kwargs"], int(spec.get("scale_factor", 1)), int(spec["halo"])
    div = 2 ** int(kwargs["depth"]) if "depth" in kwargs else 1
    cpu = _tiles.tile_side_from_spec(spec, "cpu")
    gpu = _tiles.tile_side_from_spec(spec, "cuda")
    assert cpu % div == 0 and gpu % div == 0
    assert gpu >= cpu >= max(_tiles.MIN_TILE, 4 * halo)
    budget = lambda t: (t + 2 * halo) ** 2 * _tiles._bytes_per_pixel(kwargs, s)  # noqa: E731
    assert budget(cpu - div) <= _tiles.TILE_BUDGET["cpu"]
    assert budget(gpu - div) <= _tiles.TILE_BUDGET["gpu"]
    # on the CPU: either the halo costs at most HALO_OVERHEAD, or the budget stopped it
    overhead = (cpu + 2 * halo) ** 2 / cpu**2 - 1
    assert overhead <= _tiles.HALO_OVERHEAD + 1e-9 or budget(cpu + div) > _tiles.TILE_BUDGET["cpu"]
    # and no larger than that needs (a larger CPU tile costs memory, not time)
    smaller = cpu - div
    if smaller >= max(_tiles.MIN_TILE, 4 * halo):
        assert (smaller + 2 * halo) ** 2 / smaller**2 - 1 > _tiles.HALO_OVERHEAD - 1e-9


def test_the_estimate_of_an_srnet_is_within_two_of_the_measured_peaks():
    spec = read_spec("tem-sr4x-quantile")
    estimate = _tiles._bytes_per_pixel(spec["kwargs"], 4)
    assert 650 <= estimate <= 2 * 880  # measured 650-880 bytes per input pixel (see docstring)


@pytest.mark.parametrize("seed", range(12))
def test_even_default_tiles_equal_the_whole_image_on_random_geometries(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    heuristic = ["quantile", "segmentation", "gaussian"][seed % 3]
    scale = int(rng.choice([1, 2]))
    model = make_model(heuristic, scale=scale, seed=seed)
    side = int(rng.integers(4, 40))
    monkeypatch.setattr(_predict, "default_tile_side", lambda m, d="cpu": side)
    planes, rows, cols = int(rng.integers(1, 3)), int(rng.integers(5, 70)), int(rng.integers(5, 70))
    image = rng.random((planes, rows, cols), dtype=np.float32)
    out = predict(model, image, axes="ZYX", device="cpu")
    plan_tile = _predict._default_tile(model, rows, cols, None, "cpu")
    div = model.divisor
    assert plan_tile == (_tiles.balanced(rows, side, div), _tiles.balanced(cols, side, div))
    got = dask.compute(out)[0]
    ref = untiled(model, image, "ZYX")
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=2e-5, err_msg=name)


def test_a_given_tile_shape_is_kept():
    model = make_model("quantile")
    assert _predict._default_tile(model, 100, 90, (24, 40), "cpu") == (24, 40)
    assert _predict._default_tile(model, 10, 9, (24, 40), "cpu") == (12, 12)  # image, rounded up
