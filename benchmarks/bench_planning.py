"""Planning a prediction: time from the call to the first block written, and memory, old vs new.

The old path (kept here only, for this side-by-side) built the prediction graph by a Python
loop over every block (one dict entry per block and per halo piece, dask's ``rechunk`` and
slicing tables), the store graph and the fingerprints likewise for every pending block, and
culled the whole high-level graph for each wave of 512 keys. The new path
(``inference._graph``) keeps every layer a rule and builds the tasks of a wave when the wave
starts.

Each run is a fresh process: ``predict_to_zarr`` of a tiny model (U-Net depth 1, 2 base
channels, no norm) on a generated lazy volume (uint8, computed chunk by chunk from its index,
chunks = the blocks: 32 x 32 tiles, 10 x 10 blocks per plane), into a temporary store; the
generator is closed after the first block is written. Reported: seconds from the call to the
first block written, resident memory when it is written and the peak, both above the
process's resident memory before the call (imports, model).

Measured (this script as below, 2 CPU cores shared with four other jobs, load ~8):
first block written 3.89 / 12.65 / 33.56 s old, 0.75 / 0.54 / 0.49 s new; resident memory
when it is written 91 / 457 / 1631 MB old, 30 / 31 / 31 MB new (1,600 / 25,600 / 102,400
blocks).

Usage::

    nice python benchmarks/bench_planning.py                      # 1,600 / 25,600 / 102,400
    nice python benchmarks/bench_planning.py --blocks 1600 25600 --json out.json
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TILE = 32
PER_SIDE = 10


def _procedural_block(location):
    (z0, z1), (y0, y1), (x0, x1) = location
    z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
    value = (z * 2_654_435_761 + y * 40_503 + x * 9_973) % 251
    return (value ^ ((y * x) % 7)).astype(np.uint8)


def procedural_volume(shape, chunks):
    """A lazy uint8 volume whose every chunk is a deterministic function of its position.

    Its graph is a rule (``inference._graph.BlockLayer``): ``da.map_blocks`` with
    ``block_info`` would build a table with an entry per chunk (hundreds of MB for the
    facility run's 400,000 chunks) before anything is planned.
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    from napari_im2im_uq.inference._graph import BlockLayer, task

    chunks = da.core.normalize_chunks(chunks, shape)
    bounds = [np.cumsum((0, *c)) for c in chunks]
    name = f"procedural-{da.core.tokenize(shape, chunks)}"

    def build(index):
        location = tuple((int(b[i]), int(b[i + 1])) for b, i in zip(bounds, index, strict=True))
        return {(name, *index): task((name, *index), _procedural_block, location)}

    layer = BlockLayer(name, tuple(len(c) for c in chunks), build)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    return da.Array(graph, name, chunks, meta=np.empty((0, 0, 0), dtype=np.uint8))


def tiny_model():
    import torch

    from napari_im2im_uq.models import Im2ImModel, build_network

    torch.manual_seed(0)
    net = build_network("quantile", depth=1, base_channels=2, norm="none")
    return Im2ImModel(net, {"heuristic": "quantile", "name": "bench-tiny",
                            "preprocessing": [{"id": "scale_dtype_range"}]})


# -- the old path (before issue 14): a loop over every block ----------------------------------


def _old_window_pieces(arr, iz, y0, y1, x0, x1, halo, scale, dsk, prefix):
    rows, cols = arr.shape[2] // scale, arr.shape[3] // scale
    lo_r, hi_r = max(y0 - halo, 0), min(y1 + halo, rows)
    lo_c, hi_c = max(x0 - halo, 0), min(x1 + halo, cols)
    pads = ((lo_r - (y0 - halo), (y1 + halo) - hi_r), (lo_c - (x0 - halo), (x1 + halo) - hi_c))
    bounds_r = np.cumsum((0, *arr.chunks[2]))
    bounds_c = np.cumsum((0, *arr.chunks[3]))
    pieces = []
    for jy in range(len(arr.chunks[2])):
        a, b = max(lo_r * scale, bounds_r[jy]), min(hi_r * scale, bounds_r[jy + 1])
        if a >= b:
            continue
        row = []
        for jx in range(len(arr.chunks[3])):
            c, d = max(lo_c * scale, bounds_c[jx]), min(hi_c * scale, bounds_c[jx + 1])
            if c >= d:
                continue
            key = (arr.name, iz, 0, jy, jx)
            whole = (a, b, c, d) == (bounds_r[jy], bounds_r[jy + 1], bounds_c[jx], bounds_c[jx + 1])
            if not whole:
                index = (slice(None), slice(None), slice(int(a - bounds_r[jy]), int(b - bounds_r[jy])),
                         slice(int(c - bounds_c[jx]), int(d - bounds_c[jx])))
                sub = (prefix, iz, jy, jx, int(a), int(b), int(c), int(d))
                dsk[sub] = (operator.getitem, key, index)
                key = sub
            row.append(key)
        pieces.append(row)
    return pieces, pads


def _old_block_graph(name, x, pred, *, scale, halo, ref, run, n_channels, check):
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    from napari_im2im_uq.inference._predict import _checked_block

    model_key = f"im2im-model-{ref.token[:24]}"
    dsk: dict = {model_key: ref}
    bounds = [np.cumsum((0, *c)) for c in x.chunks]
    for iz in range(len(x.chunks[0])):
        for iy in range(len(x.chunks[2])):
            y0, y1 = int(bounds[2][iy]), int(bounds[2][iy + 1])
            for ix in range(len(x.chunks[3])):
                x0, x1 = int(bounds[3][ix]), int(bounds[3][ix + 1])
                pieces, pads = _old_window_pieces(x, iz, y0, y1, x0, x1, halo, 1, dsk,
                                                  f"{name}-in")
                task = (_partial(run, pads=pads), model_key, pieces, None)
                if check is not None:
                    func = _partial(_checked_block, run=task[0], name=name,
                                    origin=(int(bounds[0][iz]), y0, x0), **check)
                    task = (func, model_key, pieces, None, (x.name, iz, 0, iy, ix))
                dsk[(name, iz, 0, iy, ix)] = task
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    chunks = (x.chunks[0], (n_channels,), tuple(c * scale for c in x.chunks[2]),
              tuple(c * scale for c in x.chunks[3]))
    return da.Array(graph, name, chunks, meta=np.empty((0, 0, 0, 0), dtype=np.float32))


def _partial(func, **kwargs):
    from functools import partial

    return partial(func, **kwargs)


def _old_canonical(arr, axes):
    present = [a for a in "ZCYX" if a in axes]
    arr = arr.transpose([axes.index(a) for a in present])
    return arr[tuple(slice(None) if a in axes else None for a in "ZCYX")]


def _old_store_graph(plan, pending, path, run_id):
    from dask.highlevelgraph import HighLevelGraph

    from napari_im2im_uq.inference._store import _fingerprint
    from napari_im2im_uq.inference._zarr import _grid, _store_block

    if pending is None:  # the old _start listed every pending block
        pending = [tuple(int(i) for i in idx) for idx in np.argwhere(np.zeros(_grid(plan)) == 0)]
    else:
        pending = [tuple(int(v) for v in np.unravel_index(i, _grid(plan))) for i in pending]
    stacked = plan.stacked
    bounds = [np.cumsum((0, *c)) for c in stacked.chunks]
    name = f"im2im-store-{run_id}"
    dsk: dict = {}
    pz, br, bc = plan.block_shape
    src = plan.source.rechunk((pz, plan.source.shape[1], br, bc))
    sb = [np.cumsum((0, *c)) for c in src.chunks]
    prints = f"im2im-print-{run_id}"
    for iz, iy, ix in pending:
        pieces, _ = _old_window_pieces(src, iz, int(sb[2][iy]), int(sb[2][iy + 1]),
                                       int(sb[3][ix]), int(sb[3][ix + 1]), plan.halo, 1, dsk,
                                       f"{prints}-in")
        dsk[(prints, iz, iy, ix)] = (_fingerprint, pieces)
    for iz, iy, ix in pending:
        origin = (int(bounds[0][iz]), int(bounds[2][iy]), int(bounds[3][ix]))
        func = _partial(_store_block, path=path, run_id=run_id, layout=plan.layout,
                        has_z=plan.has_z, index=(iz, iy, ix), origin=origin)
        dsk[(name, iz, iy, ix)] = (func, (stacked.name, iz, 0, iy, ix), (prints, iz, iy, ix))
    keys = [k for k in dsk if k[0] == name]
    return HighLevelGraph.from_collections(name, dsk, dependencies=[stacked, src]), keys


def _old_run_local(graph, keys, done, total, collect):
    import queue

    from dask.threaded import get

    from napari_im2im_uq.inference import _executor

    events: queue.Queue = queue.Queue()
    wanted = set(keys)

    def posttask(key, result, dsk, state, worker_id):
        if key in wanted:
            events.put(("task", None))

    stop = threading.Event()

    def pretask(key, dsk, state):
        if stop.is_set():
            raise _executor._Cancelled

    def target():
        try:
            for start in range(0, len(keys), _executor.WAVE):
                wave = keys[start : start + _executor.WAVE]
                get(dict(graph.cull(set(wave))), wave, num_workers=2,
                    callbacks=[(None, None, pretask, posttask, None)])
        except _executor._Cancelled:
            pass
        events.put(("end", None))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        while True:
            kind, _ = events.get()
            if kind != "task":
                return
            done += 1
            yield done, total
    finally:
        stop.set()
        thread.join()


def use_old_path() -> None:
    """Put the old planning back in place (this process only)."""
    from napari_im2im_uq.inference import _executor, _predict, _zarr

    _predict._block_graph = _old_block_graph
    _predict._canonical = _old_canonical
    _predict.rechunk = lambda arr, chunks: arr.rechunk(chunks)
    _zarr._store_graph = _old_store_graph
    _executor._run_local = _old_run_local


# -- one run -----------------------------------------------------------------------------------


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child(blocks: int, old: bool) -> dict:
    import torch

    from napari_im2im_uq.inference import predict_to_zarr

    torch.set_num_threads(1)
    if old:
        use_old_path()
    planes = blocks // (PER_SIDE * PER_SIDE)
    side = TILE * PER_SIDE
    volume = procedural_volume((planes, side, side), (1, TILE, TILE))
    model = tiny_model()
    peak = {"rss": 0}
    running = threading.Event()
    running.set()

    def sample():
        while running.is_set():
            peak["rss"] = max(peak["rss"], _rss())
            time.sleep(0.005)

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        base = _rss()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        gen = predict_to_zarr(model, volume, Path(tmp) / "o.zarr", axes="ZYX",
                              tile_shape=(TILE, TILE), device="cpu")
        first = next(gen)
        t_start = time.perf_counter() - t0
        second = next(gen)
        t_block = time.perf_counter() - t0
        rss_block = _rss()
        gen.close()
        running.clear()
        sampler.join()
    assert first == (0, blocks) and second[0] == 1
    return {"blocks": blocks, "path": "old" if old else "new", "call_to_job_s": t_start,
            "call_to_first_block_s": t_block, "rss_at_first_block_mb": (rss_block - base) / 1e6,
            "peak_rss_mb": (max(peak["rss"], rss_block) - base) / 1e6,
            "base_rss_mb": base / 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[1600, 25600, 102400])
    parser.add_argument("--paths", nargs="+", default=["old", "new"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("BLOCKS", "PATH"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1] == "old")))
        return 0
    rows = []
    for blocks in args.blocks:
        for path in args.paths:
            out = subprocess.run([sys.executable, __file__, "--child", str(blocks), path],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  {rows[-1]}", file=sys.stderr)
    print(f"\nPlanning: tiny U-Net, {TILE} x {TILE} tiles, {PER_SIDE} x {PER_SIDE} blocks a plane, "
          "lazy uint8 input; memory above the process before the call")
    print(f"{'blocks':>8} {'path':>4} {'first block (s)':>16} {'RSS then (MB)':>14} "
          f"{'peak (MB)':>10}")
    for r in rows:
        print(f"{r['blocks']:>8} {r['path']:>4} {r['call_to_first_block_s']:>16.2f} "
              f"{r['rss_at_first_block_mb']:>14.0f} {r['peak_rss_mb']:>10.0f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "tile": TILE, "per_side": PER_SIDE},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
