"""Argument checks shared by the calibration functions.

Every check raises ``ValueError`` with a message that names the argument, says what was expected
and what was received, so a user can fix the call without reading the source.
"""

from __future__ import annotations

import numbers

import numpy as np


def check_level(value, name: str, *, allow_one: bool = False) -> float:
    """Return ``value`` as a float in (0, 1) (or (0, 1] with ``allow_one``), or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (np.isfinite(value) and value > 0.0 and upper_ok):
        interval = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}; got {value!r}")
    return value


def check_positive(value, name: str) -> float:
    """Return ``value`` as a positive finite float, or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        np.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, or raise."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def is_dask(array) -> bool:
    """Tell whether ``array`` is a dask array (without importing dask)."""
    return type(array).__module__.split(".")[0] == "dask"


def as_tiles(array, name: str, *, ndim_min: int = 2):
    """Return ``array`` as a numpy or dask array of shape (n, ...) with n >= 1.

    Dask arrays are returned as they are (and stay lazy); anything else goes through
    ``np.asarray``. A zero-length leading axis is refused here, with the argument's name.
    """
    if array is None:
        raise ValueError(f"{name} is required; got None")
    if not is_dask(array):
        array = np.asarray(array)
    if array.ndim < ndim_min:
        raise ValueError(
            f"{name} must have shape (n_tiles, rows, columns, ...) with one calibration tile per "
            f"leading index (at least {ndim_min} dimensions); got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} holds no calibration tile: its leading axis has length 0")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {array.dtype}")
    return array


def check_same_shape(reference_name: str, reference, **others) -> None:
    """Raise if any array in ``others`` differs in shape from ``reference``."""
    for name, array in others.items():
        if array is None:
            continue
        if tuple(array.shape) != tuple(reference.shape):
            raise ValueError(
                f"{name} must have the same shape as {reference_name}, {tuple(reference.shape)}; "
                f"got {tuple(array.shape)}"
            )


def check_finite(block: np.ndarray, name: str, *, where: np.ndarray | None = None) -> None:
    """Raise if ``block`` holds NaN or infinity (only where ``where`` is True, if given)."""
    values = block if where is None else block[where]
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise ValueError(f"{name} must be finite; got {bad} NaN or infinite value(s)")


def check_valid_block(valid: np.ndarray | None, shape, offset: int) -> np.ndarray | None:
    """Check one block of a ``valid`` mask: boolean, and no tile without a valid pixel."""
    if valid is None:
        return None
    valid = np.asarray(valid)
    if valid.dtype != bool:
        raise ValueError(f"valid must be a boolean mask; got dtype {valid.dtype}")
    per_tile = valid.reshape(valid.shape[0], -1).sum(axis=1)
    empty = np.flatnonzero(per_tile == 0)
    if empty.size:
        raise ValueError(
            f"valid marks no pixel of calibration tile {int(empty[0]) + offset}; every tile needs at "
            "least one valid pixel (drop empty tiles or fix the mask)"
        )
    return valid


def tile_blocks(n: int, arrays: dict, *, block_tiles: int | None = None):
    """Yield ``(offset, {name: numpy block})`` over groups of tiles along the leading axis.

    Dask arrays are computed one group at a time (the group follows the dask chunks of the first
    dask array), so memory holds a few chunks, never all n tiles.
    """
    dask_arrays = [a for a in arrays.values() if a is not None and is_dask(a)]
    if dask_arrays:
        chunks = dask_arrays[0].chunks[0]
        bounds = np.cumsum((0, *chunks))
    else:
        step = block_tiles or n
        bounds = np.append(np.arange(0, n, step), n)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        start, stop = int(start), int(stop)
        block = {}
        for key, array in arrays.items():
            if array is None:
                block[key] = None
            elif is_dask(array):
                block[key] = np.asarray(array[start:stop].compute())
            else:
                block[key] = array[start:stop]
        yield start, block
