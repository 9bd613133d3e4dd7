"""Tests of the shared validator module (napari_im2im_uq._validation)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_im2im_uq._validation import check_int, check_tile_shape


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (1, {}, 1),
        (7, {}, 7),
        (np.int64(3), {}, 3),
        (np.uint8(2), {}, 2),
        (4.0, {}, 4),
        (np.float32(5.0), {}, 5),
        (0, {"minimum": 0}, 0),
        (63, {"maximum": 63}, 63),
        (-2, {"minimum": -5}, -2),
    ],
)
def test_check_int_accepts_integers(value, kwargs, expected):
    got = check_int(value, "n", **kwargs)
    assert got == expected
    assert type(got) is int


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("x", {}, "n_splits must be an integer >= 1; got 'x'"),
        ("3", {}, "n_splits must be an integer >= 1; got '3'"),
        (True, {}, "n_splits must be an integer >= 1; got True"),
        (False, {"minimum": 0}, "n_splits must be an integer >= 0; got False"),
        (2.5, {}, "n_splits must be an integer >= 1; got 2.5"),
        (float("nan"), {}, "n_splits must be an integer >= 1; got nan"),
        (float("inf"), {}, "n_splits must be an integer >= 1; got inf"),
        (None, {}, "n_splits must be an integer >= 1; got None"),
        ([3], {}, r"n_splits must be an integer >= 1; got \[3\]"),
        (0, {}, "n_splits must be an integer >= 1; got 0"),
        (np.int64(0), {}, "n_splits must be an integer >= 1; got 0$"),
        (0.0, {}, "n_splits must be an integer >= 1; got 0.0"),
        (-1, {"minimum": 0}, "n_splits must be an integer >= 0; got -1"),
        (64, {"maximum": 63}, r"n_splits must be an integer in \[1, 63\]; got 64"),
    ],
)
def test_check_int_refuses_what_is_not_an_integer_in_range(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_int(value, "n_splits", **kwargs)


@pytest.mark.parametrize(
    ("tile_shape", "expected"),
    [
        ((64, 32), (64, 32)),
        ([16, 16], (16, 16)),
        ((np.int64(8), np.uint16(4)), (8, 4)),
        ((64.0, 32.0), (64, 32)),
        (np.array([5, 6]), (5, 6)),
        ((1, 1), (1, 1)),
    ],
)
def test_check_tile_shape_accepts_two_positive_integers(tile_shape, expected):
    got = check_tile_shape(tile_shape)
    assert got == expected
    assert all(type(v) is int for v in got)


@pytest.mark.parametrize(
    "tile_shape",
    ["64", "6 4", b"64", 64, None, (64,), (64, 64, 64), (16.7, 16), (0, 8), (8, -1), (True, 8),
     ("8", 8), (8, None), (float("nan"), 8), np.array(8), {"rows": 8}],
)
def test_check_tile_shape_refuses_everything_else(tile_shape):
    with pytest.raises(ValueError, match=r"tile_shape must be two positive integers \(rows, columns\)"):
        check_tile_shape(tile_shape)


def test_check_tile_shape_message_shows_the_value_and_the_name():
    with pytest.raises(
        ValueError, match=r"^tile_shape must be two positive integers \(rows, columns\); got '64'$"
    ):
        check_tile_shape("64")
    with pytest.raises(ValueError, match=r"^patch must be two positive .*; got \(16\.7, 16\)$"):
        check_tile_shape((16.7, 16), "patch")
