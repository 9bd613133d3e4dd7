"""One home for the argument checks of arrays, tiles and scalars, shared by every layer.

A leaf module: it imports numpy and the standard library only, never the rest of the package, so
``calibration``, ``data``, ``models``, ``inference``, ``training`` and ``workflows`` can all use it.
Every check raises ``ValueError`` with a message that names the argument, says what was expected
and what was received, so a user can fix the call without reading the source.

Scalars
    :func:`check_int` (an integer in a range), :func:`check_level` (a level in (0, 1)),
    :func:`check_positive` (a positive finite number), :func:`check_choice` (one of a few values),
    :func:`check_bool` (True or False, not a truthy string).
Tiles
    :func:`check_tile_shape` (rows, columns of a tile), :func:`as_tiles` (a stack of tiles of shape
    (n, ...), numpy or lazy), :func:`as_valid` (a mask of the pixels that count),
    :func:`check_same_shape`. The calibration core and the metrics use the same ones.
Blocks of tiles
    :func:`tile_blocks` (numpy blocks along the leading axis, dask computed one group at a time),
    :func:`check_finite`, :func:`check_valid_block`, :func:`check_order_block` and
    :func:`check_unit_block` (checks of one loaded block; messages name the tile),
    :func:`is_dask` (without importing dask).
Command-line flags
    :func:`int_flag`, :func:`level_flag` (argparse ``type=`` functions built on the checks
    above: a bad flag exits with status 2 and ``argument --tile: must be an integer >= 1; got
    -3``) and :func:`in_flags` (a message of a deeper check, said in the flags' names).
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np

__all__ = [
    "MASK_KINDS",
    "NUMERIC",
    "as_tiles",
    "as_valid",
    "check_bool",
    "check_choice",
    "check_finite",
    "check_int",
    "check_level",
    "check_order_block",
    "check_positive",
    "check_range",
    "check_same_shape",
    "check_tile_shape",
    "check_unit_block",
    "check_valid_block",
    "first_bad_tile",
    "in_flags",
    "int_flag",
    "is_dask",
    "level_flag",
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


def check_bool(value, name: str) -> bool:
    """Return ``value`` if it is a boolean (Python or numpy), or raise.

    A string such as ``"no"`` is truthy: it is refused rather than read as True.

    Examples
    --------
    >>> check_bool(False, "overwrite")
    False
    """
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def check_range(value, name: str) -> tuple[float, float]:
    """Return ``value`` as ``(low, high)``, two finite numbers with low < high, or raise.

    A string is refused (``"01"`` is not read as ``(0, 1)``).

    Examples
    --------
    >>> check_range([0, 255], "data_range")
    (0.0, 255.0)
    """
    message = f"{name} must be (low, high): two finite numbers with low < high; got {value!r}"
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(message)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise ValueError(message)
    low, high = (float(v) for v in value)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(message)
    return low, high


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, or raise."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def is_dask(array) -> bool:
    """Tell whether ``array`` is a dask array (without importing dask)."""
    return type(array).__module__.split(".")[0] == "dask"


#: Element kinds of numeric tiles, and of masks (boolean or numbers in [0, 1]).
NUMERIC = "iuf"
MASK_KINDS = "biuf"


def _describe_kind(kinds: str) -> str:
    if kinds == "b":
        return "a boolean"
    if kinds == NUMERIC:
        return "a real-valued (integer or floating-point)"
    return "a boolean or real-valued"


def _array_like(x) -> bool:
    return all(hasattr(x, attr) for attr in ("shape", "dtype", "ndim", "__getitem__"))


def as_tiles(array, name: str, *, kinds: str = MASK_KINDS, ndim_min: int = 2,
             keep_lazy: bool = False):
    """Return ``array`` as a stack of tiles, shape (n, ...) with n >= 1 and pixels in each.

    Dask arrays stay lazy; with ``keep_lazy`` so does any array-like that slices (a zarr
    array, read batch by batch by the metrics); anything else goes through ``np.asarray``.
    ``kinds`` are the numpy dtype kinds allowed (``NUMERIC``: integers and floats;
    ``MASK_KINDS``: booleans too).

    Examples
    --------
    >>> as_tiles([[1.0, 2.0]], "truth").shape
    (1, 2)
    >>> as_tiles([1.0, 2.0], "truth")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: truth must have shape (n, ...): one tile per leading index and at least 1 more...
    """
    if array is None:
        raise ValueError(f"{name} is required; got None")
    if not (is_dask(array) or (keep_lazy and _array_like(array))):
        array = np.asarray(array)
    try:
        kind = np.dtype(array.dtype).kind
    except TypeError:
        kind = "O"
    if kind not in kinds:
        raise ValueError(f"{name} must be {_describe_kind(kinds)} array; got dtype {array.dtype}")
    shape = tuple(int(v) for v in array.shape)
    if len(shape) < ndim_min:
        layout = "(n, ...)" if ndim_min == 2 else "(n, K, ...)"
        raise ValueError(
            f"{name} must have shape {layout}: one tile per leading index and at least "
            f"{ndim_min - 1} more axis; got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(
            f"{name} must hold at least one tile; got shape {shape} (no calibration tile along "
            "its leading axis)"
        )
    if 0 in shape[1:]:
        raise ValueError(f"{name} has tiles without pixels; got shape {shape}")
    return array


def as_valid(valid, shape, reference_name: str):
    """Return a ``valid`` mask (True where a pixel counts) of ``shape``, or None.

    Lazy arrays stay lazy, as in :func:`as_tiles` with ``keep_lazy``.
    """
    if valid is None:
        return None
    if not _array_like(valid):
        valid = np.asarray(valid)
    if np.dtype(valid.dtype).kind != "b":
        raise ValueError(
            f"valid must be a boolean array (True where a pixel counts); got dtype {valid.dtype}"
        )
    if tuple(valid.shape) != tuple(shape):
        raise ValueError(
            f"valid must have the shape of {reference_name}, {tuple(shape)}; got "
            f"{tuple(valid.shape)}"
        )
    return valid


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


def first_bad_tile(bad: np.ndarray, offset: int,
                   where: np.ndarray | None = None) -> tuple[int, int] | None:
    """Return ``(tile index, count)`` of the first tile with a True in ``bad`` (n, ...).

    Only pixels where ``where`` is True count; None when no pixel is bad. ``offset`` is the
    index of the block's first tile.
    """
    if where is not None:
        bad = bad & where
    if not bad.any():
        return None
    per_tile = bad.reshape(bad.shape[0], -1).sum(axis=1)
    i = int(np.flatnonzero(per_tile)[0])
    return offset + i, int(per_tile[i])


def check_finite(block: np.ndarray, name: str, *, where: np.ndarray | None = None,
                 offset: int = 0) -> None:
    """Raise if a block of tiles holds NaN or infinity (only where ``where`` is True).

    ``offset`` is the index of the block's first tile, so the message names the tile.
    """
    if block.dtype.kind != "f":
        return
    finite = np.isfinite(block)
    if where is None and finite.all():  # the common case: one pass, no other array
        return
    found = first_bad_tile(~finite, offset, where)
    if found is not None:
        tile, count = found
        pixels = "valid pixels" if where is not None else "every pixel"
        raise ValueError(
            f"{name} must be finite on {pixels}; tile {tile} has {count} NaN or inf value(s)"
        )


def check_valid_block(valid, offset: int) -> np.ndarray | None:
    """Check one block of a ``valid`` mask: boolean, and no tile without a valid pixel.

    ``offset`` is the index of the block's first tile. Returns the block as numpy (or None).
    """
    if valid is None:
        return None
    valid = np.asarray(valid)
    if valid.dtype != bool:
        raise ValueError(
            f"valid must be a boolean array (True where a pixel counts); got dtype {valid.dtype}"
        )
    empty = np.flatnonzero(~valid.reshape(valid.shape[0], -1).any(axis=1))
    if empty.size:
        raise ValueError(
            "valid must keep at least one pixel in every tile, but valid marks no pixel of "
            f"calibration tile {int(empty[0]) + offset} (drop empty tiles or fix the mask)"
        )
    return valid


def check_order_block(lower: np.ndarray, upper: np.ndarray, valid: np.ndarray | None,
                      offset: int) -> None:
    """Raise if ``lower > upper`` anywhere (where ``valid``) in a block of tiles."""
    found = first_bad_tile(lower > upper, offset, valid)
    if found is not None:
        tile, count = found
        raise ValueError(
            f"lower must not exceed upper; tile {tile} has {count} pixel(s) with lower > upper"
        )


def check_unit_block(block: np.ndarray, name: str, valid: np.ndarray | None,
                     offset: int) -> None:
    """Raise if a (non-boolean) block of tiles has values outside [0, 1] (where ``valid``)."""
    if block.dtype.kind == "b":
        return
    found = first_bad_tile((block < 0) | (block > 1), offset, valid)
    if found is not None:
        tile, count = found
        raise ValueError(
            f"{name} must lie in [0, 1]; tile {tile} has {count} value(s) outside [0, 1]"
        )


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


# -- command-line flags ---------------------------------------------------------------------


def _flag_type(check, label: str):
    """Make an argparse ``type=`` that parses a flag's text with ``check(text)``.

    The message of the check, without the argument's name (argparse names the flag), becomes
    an ``argparse.ArgumentTypeError``: argparse prints ``argument --tile: must be ...; got -3``
    on stderr and exits with status 2, without a traceback.
    """
    import argparse

    def parse(text: str):
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("\0 ")) from None

    parse.__name__ = label
    return parse


def int_flag(*, minimum: int = 1, maximum: int | None = None, multiple_of: int = 1):
    """Return an argparse ``type=`` for an integer flag in ``[minimum, maximum]``.

    With ``multiple_of`` the value must also be a multiple of it.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--tile", type=int_flag())
    >>> parser.parse_args(["--tile", "64"]).tile
    64
    """

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = text
        number = check_int(value, "\0", minimum=minimum, maximum=maximum)
        if number % multiple_of:
            raise ValueError(f"\0 must be a multiple of {multiple_of}; got {number}")
        return number

    return _flag_type(check, "integer")


def level_flag(*, allow_one: bool = False):
    """Return an argparse ``type=`` for a level in (0, 1) (or (0, 1] with ``allow_one``).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--alpha", type=level_flag())
    >>> parser.parse_args(["--alpha", "0.1"]).alpha
    0.1
    """

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = text
        return check_level(value, "\0", allow_one=allow_one)

    return _flag_type(check, "level")


def in_flags(message: str, flags: dict[str, str]) -> str:
    """Say a message of a Python-level check in the command line's flag names.

    ``flags`` maps argument names (or phrases such as ``"overwrite=True"``) to flags. A name is
    replaced where it stands as the argument of a check (``tile_shape must``, ``batch_size=``,
    ``device is``), a phrase wherever it stands, so other uses of the word are left alone.

    Examples
    --------
    >>> in_flags("tile_shape must be two positive integers; pass overwrite=True",
    ...          {"tile_shape": "--tile", "overwrite=True": "--overwrite"})
    '--tile must be two positive integers; pass --overwrite'
    """
    for name in sorted(flags, key=len, reverse=True):
        after = "" if re.search(r"\W", name) else r"(?=\s+(?:must|is)\b|=)"
        message = re.sub(rf"(?<![\w-]){re.escape(name)}{after}", flags[name], message)
    return message
