"""The one executor: runs the tasks of a dask graph with progress and cancel.

Two backends run the same graph: threads in this process (``scheduler=None``) or a
``dask.distributed`` scheduler (an address or a ``Client``). :func:`run_graph` is a generator
that yields ``(done, total)`` after each task it was asked for finishes; closing it
(``GeneratorExit``: ``gen.close()``, a napari worker's quit) cancels, letting the tasks in
flight finish and starting no new one. Memory output (:func:`compute_outputs`) and zarr
output (:func:`~napari_im2im_uq.inference.predict_to_zarr`) both run here.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

__all__ = ["check_scheduler", "compute_outputs", "run_graph"]

#: Tasks handed to the scheduler at once (the first waves are smaller: see :func:`_waves`).
WAVE = 512
#: Size of the first wave: the first block starts after a few blocks' tasks are built.
FIRST_WAVE = 8


def _waves(n: int):
    """``(start, stop)`` of the waves over ``n`` keys: 8, 16, 32, ... keys, then :data:`WAVE`."""
    start, size = 0, min(FIRST_WAVE, WAVE)
    while start < n:
        yield start, min(start + size, n)
        start, size = start + size, min(2 * size, WAVE)


class _Cancelled(Exception):
    pass


def check_scheduler(scheduler) -> None:
    """Refuse a ``scheduler`` that is not None, an address or a ``distributed.Client``."""
    if scheduler is None or isinstance(scheduler, str):
        return
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is optional
        Client = ()  # noqa: N806
    if not isinstance(scheduler, Client):
        raise ValueError(
            "scheduler must be None (threads in this process), a dask scheduler address or a "
            f"dask.distributed.Client; got {type(scheduler).__name__}"
        )


def _sinks(wave, collect, name: str, start: int) -> dict:
    """Tasks that hand each result of ``wave`` to ``collect`` in the thread that made it."""
    from ._graph import ref, task

    return {(name, start + i): task((name, start + i), partial(_sink, collect=collect, key=key),
                                    ref(key))
            for i, key in enumerate(wave)}


def _run_local(graph, keys, done: int, total: int, collect):
    from dask.threaded import get

    from ._graph import wave_graph

    wanted: set = set()
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def pretask(key, dsk, state):
        if cancel.is_set():
            raise _Cancelled

    def posttask(key, result, dsk, state, worker_id):
        if key in wanted:
            events.put(("task", None))

    workers = max(2, os.cpu_count() or 2)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="im2im-exec")
    sink = f"im2im-sink-{uuid.uuid4().hex}"

    def target():
        try:
            # Waves of tasks, each built when it starts: the scheduler's state and the graph
            # held stay the size of a wave however large the volume.
            for start, stop in _waves(len(keys)):
                if cancel.is_set():
                    break
                wave = list(keys[start:stop])
                dsk = wave_graph(graph, wave)
                if collect is not None:
                    sinks = _sinks(wave, collect, sink, start)
                    dsk.update(sinks)
                    wave = list(sinks)
                wanted.clear()
                wanted.update(wave)
                get(dsk, wave, pool=pool, num_workers=workers,
                    callbacks=[(None, None, pretask, posttask, None)])
                del dsk
            events.put(("end", None))
        except _Cancelled:
            events.put(("end", None))
        except BaseException as err:  # noqa: BLE001 - handed to the generator's caller
            events.put(("error", err))

    thread = threading.Thread(target=target, name="im2im-exec-scheduler", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "task":
                done += 1
                yield done, total
            elif kind == "error":
                raise value
            else:
                return
    finally:
        cancel.set()
        thread.join()
        pool.shutdown(wait=True)


def _run_distributed(graph, keys, done: int, total: int, scheduler, collect):
    from distributed import Client, as_completed

    from ._graph import wave_graph

    own = not isinstance(scheduler, Client)
    client = Client(scheduler, set_as_default=False) if own else scheduler
    pending: set = set()
    waves = _waves(len(keys))
    left = [len(keys), 0]  # keys not yet sent, size of the last wave sent

    def submit():
        # A wave's tasks, built now and sent at once. The next wave goes when fewer tasks than
        # the last wave are left in flight: the cluster always has work queued, and the client
        # (and the scheduler) never handle more than about two waves at a time.
        start, stop = next(waves)
        left[:] = [left[0] - (stop - start), stop - start]
        wave = list(keys[start:stop])
        futures = client.get(wave_graph(graph, wave), wave, sync=False)
        pending.update(futures)
        return futures

    try:
        completed = as_completed(submit(), loop=client.loop)
        for future in completed:
            value = future.result()  # raises the task's error
            if collect is not None:
                collect(future.key, value)
            del value
            pending.discard(future)
            future.release()  # a lost worker must not make a finished task run again
            del future
            done += 1
            yield done, total
            if left[0] and len(pending) < left[1]:
                completed.update(submit())
    finally:
        if pending:
            client.cancel(list(pending))
        if own:
            client.close()


def _sink(value, *, collect, key):
    collect(key, value)


def run_graph(graph, keys, *, scheduler=None, done: int = 0, total: int | None = None,
              collect=None):
    """Run ``keys`` of ``graph`` (a ``HighLevelGraph``); a generator of ``(done, total)``.

    Parameters
    ----------
    graph : dask.highlevelgraph.HighLevelGraph
    keys : sequence
        The tasks to run (and count); their dependencies run as needed. A list, or anything
        with ``len`` and slices (:class:`._graph.BlockKeys`): the keys and their tasks are
        made a wave (:data:`WAVE` keys) at a time, when the wave starts.
    scheduler : None, str or distributed.Client
        None: threads in this process. An address or a ``Client``: that cluster.
    done, total : int
        Where the count starts (tasks already done elsewhere) and its end (default
        ``done + len(keys)``).
    collect : callable, optional
        ``collect(key, value)`` receives each key's result in this process (locally in the
        task's thread, right after the task; from a cluster as results arrive), so results
        are never held until the end.

    Yields
    ------
    (int, int)
        After each task of ``keys`` finishes.
    """
    total = done + len(keys) if total is None else total
    if not len(keys):
        return
    if scheduler is None:
        yield from _run_local(graph, keys, done, total, collect)
    else:
        yield from _run_distributed(graph, keys, done, total, scheduler, collect)


def _pack(*parts):
    return parts


def compute_outputs(outputs: dict, *, scheduler=None):
    """Compute lazy outputs into numpy arrays, block by block; a job generator.

    Yields ``(done_blocks, total_blocks)`` (first ``(0, total)``) and returns a dict of
    numpy arrays (``StopIteration.value``). The outputs of one block come from one task, so
    views of one stacked array (the outputs of :func:`predict`) run the model once per block
    for all of them. Closing the generator cancels: blocks in flight finish, no new one
    starts. Memory holds the results and the blocks in flight only.

    Parameters
    ----------
    outputs : dict of str to dask.array.Array
        Arrays on one block grid: their last dimensions are chunked alike; leading
        dimensions that only some have (e.g. the class axis of ``probabilities``) must be
        one chunk.
    scheduler : None, str or distributed.Client
        As for :func:`run_graph`.

    Returns
    -------
    generator
        Yields ``(int, int)``; returns ``dict`` of str to numpy.ndarray.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from napari_im2im_uq.inference import compute_outputs
    >>> from napari_im2im_uq._jobs import run_to_end
    >>> x = da.arange(16, chunks=4).reshape(4, 4).rechunk(2)
    >>> out = run_to_end(compute_outputs({"a": x, "b": 2 * x}))
    >>> int(out["b"][3, 3]), type(out["a"]).__name__
    (30, 'ndarray')
    """
    import dask
    from dask.highlevelgraph import HighLevelGraph

    from ._graph import BlockKeys, BlockLayer, ref, task

    check_scheduler(scheduler)
    if not outputs:
        raise ValueError("outputs must hold at least one array; got an empty dict")
    names = list(outputs)
    arrays = [outputs[k] for k in names]
    grid_ndim = min(a.ndim for a in arrays)
    grid_ref = min(arrays, key=lambda a: a.ndim)
    grid = grid_ref.numblocks
    for k, a in zip(names, arrays, strict=True):
        lead = a.ndim - grid_ndim
        if a.chunks[lead:] != grid_ref.chunks or any(n != 1 for n in a.numblocks[:lead]):
            raise ValueError(
                f"outputs must share one block grid; {k!r} has chunks {a.chunks}, the grid is "
                f"{grid_ref.chunks}"
            )
    starts = [np.r_[0, np.cumsum(c)] for c in grid_ref.chunks]
    result = {k: np.empty(a.shape, dtype=a.dtype) for k, a in zip(names, arrays, strict=True)}
    leads = [a.ndim - grid_ndim for a in arrays]
    name = f"im2im-blocks-{dask.base.tokenize(*arrays)}"

    def build(idx):
        key = (name, *idx)
        return {key: task(key, _pack, *[ref((a.name, *(0,) * n, *idx))
                                         for a, n in zip(arrays, leads, strict=True)])}

    graph = HighLevelGraph.from_collections(name, BlockLayer(name, grid, build),
                                            dependencies=list(arrays))

    def collect(key, parts):
        region = tuple(slice(int(s[j]), int(s[j + 1])) for s, j in zip(starts, key[1:],
                                                                     strict=True))
        for k, n, part in zip(names, leads, parts, strict=True):
            result[k][(slice(None),) * n + region] = part

    keys = BlockKeys(name, grid)
    return _compute(graph, keys, len(keys), scheduler, collect, result)


def _compute(graph, keys, total, scheduler, collect, result):
    yield 0, total
    yield from run_graph(graph, keys, scheduler=scheduler, total=total, collect=collect)
    return result
