"""Count how many times the chunks of a lazy input are read (passes over the data).

:class:`ReadCounter` wraps a dask array (a zarr-backed one included: wrap ``da.from_zarr``) so
that every computation of one of its chunks is counted. ``passes`` is the largest number of
reads of any one chunk: 1 when a calibration reads its inputs once. The benchmark and the tests
of issue 14 use it to check that calibrating on lazy inputs reads them at most twice.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["ReadCounter"]


class ReadCounter:
    """Count the chunk reads of the dask arrays it wraps.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> counter = ReadCounter()
    >>> x = counter.wrap(da.from_array(np.arange(8.0), chunks=4), "x")
    >>> float(x.sum().compute()), float(x[:2].sum().compute())
    (28.0, 1.0)
    >>> counter.reads("x"), counter.passes("x")
    (3, 2)
    """

    def __init__(self):
        self._counts: Counter = Counter()
        self._chunks: dict = {}
        self._lock = threading.Lock()

    def wrap(self, array, name: str):
        """Return ``array`` (a dask array) with each read of one of its chunks counted as ``name``."""
        import dask.array as da
        import numpy as np

        if not hasattr(array, "chunks") or not hasattr(array, "dask"):
            raise TypeError(f"array must be a dask array; got {type(array).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str; got {type(name).__name__}")
        self._chunks[name] = int(np.prod(array.numblocks))

        def read(block, block_info=None):
            where = tuple(block_info[0]["chunk-location"]) if block_info else ()
            with self._lock:
                self._counts[(name, where)] += 1
            return block

        return da.map_blocks(read, array, dtype=array.dtype,
                             meta=np.empty((0,) * array.ndim, array.dtype))

    def reads(self, name: str | None = None) -> int:
        """Return the total chunk reads of ``name`` (every wrapped array when None)."""
        return sum(c for (k, _), c in self._counts.items() if name is None or k == name)

    def passes(self, name: str | None = None) -> int:
        """Return the most reads of any one chunk of ``name`` (of any wrapped array when None)."""
        counts = [c for (k, _), c in self._counts.items() if name is None or k == name]
        return max(counts, default=0)

    def mean_passes(self, name: str | None = None) -> float:
        """Return the reads per chunk of ``name``, on average over its chunks (all arrays when None)."""
        names = [name] if name is not None else list(self._chunks)
        chunks = sum(self._chunks.get(k, 0) for k in names)
        return self.reads(name) / chunks if chunks else 0.0

    def reset(self) -> None:
        """Forget the reads counted so far (the wrapped arrays keep counting)."""
        with self._lock:
            self._counts.clear()
