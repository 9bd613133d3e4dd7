"""Private helpers of the metrics: checks of tile stacks and batching of whole tiles.

The checks are the package's one validator module's (``napari_im2im_uq._validation``); the
batches are numpy or lazy.

The number of elements per batch is read from the package, ``metrics._BATCH_ELEMENTS``, at every
call, so it is tuned in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..._validation import NUMERIC, as_tiles, check_finite, check_valid_block, is_dask


def _tiles(x: Any, name: str, *, kinds: str = NUMERIC, min_ndim: int = 2) -> Any:
    """Check a stack of tiles the metrics' way: numbers by default, lazy array-likes stay lazy."""
    return as_tiles(x, name, kinds=kinds, ndim_min=min_ndim, keep_lazy=True)


def _slices(n: int, elements_per_tile: int) -> Iterator[slice]:
    from . import _BATCH_ELEMENTS  # the package's knob, read at every call

    step = max(1, _BATCH_ELEMENTS // max(1, elements_per_tile))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _load(arrays: Sequence[Any], sl: slice) -> list[np.ndarray | None]:
    """Read one batch of tiles from every array (computing dask blocks together)."""
    blocks = [None if a is None else a[sl] for a in arrays]
    lazy = [i for i, b in enumerate(blocks) if b is not None and is_dask(b)]
    if lazy:
        import dask  # only reached when the caller passed dask arrays

        computed = dask.compute(*(blocks[i] for i in lazy))
        for i, value in zip(lazy, computed, strict=True):
            blocks[i] = value
    return [None if b is None else np.asarray(b) for b in blocks]


def _flat(block: np.ndarray) -> np.ndarray:
    return block.reshape(block.shape[0], -1)


def _batches(
    named: dict[str, Any], valid: Any, *, finite: Sequence[str] = ()
) -> Iterator[tuple[slice, dict[str, np.ndarray | None], np.ndarray | None]]:
    """Yield (slice, blocks, valid block) for every batch of tiles, checked."""
    names = list(named)
    arrays = [named[k] for k in names]
    present = [a for a in arrays if a is not None]
    n = int(present[0].shape[0])
    per_tile = sum(int(np.prod(a.shape[1:])) for a in present)
    for sl in _slices(n, per_tile):
        loaded = _load([*arrays, valid], sl)
        v = loaded[-1]
        v = check_valid_block(v, sl.start)
        blocks = dict(zip(names, loaded[:-1], strict=True))
        for name in finite:
            if blocks[name] is not None:
                check_finite(blocks[name], name, where=v, offset=sl.start)
        yield sl, blocks, v


def _f64(b: np.ndarray) -> np.ndarray:
    return np.asarray(b, dtype=np.float64)


def _tile_mean(x: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """Mean over each tile's (valid) pixels of a (k, ...) block, in float64."""
    x = _flat(x)
    if v is None:
        return x.mean(axis=1, dtype=np.float64)
    v = _flat(v)
    total = np.where(v, x, 0).sum(axis=1, dtype=np.float64)
    return total / v.sum(axis=1)
