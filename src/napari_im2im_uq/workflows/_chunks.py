"""A few chunks of a huge dask array, computed alone: the cost of the chunks asked for.

``dask.compute`` of a few chunks first optimises the whole graph (a task per chunk of every
layer: seconds and hundreds of MB for a volume of 10^5 chunks, however few chunks are asked
for). Here the chunks' tasks are taken from the graph by walking down from their keys
(:func:`~napari_im2im_uq.inference._graph.wave_graph`). The layer styles of a lazy product
(:func:`~napari_im2im_uq.layers.product_style`) and the sampled drift check read through it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["read_chunks", "read_many"]


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
