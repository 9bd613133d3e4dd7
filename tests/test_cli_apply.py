"""`napari-im2im-uq apply` streams: pyramids block by block, resumable, memory bounded by chunks."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest

from napari_im2im_uq._jobs import run_to_end
from napari_im2im_uq.cli import main

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask")

SHAPE = (8, 256, 256)  # 2 MB a float32 output, 128 blocks of 64 x 64
TILE = (64, 64)


def _model():
    import torch

    from napari_im2im_uq.models import Im2ImModel, build_network

    torch.manual_seed(0)
    return Im2ImModel(build_network("quantile", depth=2, base_channels=4),
                      {"heuristic": "quantile"})


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A prediction store, its record (intervals, CRC), pristine copies of it and of a store
    of the first quarter of its planes."""
    from napari_im2im_uq.inference import predict_to_zarr

    folder = tmp_path_factory.mktemp("cli_apply")
    rng = np.random.default_rng(0)
    image = rng.random(SHAPE).astype(np.float32)
    model = _model()
    path = folder / "pred.zarr"
    run_to_end(predict_to_zarr(model, image, str(path), axes="ZYX", tile_shape=TILE,
                               device="cpu"))
    run_to_end(predict_to_zarr(model, image[: SHAPE[0] // 4], str(folder / "small.zarr"),
                               axes="ZYX", tile_shape=TILE, device="cpu"))
    pred = np.asarray(zarr.open_array(store=str(path / "prediction" / "0"), mode="r"))
    np.save(folder / "truth.npy", pred + pred.std() * rng.standard_normal(pred.shape))
    record = folder / "record.json"
    assert main(["calibrate", str(path), "--truth", str(folder / "truth.npy"), "--method",
                 "intervals", "--rule", "crc", "--alpha", "0.2", "--plan", "20", "--tile",
                 "64", "64", "-o", str(record)]) == 0
    shutil.copytree(path, folder / "pristine.zarr")
    return folder, path, record


def _fresh(folder, name, source="pristine.zarr"):
    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder / source, target)
    return target


def _calibrated_bytes(path):
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted((path / "calibrated").rglob("*")) if p.is_file()}


def test_the_products_are_pyramids_equal_to_a_downsample_and_valid_ome(calibrated):
    from napari_im2im_uq.inference._ome import validate_group
    from napari_im2im_uq.inference._pyramid import pyramid

    folder, _, record = calibrated
    store = _fresh(folder, "levels.zarr")
    assert main(["apply", str(record), str(store), "--bounds", "--no-progress",
                 "--no-drift"]) == 0
    group = zarr.open_group(store=str(store / "calibrated"), mode="r")
    products = group.attrs["napari_im2im_uq_calibrated"]["products"]
    assert set(products) == {"interval_width", "calibrated_lower", "calibrated_upper"}
    for name in products:
        sets = validate_group(dict(group[name].attrs)).ome.multiscales[0].datasets
        assert len(sets) == 2  # 256 -> 128
        level0 = np.asarray(group[f"{name}/0"])
        for k, want in enumerate(pyramid(level0, "ZYX", len(sets))):
            np.testing.assert_array_equal(np.asarray(group[f"{name}/{k}"]), want)


def test_apply_stopped_then_resumed_writes_the_same_bytes(calibrated):
    from napari_im2im_uq._cli_calibration import _apply_job
    from napari_im2im_uq.workflows.records import load_record

    folder, _, record = calibrated
    clean = _fresh(folder, "clean.zarr")
    assert main(["apply", str(record), str(clean), "--no-progress", "--no-drift"]) == 0
    stopped = _fresh(folder, "stopped.zarr")
    job = _apply_job(load_record(record), stopped, bounds=False, drift=False, scheduler=None)
    steps = []
    for step in job:
        steps.append(step)
        if step[0] >= 5:
            job.close()
            break
    total = steps[0][1]
    assert steps[0] == (0, total) and steps[-1][0] < total == 128  # blocks (1, 64, 64)
    attrs = zarr.open_group(store=str(stopped / "calibrated"), mode="r").attrs
    assert attrs["napari_im2im_uq_calibrated"]["complete"] is False
    marks = np.asarray(zarr.open_array(store=str(stopped / "calibrated/_done/interval_width"),
                                       mode="r"))
    assert 5 <= marks.sum() < marks.size
    again = []
    resumed = run_to_end(_apply_job(load_record(record), stopped, bounds=False, drift=False,
                                    scheduler=None), callback=again.append)
    assert again[0] == (int(marks.sum()), total)  # the resume starts from the blocks written
    assert len(again) == 1 + total - int(marks.sum()) and again[-1] == (total, total)
    assert resumed[0] == {"calibrated/interval_width": resumed[0]["calibrated/interval_width"]}
    assert _calibrated_bytes(stopped) == _calibrated_bytes(clean)


def _peak(record, store):
    from napari_im2im_uq._cli_calibration import _apply_job

    tracemalloc.start()
    try:
        job = _apply_job(record, store, bounds=True, drift=False, scheduler=None)
        next(job)  # the graph is planned (it grows with the blocks; a few hundred bytes each)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run_to_end(job)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_apply_memory_is_bounded_by_the_chunks_in_flight(calibrated):
    from napari_im2im_uq.workflows.records import load_record

    folder, _, record = calibrated
    rec = load_record(record)
    small = _peak(rec, _fresh(folder, "memory_small.zarr", "small.zarr"))
    large = _peak(rec, _fresh(folder, "memory_large.zarr"))
    one_output = int(np.prod(SHAPE)) * 4  # bytes of one float32 output of the large store
    # 4x the blocks, the same peak (within 25%): memory follows the chunks in flight, not the
    # volume; and far below the data the job reads (3 outputs) and writes (3 products)
    assert large < 1.25 * small + 256 * 1024, (small, large)
    assert large < one_output, (large, one_output)
    width = zarr.open_array(store=str(folder / "memory_large.zarr/calibrated/interval_width/0"),
                            mode="r")
    assert width.shape == SHAPE and np.isfinite(np.asarray(width[0, :8, :8])).all()
