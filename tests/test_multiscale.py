"""Prediction stores are multiscale OME-Zarr: pyramids written block by block, validated by yaozarrs."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask")
yaozarrs = pytest.importorskip("yaozarrs")

from napari_im2im_uq._jobs import run_to_end  # noqa: E402
from napari_im2im_uq.inference import _pyramid  # noqa: E402
from napari_im2im_uq.inference._ome import validate_group  # noqa: E402

SHAPE = (2, 300, 300)
TILE = (64, 64)


def _model():
    import torch

    from napari_im2im_uq.models import Im2ImModel, build_network

    torch.manual_seed(0)
    return Im2ImModel(build_network("quantile", depth=2, base_channels=4),
                      {"heuristic": "quantile"})


def _image():
    return np.random.default_rng(0).random(SHAPE).astype(np.float32)


def _write(path, model, *, stop_after=None):
    from napari_im2im_uq.inference import predict_to_zarr

    gen = predict_to_zarr(model, _image(), str(path), axes="ZYX", tile_shape=TILE,
                          device="cpu", pixel_size=(2.0, 0.5, 0.5), unit="micrometer")
    if stop_after is None:
        return run_to_end(gen)
    for done, _ in gen:
        if done >= stop_after:
            gen.close()
            break
    return None


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and "_lock" not in p.parts and p.name != "zarr.json"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    model = _model()
    path = tmp_path_factory.mktemp("multiscale") / "pred.zarr"
    _write(path, model)
    return path, model


def test_every_level_is_the_downsample_of_level_0(written):
    path, _ = written
    root = zarr.open_group(store=str(path), mode="r")
    for name in ("prediction", "lower", "upper"):
        datasets = root[name].attrs["ome"]["multiscales"][0]["datasets"]
        assert [d["path"] for d in datasets] == ["0", "1", "2"]  # 300 -> 150 -> 75
        level0 = np.asarray(root[f"{name}/0"])
        assert np.isfinite(level0).all()
        expected = _pyramid.pyramid(level0, "ZYX", len(datasets))
        for k, want in enumerate(expected):
            got = np.asarray(root[f"{name}/{k}"])
            assert got.shape == want.shape == _pyramid.level_shape(SHAPE, "ZYX", k)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} level {k}")
        # by hand: level 1 is the mean of 2 x 2 windows
        np.testing.assert_allclose(np.asarray(root[f"{name}/1"])[1, 10, 20],
                                   level0[1, 20:22, 40:42].mean(), rtol=1e-6)


def test_the_metadata_validates_through_yaozarrs_with_a_scale_per_level(written):
    path, _ = written
    root = zarr.open_group(store=str(path), mode="r")
    for name in ("prediction", "lower", "upper"):
        model = validate_group(dict(root[name].attrs))
        ms = model.ome.multiscales[0]
        assert [a.name for a in ms.axes] == ["z", "y", "x"]
        assert ms.axes[1].unit == "micrometer"
        scales = [d.coordinateTransformations[0].scale for d in ms.datasets]
        assert scales == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
        shifts = [d.coordinateTransformations[1].translation for d in ms.datasets]
        assert shifts[1][1] == pytest.approx(0.25) and shifts[2][2] == pytest.approx(0.75)
        # the structure too (arrays exist, dimensions match the axes, levels get coarser)
        yaozarrs.validate_zarr_store(str(path / name))


def test_a_stopped_and_resumed_store_has_identical_levels(written, tmp_path):
    path, model = written
    again = tmp_path / "resumed.zarr"
    _write(again, model, stop_after=5)
    done = np.asarray(zarr.open_array(store=str(again / "_done"), mode="r"))
    assert 0 < done.sum() < done.size  # stopped part way
    _write(again, model)
    clean, resumed = _files(path), _files(again)
    assert clean.keys() == resumed.keys()
    assert [k for k in clean if clean[k] != resumed[k]] == []


def test_napari_opens_the_store_as_multiscale_layers(written, make_napari_viewer):
    path, _ = written
    viewer = make_napari_viewer()
    opened = viewer.open(str(path), plugin="napari-im2im-uq")
    by_output = {ly.metadata["im2im_uq"]["output"]: ly for ly in opened}
    assert set(by_output) == {"prediction", "lower", "upper"}
    layer = by_output["prediction"]
    assert layer.multiscale is True and len(layer.data) == 3
    np.testing.assert_allclose(layer.scale, [2.0, 0.5, 0.5])
    shapes = [tuple(level.shape) for level in layer.data]
    assert shapes == [(2, 300, 300), (2, 150, 150), (2, 75, 75)]
    # napari's per-level downsample factors are the store's 2x pyramid
    np.testing.assert_allclose(layer.downsample_factors,
                               [[1, 1, 1], [1, 2, 2], [1, 4, 4]])


def test_a_record_applied_to_the_opened_store_gives_lazy_multiscale_products(
        written, make_napari_viewer):
    from napari_im2im_uq import api
    from napari_im2im_uq.calibration import CalibrationResult

    path, _ = written
    viewer = make_napari_viewer()
    opened = viewer.open(str(path), plugin="napari-im2im-uq")
    outputs = api.model_outputs(viewer.layers, opened[0])
    level0 = {k: np.asarray(v.data[0]) for k, v in outputs.items()}
    rng = np.random.default_rng(1)
    truth = level0["prediction"] + level0["prediction"].std() * rng.standard_normal(SHAPE)
    record = api.calibrate(outputs, truth.astype(np.float32), method="intervals", rule="crc",
                           alpha=0.2, tile_shape=(32, 32), regions=api.plan_tiles(
                               truth, tile_shape=(32, 32), n_tiles=12, seed=0)[0]).record
    (width, kwargs, kind), = api.apply_record(record, outputs, check_drift=False)
    assert kwargs["multiscale"] is True and len(width) == 3
    assert all(hasattr(level, "dask") for level in width)  # nothing computed yet
    result = CalibrationResult.from_dict(record["calibration"])
    for k, level in enumerate(width):  # each level: the record on that level of the outputs
        f, lo, up = (np.asarray(outputs[n].data[k]) for n in ("prediction", "lower", "upper"))
        lo_c, up_c = result.intervals(f, lo, up)
        np.testing.assert_array_equal(np.asarray(level), (up_c - lo_c).astype(np.float32))
    layer = viewer.add_image(width, **kwargs)
    assert layer.multiscale is True
    np.testing.assert_allclose(layer.scale, [2.0, 0.5, 0.5])


def test_the_reader_takes_only_prediction_stores_among_folders(written, tmp_path):
    from napari_im2im_uq._reader import get_reader, read_store

    path, _ = written
    assert get_reader(str(path)) is read_store
    assert get_reader(str(tmp_path)) is None  # an empty folder
    zarr.open_group(store=str(tmp_path / "foreign.zarr"), mode="w").attrs["x"] = 1
    assert get_reader(str(tmp_path / "foreign.zarr")) is None  # a zarr store not ours
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_bytes(b"\xff\xfe not json")
    assert get_reader(str(tmp_path / "bad.zarr")) is None
