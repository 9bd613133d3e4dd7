"""Private helpers of the metrics: checks of tile stacks and batching of whole tiles.

The checks are the metrics' own (their messages name the tile); the batches are numpy or lazy.

The number of elements per batch is read from the package, ``metrics._BATCH_ELEMENTS``, at every
call, so it is tuned in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..._validation import is_dask

#: Element types of numeric tiles and of masks (boolean or in [0, 1]).
_NUMERIC = "iuf"
_MASK_KINDS = "biuf"


def _describe_kind(kinds: str) -> str:
    if kinds == "b":
        return "a boolean"
    if kinds == _NUMERIC:
        return "a real-valued (integer or floating-point)"
    return "a boolean or real-valued"


def _as_tiles(x: Any, name: str, *, kinds: str = _NUMERIC, min_ndim: int = 2) -> Any:
    """Check that ``x`` is a stack of tiles; keep lazy arrays lazy, convert anything else."""
    if x is None:
        raise ValueError(f"{name} is required; got None")
    if not all(hasattr(x, attr) for attr in ("shape", "dtype", "ndim", "__getitem__")):
        x = np.asarray(x)
    try:
        kind = np.dtype(x.dtype).kind
    except TypeError:
        kind = "O"
    if kind not in kinds:
        raise ValueError(f"{name} must be {_describe_kind(kinds)} array; got dtype {x.dtype}")
    shape = tuple(int(s) for s in x.shape)
    if len(shape) < min_ndim:
        layout = "(n, ...)" if min_ndim == 2 else "(n, K, ...)"
        raise ValueError(
            f"{name} must have shape {layout}: one tile per leading index and at least "
            f"{min_ndim - 1} more axis; got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"{name} must hold at least one tile; got shape {shape}")
    if 0 in shape[1:]:
        raise ValueError(f"{name} has tiles without pixels; got shape {shape}")
    return x


def _as_valid(valid: Any, shape: tuple[int, ...], ref_name: str) -> Any:
    if valid is None:
        return None
    if not all(hasattr(valid, attr) for attr in ("shape", "dtype", "ndim", "__getitem__")):
        valid = np.asarray(valid)
    if np.dtype(valid.dtype).kind != "b":
        raise ValueError(
            f"valid must be a boolean array (True where a pixel counts); got dtype {valid.dtype}"
        )
    if tuple(valid.shape) != tuple(shape):
        raise ValueError(
            f"valid must have the shape of {ref_name}, {tuple(shape)}; got {tuple(valid.shape)}"
        )
    return valid


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


def _first_bad_tile(bad: np.ndarray, start: int) -> tuple[int, int]:
    per_tile = _flat(bad).sum(axis=1)
    i = int(np.flatnonzero(per_tile)[0])
    return start + i, int(per_tile[i])


def _check_valid_block(v: np.ndarray | None, start: int) -> None:
    if v is None:
        return
    empty = ~_flat(v).any(axis=1)
    if empty.any():
        tile = start + int(np.flatnonzero(empty)[0])
        raise ValueError(
            f"valid must keep at least one pixel in every tile; tile {tile} has no valid pixel"
        )


def _check_finite_block(name: str, b: np.ndarray, v: np.ndarray | None, start: int) -> None:
    if b.dtype.kind != "f":
        return
    bad = ~np.isfinite(b)
    if v is not None:
        bad &= v
    if bad.any():
        tile, count = _first_bad_tile(bad, start)
        where = "valid pixels" if v is not None else "every pixel"
        raise ValueError(
            f"{name} must be finite on {where}; tile {tile} has {count} NaN or inf value(s)"
        )


def _check_order_block(lo: np.ndarray, up: np.ndarray, v: np.ndarray | None, start: int) -> None:
    bad = lo > up
    if v is not None:
        bad &= v
    if bad.any():
        tile, count = _first_bad_tile(bad, start)
        raise ValueError(
            f"lower must not exceed upper; tile {tile} has {count} pixel(s) with lower > upper"
        )


def _check_unit_block(name: str, b: np.ndarray, v: np.ndarray | None, start: int) -> None:
    if b.dtype.kind == "b":
        return
    bad = (b < 0) | (b > 1)
    if v is not None:
        bad &= v
    if bad.any():
        tile, count = _first_bad_tile(bad, start)
        raise ValueError(
            f"{name} must lie in [0, 1]; tile {tile} has {count} value(s) outside [0, 1]"
        )


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
        _check_valid_block(v, sl.start)
        blocks = dict(zip(names, loaded[:-1], strict=True))
        for name in finite:
            if blocks[name] is not None:
                _check_finite_block(name, blocks[name], v, sl.start)
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
