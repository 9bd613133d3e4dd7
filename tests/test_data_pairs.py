"""Tests of data.read_pairs: the user's training pairs from real files on disk."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_im2im_uq.data import read_pairs


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, (3, 16, 20)).astype(np.uint16), rng.random((3, 32, 40))


def test_tiff_pair_keeps_dtype_and_axes(tmp_path, arrays):
    x, y = arrays
    tifffile.imwrite(tmp_path / "in.tif", x, photometric="minisblack")
    tifffile.imwrite(tmp_path / "out.tiff", y.astype(np.float32), photometric="minisblack")
    pairs = read_pairs(str(tmp_path / "in.tif"), tmp_path / "out.tiff")
    assert len(pairs.inputs) == len(pairs.targets) == 1
    np.testing.assert_array_equal(pairs.inputs[0], x)
    assert pairs.inputs[0].dtype == np.uint16
    np.testing.assert_array_equal(pairs.targets[0], y.astype(np.float32))
    assert pairs.sources == ["out.tiff"]


def test_npy_pair(tmp_path, arrays):
    x, y = arrays
    np.save(tmp_path / "x.npy", x[0])
    np.save(tmp_path / "y.npy", y[0])
    pairs = read_pairs(tmp_path / "x.npy", tmp_path / "y.npy")
    np.testing.assert_array_equal(pairs.inputs[0], x[0])
    np.testing.assert_array_equal(pairs.targets[0], y[0])


def test_zarr_store_and_group_array(tmp_path, arrays):
    x, y = arrays
    zarr.save_array(str(tmp_path / "x.zarr"), x)
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    group.create_array("target", data=y)
    pairs = read_pairs(tmp_path / "x.zarr", tmp_path / "data.zarr" / "target")
    np.testing.assert_array_equal(pairs.inputs[0], x)
    np.testing.assert_array_equal(pairs.targets[0], y)
    # a group with one array is that array; with two, the error lists them
    np.testing.assert_array_equal(read_pairs(tmp_path / "x.zarr", tmp_path / "data.zarr").targets[0],
                                  y)
    group.create_array("other", data=y)
    with pytest.raises(ValueError, match=r"target: .* 2 arrays \['other', 'target'\]"):
        read_pairs(tmp_path / "x.zarr", tmp_path / "data.zarr")


def test_folders_are_paired_by_sorted_name(tmp_path, arrays):
    x, y = arrays
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    for i, name in enumerate(["b", "a", "c"]):  # written out of order
        tifffile.imwrite(tmp_path / "low" / f"{name}.tif", x[i])
        np.save(tmp_path / "high" / f"{name}_gt.npy", y[i])
    (tmp_path / "low" / "notes.txt").write_text("not an image")
    (tmp_path / "high" / ".hidden.npy").write_bytes(b"")
    pairs = read_pairs(tmp_path / "low", tmp_path / "high")
    assert pairs.sources == ["a_gt.npy", "b_gt.npy", "c_gt.npy"]
    for got_x, got_y, i in zip(pairs.inputs, pairs.targets, [1, 0, 2]):
        np.testing.assert_array_equal(got_x, x[i])
        np.testing.assert_array_equal(got_y, y[i])


def test_errors_name_the_argument(tmp_path, arrays):
    x, y = arrays
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(FileNotFoundError, match="target: no such file"):
        read_pairs(tmp_path / "x.npy", tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match="input: no such file"):
        read_pairs(tmp_path / "missing.tif", tmp_path / "x.npy")
    (tmp_path / "y.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match="target must be a TIFF file"):
        read_pairs(tmp_path / "x.npy", tmp_path / "y.png")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="input: .*bad.tif is not a readable TIFF"):
        read_pairs(tmp_path / "bad.tif", tmp_path / "x.npy")
    folder = tmp_path / "f"
    folder.mkdir()
    with pytest.raises(ValueError, match="both be folders or both files; input is the folder"):
        read_pairs(folder, tmp_path / "x.npy")
    other = tmp_path / "g"
    other.mkdir()
    with pytest.raises(ValueError, match="input: the folder .* holds no"):
        read_pairs(folder, other)
    np.save(folder / "a.npy", x)
    np.save(other / "a.npy", y)
    np.save(other / "b.npy", y)
    with pytest.raises(ValueError, match="same number of files.*has 1, target .* has 2"):
        read_pairs(folder, other)
    with pytest.raises(TypeError, match="input must be a path"):
        read_pairs(x, tmp_path / "x.npy")


def test_read_images_one_side(tmp_path, arrays):
    from napari_im2im_uq.data import read_images

    x, _ = arrays
    zarr.save_array(str(tmp_path / "b.zarr"), x[1])
    np.save(tmp_path / "a.npy", x[0])
    got, names = read_images(tmp_path, name="input")
    assert names == ["a.npy", "b.zarr"]
    np.testing.assert_array_equal(got[0], x[0])
    np.testing.assert_array_equal(got[1], x[1])
    got, names = read_images(tmp_path / "b.zarr")
    assert names == ["b.zarr"] and got[0].shape == (16, 20)
    with pytest.raises(FileNotFoundError, match="input: no such file"):
        read_images(tmp_path / "nope.tif", name="input")
