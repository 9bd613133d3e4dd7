"""napari_im2im_uq.inference on a dask.distributed cluster: same result, survives a lost worker."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import dask  # noqa: E402

from napari_im2im_uq.inference import (  # noqa: E402
    _worker,  # noqa: E402
    predict,
    predict_to_zarr,
)
from napari_im2im_uq.models import save_model  # noqa: E402
from test_inference import make_model, rand, run_all  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
        memory_limit="1GiB",
    )
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c
    cluster.close()


def _loads(c):
    return c.run(lambda: _worker.cache_info()["loads"])


def test_cluster_result_equals_local_result(client, tmp_path):
    model = make_model("gaussian", scale=2)
    image = rand((2, 30, 34))
    local = dask.compute(predict(model, image, axes="ZYX", tile_shape=(8, 12)), scheduler="threads")[0]
    steps, arrays = run_all(
        predict_to_zarr(
            model, image, tmp_path / "o.zarr", axes="ZYX", tile_shape=(8, 12), scheduler=client
        )
    )
    assert steps[-1] == (2 * 4 * 3, 2 * 4 * 3)
    for name in model.output_names:
        np.testing.assert_allclose(arrays[name][...], local[name], rtol=0, atol=1e-6)
    # The model object travelled once per worker (by its bytes) and was loaded once there.
    assert all(n <= 1 for n in _loads(client).values())
    # A bundle given by path, and a scheduler given by address.
    bundle = save_model(model, tmp_path / "bundle")
    steps, arrays = run_all(
        predict_to_zarr(
            bundle,
            image,
            tmp_path / "p.zarr",
            axes="ZYX",
            tile_shape=(8, 12),
            scheduler=client.scheduler.address,
        )
    )
    np.testing.assert_allclose(arrays["std"][...], local["std"], rtol=0, atol=1e-6)
    # The lazy arrays of predict() run on the cluster too.
    futures = client.compute(predict(bundle, image, axes="ZYX", tile_shape=(16, 16)))
    got = client.gather(futures)
    np.testing.assert_allclose(got["lower"], local["lower"], rtol=0, atol=1e-6)


def test_a_killed_worker_does_not_lose_blocks(client, tmp_path):
    model = make_model("quantile")
    image = rand((2, 40, 40))
    ref = dask.compute(predict(model, image, axes="ZYX", tile_shape=(8, 8)), scheduler="threads")[0]
    before = set(client.scheduler_info()["workers"])
    gen = predict_to_zarr(
        model, image, tmp_path / "o.zarr", axes="ZYX", tile_shape=(8, 8), scheduler=client
    )
    total = 2 * 5 * 5
    killed = False
    done = 0
    try:
        while True:
            done, n = next(gen)
            if done >= 10 and not killed:
                victim = sorted(client.scheduler_info()["workers"])[0]
                with contextlib.suppress(Exception):  # its connection closes as it dies
                    client.run(os._exit, 1, workers=[victim])
                killed = True
                done_at_kill = done
    except StopIteration as stop:
        arrays = stop.value
    assert killed
    assert done_at_kill < total  # killed mid-run
    assert done == total
    for name in model.output_names:
        np.testing.assert_allclose(arrays[name][...], ref[name], rtol=0, atol=1e-6)
    client.wait_for_workers(2, timeout=60)
    assert set(client.scheduler_info()["workers"]) != before  # the nanny started a new one
