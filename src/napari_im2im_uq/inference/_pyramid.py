"""Resolution pyramids of the stores: levels 2x coarser in Y and X, written block by block.

Level ``k`` of an image is level ``k - 1`` reduced over 2 x 2 windows of rows and columns
(planes and classes are kept): the **mean** for intensities (float outputs: prediction, bounds,
scores, widths), the **max** for integer masks and labels (an untrusted pixel, a label, the
largest set size of the window stays visible; a label image shows the largest label of its
window). Windows at an odd edge are partial (the mean of the pixels there).

A store's chunks along Y and X are divisible by ``2**(levels - 1)``, so each block of level 0
maps onto whole chunks of every level: the task that writes a block also writes its
downsampled blocks (:func:`pyramid`), no window crosses a block boundary, and the levels equal
a downsample of the whole level 0 exactly (the same arithmetic per window), whatever order the
blocks are written in, on a resume too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_LEVEL_SIZE", "downsample", "level_shape", "n_levels", "pyramid", "reduction"]

#: A level is added while the one before is larger than this along Y or X.
MIN_LEVEL_SIZE = 128
#: At most this many levels (level 0 included).
MAX_LEVELS = 8


def level_shape(shape, axes: str, level: int) -> tuple[int, ...]:
    """Shape of level ``level`` (ceil division by ``2**level`` along Y and X).

    Examples
    --------
    >>> level_shape((3, 101, 64), "ZYX", 2)
    (3, 26, 16)
    """
    f = 2**level
    return tuple(-(-int(n) // f) if a in "YX" else int(n)
                 for a, n in zip(axes, shape, strict=True))


def n_levels(shape, chunks, axes: str, *, min_size: int = MIN_LEVEL_SIZE,
             max_levels: int = MAX_LEVELS) -> int:
    """Return the number of levels (level 0 included) of an image stored in ``chunks``.

    A level is added while the previous one is larger than ``min_size`` along Y or X and the
    chunks stay divisible by its factor along Y and X (blocks aligned on every level).

    Examples
    --------
    >>> n_levels((2, 832, 832), (1, 208, 208), "ZYX")
    4
    >>> n_levels((192, 192), (64, 64), "YX")
    2
    """
    yx = [(n, c) for a, n, c in zip(axes, shape, chunks, strict=True) if a in "YX"]
    levels = 1
    while levels < max_levels:
        f = 2**levels
        previous = [-(-n // (f // 2)) for n, _ in yx]
        if max(previous) <= min_size or any(c % f for _, c in yx):
            break
        levels += 1
    return levels


def reduction(dtype) -> str:
    """``"mean"`` for floating-point data, ``"max"`` for integers and booleans.

    Examples
    --------
    >>> reduction(np.float32), reduction(np.uint8)
    ('mean', 'max')
    """
    return "mean" if np.dtype(dtype).kind in "fc" else "max"


def _halve(a: np.ndarray, axis: int, how: str) -> np.ndarray:
    n = a.shape[axis]
    even = n - n % 2
    head = np.take(a, np.arange(even), axis=axis)
    pairs = head.reshape(*a.shape[:axis], even // 2, 2, *a.shape[axis + 1:])
    if how == "mean":
        out = pairs.astype(np.float64).mean(axis=axis + 1)
    else:
        out = pairs.max(axis=axis + 1)
    if n % 2:
        last = np.take(a, [n - 1], axis=axis)
        out = np.concatenate([out, last.astype(out.dtype)], axis=axis)
    return out


def downsample(a, axes: str, *, how: str | None = None) -> np.ndarray:
    """Return ``a`` reduced over 2 x 2 windows of its Y and X axes (same dtype).

    Examples
    --------
    >>> downsample(np.arange(6.0).reshape(2, 3), "YX").tolist()
    [[2.0, 3.5]]
    >>> downsample(np.array([[0, 1], [0, 0]], np.uint8), "YX").tolist()
    [[1]]
    """
    a = np.asarray(a)
    how = how or reduction(a.dtype)
    out = a
    for axis, letter in enumerate(axes):
        if letter in "YX":
            out = _halve(out, axis, how)
    return out.astype(a.dtype, copy=False)


def pyramid(a, axes: str, levels: int, *, how: str | None = None) -> list[np.ndarray]:
    """Return ``[a, downsample(a), downsample(downsample(a)), ...]``, ``levels`` arrays.

    Examples
    --------
    >>> [p.shape for p in pyramid(np.zeros((5, 9)), "YX", 3)]
    [(5, 9), (3, 5), (2, 3)]
    """
    out = [np.asarray(a)]
    for _ in range(int(levels) - 1):
        out.append(downsample(out[-1], axes, how=how))
    return out
