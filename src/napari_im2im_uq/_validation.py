"""One home for the argument checks of arrays, tiles and scalars, shared by every layer.

A leaf module: it imports numpy and the standard library only, never the rest of the package, so
``calibration``, ``data``, ``models``, ``inference``, ``training`` and ``workflows`` can all use it.
Every check raises ``ValueError`` with a message that names the argument, says what was expected
and what was received, so a user can fix the call without reading the source.

Scalars
    :func:`check_int` (an integer in a range), :func:`check_level` (a level in (0, 1)),
    :func:`check_positive` (a positive finite number), :func:`check_choice` (one of a few values).
Tiles
    :func:`check_tile_shape` (rows, columns of a tile), :func:`as_tiles` (a stack of tiles of shape
    (n, ...), numpy or dask), :func:`check_same_shape`.
Blocks of tiles
    :func:`tile_blocks` (numpy blocks along the leading axis, dask computed one group at a time),
    :func:`check_finite` and :func:`check_valid_block` (checks of one loaded block),
    :func:`is_dask` (without importing dask).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "as_tiles",
    "check_choice",
    "check_finite",
    "check_int",
    "check_level",
    "check_positive",
    "check_same_shape",
    "check_tile_shape",
    "check_valid_block",
    "is_dask",
    "tile_blocks",
]


def check_int(value, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` in ``[minimum, maximum]``, or raise.

    Python and numpy integers are accepted, and so are floats with an integral value (``4.0``);
    booleans, strings and non-integral floats (``2.5``) are refused.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The argument's name, for the message.
    minimum : int, default 1
        Smallest value allowed.
    maximum : int, optional
        Largest value allowed; no upper limit by default.

    Returns
    -------
    int
        ``value`` as a Python ``int``.

    Raises
    ------
    ValueError
        ``"n_splits must be an integer >= 1; got 'x'"`` (or ``in [1, 63]`` with a maximum).

    Examples
    --------
    >>> check_int(4.0, "n_splits")
    4
    >>> check_int(0, "seed", minimum=0)
    0
    """
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()
    )
    number = int(value) if integral and not isinstance(value, bool) else None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        shown = number if isinstance(value, numbers.Integral) and number is not None else value
        raise ValueError(f"{name} must be an integer {span}; got {shown!r}")
    return number


def check_tile_shape(tile_shape, name: str = "tile_shape") -> tuple[int, int]:
    """Return ``tile_shape`` as ``(rows, columns)``, two positive Python ints, or raise.

    Accepts a tuple, list or array of two integers (numpy integers and integral floats such as
    ``64.0`` included). Refuses a string (``"64"`` is not read as ``(6, 4)``), booleans, and
    floats that are not integral (``(16.7, 16)`` is not truncated).

    Parameters
    ----------
    tile_shape : sequence of two int
        Rows and columns of a tile.
    name : str, default "tile_shape"
        The argument's name, for the message.

    Returns
    -------
    tuple of int
        ``(rows, columns)``.

    Raises
    ------
    ValueError
        ``"tile_shape must be two positive integers (rows, columns); got '64'"``.

    Examples
    --------
    >>> check_tile_shape([64, 32.0])
    (64, 32)
    """
    message = f"{name} must be two positive integers (rows, columns); got {tile_shape!r}"
    if isinstance(tile_shape, str | bytes) or not hasattr(tile_shape, "__len__"):
        raise ValueError(message)
    try:
        values = list(tile_shape)
    except TypeError:
        raise ValueError(message) from None
    if len(values) != 2:
        raise ValueError(message)
    try:
        rows, columns = (check_int(v, name) for v in values)
    except ValueError:
        raise ValueError(message) from None
    return rows, columns


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
