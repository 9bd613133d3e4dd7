"""Graphs whose tasks are built when they are run: planning costs no Python work per block.

dask's array operations that move data between chunks (``rechunk``, ``map_overlap``, slicing)
write one task per chunk when they are called: 100,000 blocks cost seconds and a gigabyte
before the first block runs. Here a graph layer is a rule instead (:class:`BlockLayer`: a
function from a block's index to that block's tasks), and the executor takes from a graph the
tasks of the wave it is about to run (:func:`wave_graph`), walking down from the wave's keys,
so a wave costs the same however many blocks the volume has. Everything stays a
``HighLevelGraph``: ``dask.compute`` and a ``distributed.Client`` read these layers as any
other (materialising them as a whole).

- :func:`rechunk` is ``dask.array.rechunk`` as such a rule (the same values).
- :func:`window_pieces` says which parts of which chunks make a block's window (the block and
  its halo) and how much the image's borders mirror.
- :class:`BlockKeys` is the list of a layer's keys for some blocks, made a wave at a time.
"""

from __future__ import annotations

import gc
import itertools
import operator
from collections.abc import Sequence

import numpy as np
from dask._task_spec import Alias, DataNode, GraphNode, Task, TaskRef, parse_input
from dask.base import tokenize
from dask.blockwise import Blockwise
from dask.core import keys_in_tasks
from dask.highlevelgraph import HighLevelGraph, Layer, MaterializedLayer

__all__ = ["BlockKeys", "BlockLayer", "constant", "piece_tasks", "rechunk", "ref", "task",
           "wave_graph", "window_pieces"]


def _name(key):
    return key[0] if isinstance(key, tuple) else key


def ref(key) -> TaskRef:
    """Refer to the result of ``key`` inside a task's arguments."""
    return TaskRef(key)


def task(key, func, *args) -> Task:
    """Make a task; lists (nested) of :func:`ref` among ``args`` become lists of results."""
    return Task(key, func, *(parse_input(a) for a in args))


class BlockLayer(Layer):
    """A graph layer built block by block, when a block's tasks are asked for.

    Parameters
    ----------
    name : str
        Output keys are ``(name, *index)`` for every index of ``grid``.
    grid : tuple of int
        Blocks along each dimension.
    build : callable
        ``build(index) -> dict`` of every task of block ``index``: its output key and helper
        keys ``(helper_name, *index, ...)`` whose names are in ``helpers``. Called per block
        when the block is culled or looked up; it must be cheap and deterministic.
    helpers : tuple of str
        Names of the helper keys.

    Examples
    --------
    >>> from napari_im2im_uq.inference._graph import BlockLayer, task
    >>> layer = BlockLayer("sq", (3,), lambda i: {("sq", *i): task(("sq", *i), int, i[0] ** 2)})
    >>> len(layer), layer[("sq", 2)]().__class__.__name__
    (3, 'int')
    """

    def __init__(self, name: str, grid: tuple, build, helpers: tuple = ()):
        super().__init__()
        self.name, self.grid, self.build, self.helpers = name, tuple(grid), build, tuple(helpers)
        self._names = {name, *helpers}
        self._len = None

    has_legacy_tasks = False  # never iterated to find out

    def is_materialized(self) -> bool:
        return False

    def owns(self, key) -> bool:
        """Whether ``key`` would be one of this layer's keys (by its name)."""
        return _name(key) in self._names

    def _index(self, key):
        if not isinstance(key, tuple) or _name(key) not in self._names:
            return None
        index = key[1 : 1 + len(self.grid)]
        if len(index) != len(self.grid) or not all(
            isinstance(i, int | np.integer) and 0 <= i < n
            for i, n in zip(index, self.grid, strict=True)
        ):
            return None
        return tuple(int(i) for i in index)

    def __getitem__(self, key):
        index = self._index(key)
        if index is None:
            raise KeyError(key)
        return self.build(index)[key]

    def __contains__(self, key) -> bool:
        index = self._index(key)
        if index is None:
            return False
        if key[0] == self.name and len(key) == 1 + len(self.grid):
            return True
        return key in self.build(index)

    def __iter__(self):
        for index in np.ndindex(*self.grid):
            yield from self.build(tuple(int(i) for i in index))

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(len(self.build(tuple(int(i) for i in index)))
                            for index in np.ndindex(*self.grid))
        return self._len

    def get_output_keys(self):
        """Return the blocks' keys (helper keys are the layer's own: no other layer needs them).

        ``HighLevelGraph.cull`` asks for them when a layer holds old-style tasks; made from
        the grid, without building any block.
        """
        return {(self.name, *(int(i) for i in index)) for index in np.ndindex(*self.grid)}

    def cull(self, keys, all_hlg_keys=()):
        """Return the tasks of ``keys`` (and the helper keys they need) and their dependencies."""
        built: dict = {}
        out: dict = {}
        deps: dict = {}
        work = [k for k in keys if self._index(k) is not None]
        while work:
            key = work.pop()
            if key in out:
                continue
            index = self._index(key)
            if index not in built:
                built[index] = self.build(index)
            node = built[index][key]
            out[key] = node
            deps[key] = set(node.dependencies)
            work.extend(d for d in deps[key] if self._index(d) is not None and d not in out)
        return MaterializedLayer(out), deps


class _GraphKeys:
    """``key in`` every key of a graph, told by names for layers that are rules."""

    def __init__(self, graph: HighLevelGraph):
        # By type, not by ``is_materialized()``: a rule (Blockwise) that something has looked
        # into keeps its rule's type but reports itself materialized, and its keys would then
        # be unknown here, left in a task as literal tuples instead of its results.
        self.rules = {n for n, layer in graph.layers.items()
                      if not isinstance(layer, MaterializedLayer)}
        self.rules |= {h for layer in graph.layers.values() if isinstance(layer, BlockLayer)
                       for h in layer.helpers}
        self.tables = [layer.mapping for layer in graph.layers.values()
                       if isinstance(layer, MaterializedLayer)]

    def __contains__(self, key) -> bool:
        try:
            hash(key)
        except TypeError:
            return False
        if _name(key) in self.rules:
            return True
        return any(key in table for table in self.tables)

    def __iter__(self):  # only membership is asked for
        return iter(())

    def __len__(self) -> int:
        return 0


def _dependencies(node, known) -> set:
    if isinstance(node, GraphNode):
        return set(node.dependencies)
    return set(keys_in_tasks(known, [node]))


def wave_graph(graph: HighLevelGraph, keys) -> dict:
    """Return the tasks that compute ``keys`` of ``graph``, without materialising the rest.

    ``HighLevelGraph.cull`` asks every layer for all its keys (and copies whole tables) when
    one layer holds tasks of the old tuple form; this walks down from ``keys`` only: rules
    (:class:`BlockLayer`, ``Blockwise``) build the blocks asked for, tables are looked up.

    Examples
    --------
    >>> import dask, dask.array as da
    >>> from napari_im2im_uq.inference._graph import wave_graph
    >>> x = da.arange(100, chunks=10) + 1
    >>> dsk = wave_graph(x.__dask_graph__(), [(x.name, 3)])
    >>> len(dsk), int(dask.get(dsk, (x.name, 3))[0])
    (2, 31)
    """
    enabled = gc.isenabled()
    gc.disable()  # thousands of small objects, no cycles: collections would cost 2/3 of this
    try:
        return _wave_graph(graph, keys)
    finally:
        if enabled:
            gc.enable()


def _wave_graph(graph: HighLevelGraph, keys) -> dict:
    known = _GraphKeys(graph)
    needed = set(keys)
    out: dict = {}
    for layer_name in reversed(graph._toposort_layers()):
        if not needed:
            break
        layer = graph.layers[layer_name]
        if isinstance(layer, BlockLayer):
            mine = {k for k in needed if layer.owns(k)}
        elif isinstance(layer, Blockwise):
            mine = {k for k in needed if _name(k) == layer.output}
        elif isinstance(layer, MaterializedLayer):
            mine = {k for k in needed if _hashable(k) and k in layer.mapping}
        else:
            mine = {k for k in needed if k in layer}
        if not mine:
            continue
        needed -= mine
        if isinstance(layer, MaterializedLayer):
            work = list(mine)
            while work:
                key = work.pop()
                if key in out:
                    continue
                node = layer.mapping[key]
                out[key] = node
                for dep in _dependencies(node, known):
                    if dep in layer.mapping:
                        work.append(dep)
                    elif dep not in out:
                        needed.add(dep)
            continue
        culled, deps = layer.cull(mine, known)
        out.update(culled)
        for dep_keys in deps.values():
            needed |= {d for d in dep_keys if d not in out}
    missing = needed - set(out)
    if missing:
        raise KeyError(f"keys not in the graph: {sorted(map(str, missing))[:5]}")
    return out


def _hashable(key) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


class BlockKeys(Sequence):
    """The keys ``(name, *index)`` of some blocks of a grid, made a slice at a time.

    ``blocks`` is None (every block of ``grid``, in C order) or the flat indices of the blocks.

    Examples
    --------
    >>> from napari_im2im_uq.inference._graph import BlockKeys
    >>> keys = BlockKeys("b", (2, 3), [1, 5])
    >>> len(keys), keys[0], list(keys)
    (2, ('b', 0, 1), [('b', 0, 1), ('b', 1, 2)])
    """

    def __init__(self, name: str, grid: tuple, blocks=None):
        self.name, self.grid = name, tuple(int(n) for n in grid)
        total = int(np.prod(self.grid)) if self.grid else 1
        self.blocks = range(total) if blocks is None else np.asarray(blocks, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, item):
        if isinstance(item, slice):
            flat = np.asarray(self.blocks[item], dtype=np.int64)
            index = np.unravel_index(flat, self.grid)
            return [(self.name, *(int(v) for v in idx)) for idx in zip(*index, strict=True)]
        flat = int(self.blocks[item])
        return (self.name, *(int(v) for v in np.unravel_index(flat, self.grid)))

    def __iter__(self):
        for start in range(0, len(self), 4096):
            yield from self[start : start + 4096]


# -- moving data between chunks ---------------------------------------------------------------


def _bounds(chunks) -> list[np.ndarray]:
    return [np.cumsum((0, *c)) for c in chunks]


def _overlaps(bounds: np.ndarray, lo: int, hi: int):
    """``(chunk, start, stop)`` of the chunks along one axis overlapping ``[lo, hi)``."""
    first = int(np.searchsorted(bounds, lo, side="right")) - 1
    found = []
    for j in range(max(first, 0), len(bounds) - 1):
        a, b = max(lo, int(bounds[j])), min(hi, int(bounds[j + 1]))
        if int(bounds[j]) >= hi:
            break
        if a < b:
            found.append((j, a, b))
    return found


def _piece(name, bounds, parts):
    """Refer to the part ``parts`` (per axis ``(chunk, a, b)``) of a chunk of ``name``."""
    key = (name, *(j for j, _, _ in parts))
    whole = all(a == int(bd[j]) and b == int(bd[j + 1]) for bd, (j, a, b) in
                zip(bounds, parts, strict=True))
    if whole:
        return ref(key), key, None
    index = tuple(slice(a - int(bd[j]), b - int(bd[j])) for bd, (j, a, b)
                  in zip(bounds, parts, strict=True))
    return Task(None, operator.getitem, ref(key), index), key, index


def _assemble(nested, axis: int = 0):
    """Concatenate nested lists of arrays along axes 0, 1, ... (one level per axis)."""
    if not isinstance(nested, list):
        return nested
    parts = [_assemble(p, axis + 1) for p in nested]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def rechunk(arr, chunks):
    """``arr`` with ``chunks`` (per axis: a tuple of sizes, an int, or -1), as a rule.

    Values equal ``arr.rechunk(chunks)``; each chunk is assembled from the parts of ``arr``'s
    chunks it overlaps when it is computed. ``arr`` itself when the chunks are already these.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from napari_im2im_uq.inference._graph import rechunk
    >>> x = da.from_array(np.arange(30).reshape(5, 6), chunks=(2, 4))
    >>> y = rechunk(x, (3, 6))
    >>> y.chunks, bool((y.compute() == x.compute()).all())
    (((3, 2), (6,)), True)
    """
    import dask.array as da
    from dask.array.core import normalize_chunks

    if isinstance(chunks, dict):
        chunks = tuple(chunks.get(i, c) for i, c in enumerate(arr.chunks))
    chunks = tuple(arr.shape[i] if c == -1 else c for i, c in enumerate(chunks))
    chunks = normalize_chunks(chunks, arr.shape, dtype=arr.dtype)
    if chunks == arr.chunks:
        return arr
    name = f"im2im-rechunk-{tokenize(arr.name, chunks)}"
    src, out = _bounds(arr.chunks), _bounds(chunks)

    def build(index):
        key = (name, *index)
        per_axis = [_overlaps(s, int(o[i]), int(o[i + 1]))
                    for s, o, i in zip(src, out, index, strict=True)]
        if all(len(p) == 1 for p in per_axis):
            node, whole_key, sub = _piece(arr.name, src, [p[0] for p in per_axis])
            return {key: Alias(key, whole_key) if sub is None else
                    Task(key, operator.getitem, ref(whole_key), sub)}

        def nest(axis, chosen):
            if axis == len(per_axis):
                return _piece(arr.name, src, chosen)[0]
            return [nest(axis + 1, [*chosen, part]) for part in per_axis[axis]]

        return {key: task(key, _assemble, nest(0, []))}

    layer = BlockLayer(name, tuple(len(c) for c in chunks), build)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[arr])
    return da.Array(graph, name, chunks, meta=arr._meta)


def window_pieces(name: str, chunks, iz: int, y0: int, y1: int, x0: int, x1: int, halo: int,
                  scale: int, bounds=None):
    """Return the parts of the chunks of a (Z, C, Y, X) array covering a block's window.

    The window is rows ``[y0 - halo, y1 + halo)`` and columns ``[x0 - halo, x1 + halo)`` of
    block plane-chunk ``iz`` in input pixels (times ``scale`` in the array), clipped to the
    image; ``pads`` is what is missing at the image's borders, mirrored by the block's task.
    The array is one chunk along C. Returns ``(pieces, pads)``: ``pieces[i][j]`` is
    ``(key, index)``, a chunk's key and the slice of it (None: the whole chunk). ``bounds``:
    the chunks' ``[rows, columns]`` boundaries (cumulative sums), when the caller has them.
    """
    bounds = bounds or [None, None, *_bounds(chunks[2:])]
    rows, cols = int(bounds[2][-1]) // scale, int(bounds[3][-1]) // scale
    lo_r, hi_r = max(y0 - halo, 0), min(y1 + halo, rows)
    lo_c, hi_c = max(x0 - halo, 0), min(x1 + halo, cols)
    pads = ((lo_r - (y0 - halo), (y1 + halo) - hi_r), (lo_c - (x0 - halo), (x1 + halo) - hi_c))
    pieces = []
    for jy, a, b in _overlaps(bounds[2], lo_r * scale, hi_r * scale):
        row = []
        for jx, c, d in _overlaps(bounds[3], lo_c * scale, hi_c * scale):
            key = (name, iz, 0, jy, jx)
            whole = (a, b, c, d) == (bounds[2][jy], bounds[2][jy + 1], bounds[3][jx],
                                     bounds[3][jx + 1])
            index = None if whole else (
                slice(None),
                slice(None),
                slice(int(a - bounds[2][jy]), int(b - bounds[2][jy])),
                slice(int(c - bounds[3][jx]), int(d - bounds[3][jx])),
            )
            row.append((key, index))
        pieces.append(row)
    return pieces, pads


def piece_tasks(pieces, helper: str, index: tuple, tasks: dict):
    """Refs to the pieces of :func:`window_pieces`; slices become helper tasks in ``tasks``.

    A slice is its own task ``(helper, *index, k)`` (on a cluster it runs where the chunk is,
    and only the slice travels).
    """
    refs = []
    count = itertools.count()
    for row in pieces:
        out = []
        for key, sub in row:
            if sub is None:
                out.append(ref(key))
                continue
            sub_key = (helper, *index, next(count))
            tasks[sub_key] = Task(sub_key, operator.getitem, ref(key), sub)
            out.append(ref(sub_key))
        refs.append(out)
    return refs


def constant(key, value) -> DataNode:
    """Make a task whose result is ``value``."""
    return DataNode(key, value)

