"""A few chunks of a huge dask array, computed alone: the cost of the chunks asked for.

``dask.compute`` of a few chunks first optimises the whole graph (a task per chunk of every
layer: seconds and hundreds of MB for a volume of 10^5 chunks, however few chunks are asked
for). Here the chunks' tasks are taken from the graph by walking down from their keys
(:func:`~napari_im2im_uq.inference._graph.wave_graph`). The layer styles of a lazy product
(:func:`~napari_im2im_uq.layers.product_style`) and the sampled drift check read through it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TileReader", "read_chunks", "read_many"]

#: Chunks computed together when a :class:`TileReader` reads tiles.
CHUNKS_AT_ONCE = 32


def _chunked(arr):
    """``arr`` as a dask array when it is one or a chunked store (zarr), else None."""
    from .._validation import is_dask

    if is_dask(arr):
        return arr
    if isinstance(arr, np.ndarray):
        return None
    chunks = getattr(arr, "chunks", None)
    if (isinstance(chunks, tuple) and len(chunks) == getattr(arr, "ndim", -1)
            and all(isinstance(c, int | np.integer) for c in chunks)):
        import dask.array as da

        return da.from_array(arr, chunks=chunks)
    return None


def read_chunks(array, indices) -> list:
    """Return the chunks ``indices`` of a dask array, computing their tasks only.

    Runs on dask's default scheduler for ``array``; no graph optimisation.

    Parameters
    ----------
    array : dask.array.Array
    indices : sequence of tuple of int
        Chunk indices (one int per dimension).

    Returns
    -------
    list of numpy.ndarray
        One per index, in order.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.arange(10**6, chunks=10) * 2
    >>> [c.tolist() for c in read_chunks(x, [(3,)])]
    [[60, 62, 64, 66, 68, 70, 72, 74, 76, 78]]
    """
    return read_many([(array, idx) for idx in indices])


def read_many(wanted) -> list:
    """:func:`read_chunks` for ``(array, index)`` pairs of several arrays, in one run.

    A chunk that several of the arrays are made from (outputs of one graph) is computed once.
    """
    import dask
    from dask.highlevelgraph import HighLevelGraph

    from ..inference._graph import wave_graph

    wanted = list(wanted)
    if not wanted:
        return []
    arrays = list({a.name: a for a, _ in wanted}.values())
    keys = [(a.name, *(int(i) for i in idx)) for a, idx in wanted]
    graph = (arrays[0].__dask_graph__() if len(arrays) == 1 else
             HighLevelGraph.merge(*(a.__dask_graph__() for a in arrays)))
    get = dask.base.get_scheduler(collections=arrays)
    return [np.asarray(c) for c in get(wave_graph(graph, keys), keys)]


class TileReader:
    """Tiles of lazy arrays at ``origins``; each chunk is computed once, kept while needed.

    Cutting a few tiles out of a huge dask array by slicing it and calling ``dask.compute``
    optimises the whole graph first (O(chunks) time and memory: 540 MB traced for 200 tiles
    of a 409,600-chunk store); here only the chunks under the tiles are computed
    (:func:`read_many`), :data:`CHUNKS_AT_ONCE` at a time, in the tiles' order.

    ``arrays`` maps a name to ``(array, class_axis)`` (2-D or 3-D spatially, a leading class
    axis kept whole in each tile); ``origins`` are the tiles' (plane, row, column) on the
    outputs' grid; ``factor[name]`` says how much coarser that array's grid is (the model's
    input). Read the tiles in the order of ``origins``.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.arange(64.0).reshape(8, 8), chunks=3)
    >>> reader = TileReader({"x": (x, False)}, np.array([[0, 2, 4]]), (2, 2))
    >>> reader.take([0])["x"].tolist()
    [[[20.0, 21.0], [28.0, 29.0]]]
    """

    def __init__(self, arrays: dict, origins, tile_shape, *, factor=None):
        from collections import Counter
        from itertools import product

        factor = factor or {}
        self.arrays, self.boxes, self.chunks_of, self.bounds = {}, {}, {}, {}
        self.refs: Counter = Counter()
        self.loaded: dict = {}
        th, tw = tile_shape
        for name, (arr, class_axis) in arrays.items():
            a = _chunked(arr)
            if a is None:  # in memory: a chunk is the whole array
                import dask.array as da

                a = da.from_array(np.asarray(arr), chunks=-1)
            f = int(factor.get(name, 1))
            lead = 1 if class_axis else 0
            has_z = a.ndim - lead == 3
            starts = [origins[:, 1] // f, origins[:, 2] // f]
            sizes = [th // f, tw // f]
            if has_z:
                starts, sizes = [origins[:, 0], *starts], [1, *sizes]
            if lead:
                starts, sizes = [np.zeros(len(origins), np.int64), *starts], [a.shape[0], *sizes]
            bounds = [np.cumsum((0, *c)) for c in a.chunks]
            first = [np.searchsorted(b, s, side="right") - 1 for b, s in zip(bounds, starts,
                                                                           strict=True)]
            last = [np.searchsorted(b, s + n - 1, side="right") - 1
                    for b, s, n in zip(bounds, starts, sizes, strict=True)]
            chunks_of = []
            spans = list(zip(first, last, strict=True))
            for t in range(len(origins)):
                ranges = (range(int(lo[t]), int(hi[t]) + 1) for lo, hi in spans)
                cs = [(name, c) for c in product(*ranges)]
                chunks_of.append(cs)
                self.refs.update(cs)
            self.arrays[name] = (a, has_z, lead)
            self.boxes[name] = (np.stack(starts, axis=1), tuple(sizes))
            self.chunks_of[name] = chunks_of
            self.bounds[name] = bounds

    def take(self, ids) -> dict:
        """Return the stacked tiles ``ids`` of every array, by name.

        Each (n, rows, columns), or (n, classes, rows, columns) with a class axis.

        The tiles are cut a few at a time, as soon as the chunks under them are computed (at
        most :data:`CHUNKS_AT_ONCE` new chunks a step): the chunks held are those of a step and
        those a later tile still needs.
        """
        out = {name: np.empty((len(ids), *self.boxes[name][1]), dtype=a.dtype)
               for name, (a, _, _) in self.arrays.items()}
        start = 0
        while start < len(ids):
            need: dict = {}
            stop = start
            while stop < len(ids):
                new = [c for name in self.arrays for c in self.chunks_of[name][ids[stop]]
                       if c not in self.loaded and c not in need]
                if need and len(need) + len(new) > CHUNKS_AT_ONCE:
                    break
                need.update(dict.fromkeys(new))
                stop += 1
            part = list(need)
            got = read_many([(self.arrays[name][0], idx) for name, idx in part])
            self.loaded.update(zip(part, got, strict=True))
            for k in range(start, stop):
                self._cut(ids[k], k, out)
            start = stop
        for name, (_, has_z, lead) in self.arrays.items():
            tiles = out[name]
            out[name] = tiles[:, :, 0] if lead and has_z else tiles[:, 0] if has_z else tiles
        return out

    def _cut(self, t: int, k: int, out: dict) -> None:
        """Copy tile ``t`` of every array into row ``k`` of ``out``; drop chunks no longer needed."""
        for name in self.arrays:
            starts, sizes = self.boxes[name]
            bounds = self.bounds[name]
            for c in self.chunks_of[name][t]:
                src, dst = [], []
                for ax, j in enumerate(c[1]):
                    lo, s0, s1 = int(starts[t, ax]), int(bounds[ax][j]), int(bounds[ax][j + 1])
                    a0, b0 = max(lo, s0), min(lo + sizes[ax], s1)
                    src.append(slice(a0 - s0, b0 - s0))
                    dst.append(slice(a0 - lo, b0 - lo))
                out[name][(k, *dst)] = self.loaded[c][tuple(src)]
                self.refs[c] -= 1
                if not self.refs[c]:
                    del self.loaded[c]
