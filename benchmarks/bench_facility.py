"""The facility run, end to end, on a generated virtual volume: predict -> stop -> resume ->
calibrate -> apply, on a ``dask.distributed.LocalCluster`` (issue 14).

For each virtual volume size (default 1, 10 and 100 GB of uint8 input, 8192 x 12288 planes,
computed chunk by chunk from the chunk's position, deterministically):

1. ``predict_to_zarr`` into an OME-Zarr store on a LocalCluster (2 worker processes, one
   thread each, ``--memory-limit`` each), stopped (the generator closed) after ``--first``
   blocks; time from the call to the first block written.
2. The same call again resumes the store: the done blocks are checked (their input's
   fingerprints) and ``--more`` blocks are written, then it is stopped again.
3. ``api.calibrate`` (intervals, RCPS Hoeffding-Bentkus, alpha = delta = 0.1) on a random plan
   of ``--tiles`` 64 x 64 tiles drawn inside the written blocks, against a generated ground
   truth (a deterministic function of position), reading the store lazily.
4. ``api.apply_record`` on the store's lazy outputs (``check_drift=False``; its planning time
   is the table's "plan s"), its products computed on the written blocks through the
   executor (``compute_outputs``: the tasks of those blocks only; ``dask.compute`` would run
   dask's graph optimisation over the whole volume's products first).
5. Equality with the in-memory path: every checked block's outputs against ``predict`` on a
   numpy crop of the input around the block (the crop's margins are the model's halo rounded to
   its divisor, or the image's edges, so the crop mirrors where the volume does), and the
   calibrated products of those blocks against ``apply_record`` on the in-memory outputs.

Resident memory of this (client) process and of each worker is sampled (psutil, every
0.1 s); the peaks are reported per size: the target is under 2 GB and flat in the volume size.

Before the timed runs, one block of a small volume is predicted on the cluster (imports in
every process, the model in the workers' caches: a facility's cluster that has run a job);
its time is reported apart.

The model is a tiny quantile U-Net (depth 1, 2 base channels, no norm; weights seeded, saved
as a bundle so workers load it by path): the run measures the pipeline (planning, stopping,
resuming, reading, writing, memory), not a model's quality, and ``tem-sr4x-quantile`` would
take minutes a block on two shared cores.

Measured (``python benchmarks/bench_facility.py --json ...``, each size in a fresh process, on
the 2-core machine with little else running, 2026-12-02; 1 / 10 / 100 GB = 3,840 / 38,016 /
381,312 blocks): first block written 0.44 / 0.53 / 0.62 s after the call; after the resume
0.93 / 0.97 / 1.13 s; calibration (200 tiles) 1.6 / 1.5 / 1.6 s; ``apply_record``'s planning
0.04 / 0.04 / 0.06 s; workers' peak 417 / 419 / 429 MB; the client's peak by phase: predict
357 / 357 / 358 MB, resume 363 / 362 / 365, calibrate 529 / 549 / 527, apply 522 / 530 / 528,
then this script's in-memory comparison 668 / 684 / 740 (the whole client peak). Outputs and
calibrated products on the compared blocks equal the in-memory path exactly (difference 0).
The same run under a load average of 10 (five other jobs on the two cores): first block 4.1 /
4.3 / 1.8 s, client 676 / 654 / 677 MB, workers 431 / 430 / 426 MB. Before the planning and
reading rewrites of issue 14 (one process for all sizes): calibration 24.6 / 32.9 / 40.4 s,
planning 1.7 / 11.5 / 34.1 s, client 610 / 679 / 1279 MB.

Usage::

    nice python benchmarks/bench_facility.py --json /tmp/facility.json
    nice python benchmarks/bench_facility.py --sizes 1 100 --first 8 --more 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_planning import procedural_volume  # noqa: E402

ROWS, COLS, TILE = 8192, 12288, 512
CAL_TILE = 64


def _truth_block(location):
    (z0, z1), (y0, y1), (x0, x1) = location
    z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
    return (0.5 + 0.4 * np.sin(0.01 * y + 0.013 * x + 0.1 * z)).astype(np.float32)


def truth_volume(shape):
    """Ground truth on the output grid: a deterministic function of position, float32."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    from napari_im2im_uq.inference._graph import BlockLayer, task

    chunks = da.core.normalize_chunks((1, TILE, TILE), shape)
    bounds = [np.cumsum((0, *c)) for c in chunks]
    name = f"truth-{da.core.tokenize(shape)}"

    def build(index):
        location = tuple((int(b[i]), int(b[i + 1])) for b, i in zip(bounds, index, strict=True))
        return {(name, *index): task((name, *index), _truth_block, location)}

    graph = HighLevelGraph.from_collections(
        name, BlockLayer(name, tuple(len(c) for c in chunks), build), dependencies=[])
    return da.Array(graph, name, chunks, meta=np.empty((0, 0, 0), dtype=np.float32))


def tiny_bundle(folder: Path):
    import torch

    from napari_im2im_uq.models import Im2ImModel, build_network, save_model

    torch.manual_seed(0)
    net = build_network("quantile", depth=1, base_channels=2, norm="none")
    model = Im2ImModel(net, {"heuristic": "quantile", "name": "facility-tiny",
                             "preprocessing": [{"id": "scale_dtype_range"}],
                             "output_range": [0.0, 1.0]})
    return save_model(model, folder)


class Sampler:
    """Peak resident memory of this process and of the workers, sampled every 0.1 s."""

    def __init__(self, pids: dict):
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(self.procs, 0)
        self.phases: dict = {}  # phase -> peak of the client during it (MB)
        self.phase = None
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            for name, proc in self.procs.items():
                with contextlib.suppress(Exception):  # a restarted worker
                    rss = proc.memory_info().rss
                    self.peak[name] = max(self.peak[name], rss)
                    if name == "client" and self.phase is not None:
                        self.phases[self.phase] = max(self.phases.get(self.phase, 0), rss / 1e6)
            time.sleep(0.1)

    def stop(self) -> dict:
        self.running = False
        self.thread.join()
        return {k: v / 1e6 for k, v in self.peak.items()}

    def enter(self, phase: str) -> None:
        time.sleep(0.15)  # one sample of the phase before
        self.phase = phase


def _written(store: Path, grid) -> list:
    from napari_im2im_uq.inference._zarr import _read_marks

    return [tuple(int(v) for v in b) for b in np.argwhere(_read_marks(store, grid))]


def _run_until(gen, blocks: int):
    """Iterate a prediction job until ``blocks`` more blocks are written; then stop it."""
    t0 = time.perf_counter()
    first_seen, first_block, start = None, None, None
    for done, _total in gen:
        if start is None:
            start = done
            first_seen = time.perf_counter() - t0
            continue
        if first_block is None:
            first_block = time.perf_counter() - t0
        if done - start >= blocks:
            break
    gen.close()
    return start, first_seen, first_block, time.perf_counter() - t0


def _crop_reference(model, volume, block, halo_margin):
    """Outputs of the in-memory path (a numpy crop around the block) on the block's region."""
    from napari_im2im_uq.inference import predict

    iz, iy, ix = block
    y0, x0 = iy * TILE, ix * TILE
    y1, x1 = min(y0 + TILE, volume.shape[1]), min(x0 + TILE, volume.shape[2])
    a, b = max(0, y0 - halo_margin), min(volume.shape[1], y1 + halo_margin)
    c, d = max(0, x0 - halo_margin), min(volume.shape[2], x1 + halo_margin)
    crop = np.asarray(volume[iz, a:b, c:d].compute())
    out = predict(model, crop, axes="YX", tile_shape=crop.shape, device="cpu")
    return {k: np.asarray(v.compute())[y0 - a : y1 - a, x0 - c : x1 - c] for k, v in out.items()}


def _warm():
    import torch  # noqa: F401

    import napari_im2im_uq.inference._worker  # noqa: F401
    import napari_im2im_uq.inference._zarr  # noqa: F401


def warm_up(client, bundle: Path, tmp: Path) -> dict:
    """Imports in every process and the model in the workers' caches: a one-block run."""
    from napari_im2im_uq.inference import predict_to_zarr

    t0 = time.perf_counter()
    client.run(_warm)
    _warm()
    imports = time.perf_counter() - t0
    volume = procedural_volume((1, TILE, 2 * TILE), (1, TILE, TILE))
    gen = predict_to_zarr(bundle, volume, tmp / "warm.zarr", axes="ZYX",
                          tile_shape=(TILE, TILE), scheduler=client, device="cpu")
    _, _, first, _ = _run_until(gen, 2)
    return {"imports_s": imports, "first_block_cold_model_s": first}


def run_size(gb: float, args, client, workers: dict, tmp: Path, bundle: Path) -> dict:
    from napari_im2im_uq import api
    from napari_im2im_uq._jobs import run_to_end
    from napari_im2im_uq.inference import compute_outputs, predict_to_zarr
    from napari_im2im_uq.inference._store import read_outputs
    from napari_im2im_uq.models import load_cached

    planes = max(1, round(gb * 1e9 / (ROWS * COLS)))
    shape = (planes, ROWS, COLS)
    volume = procedural_volume(shape, (1, TILE, TILE))
    model = load_cached(bundle)
    store = tmp / f"pred-{gb:g}gb.zarr"
    grid = (planes, -(-ROWS // TILE), -(-COLS // TILE))
    sampler = Sampler({"client": __import__("os").getpid(), **workers})
    row = {"virtual_gb": planes * ROWS * COLS / 1e9, "shape": list(shape),
           "blocks_total": int(np.prod(grid)), "tile": TILE}
    sampler.enter("predict")
    t0 = time.perf_counter()
    gen = predict_to_zarr(bundle, volume, store, axes="ZYX", tile_shape=(TILE, TILE),
                          scheduler=client, device="cpu")
    row["call_s"] = time.perf_counter() - t0
    start, _, first, seconds = _run_until(gen, args.first)
    row["first_block_s"] = row["call_s"] + first
    row["first_run"] = {"blocks": len(_written(store, grid)), "seconds": row["call_s"] + seconds}
    sampler.enter("resume")
    t0 = time.perf_counter()
    gen = predict_to_zarr(bundle, volume, store, axes="ZYX", tile_shape=(TILE, TILE),
                          scheduler=client, device="cpu")
    resumed_at, _, first, seconds = _run_until(gen, args.more)
    written = _written(store, grid)
    row["resume"] = {"found_done": resumed_at, "first_block_s": time.perf_counter() - t0 - seconds
                     + first, "blocks": len(written), "seconds": time.perf_counter() - t0}
    # calibrate on a random plan of tiles inside the written blocks
    rng = np.random.default_rng(args.seed)
    per = TILE // CAL_TILE
    picks = rng.choice(len(written) * per * per, size=min(args.tiles, len(written) * per * per),
                       replace=False)
    regions = []
    for p in np.sort(picks):
        (iz, iy, ix), k = written[p // (per * per)], p % (per * per)
        r, c = iy * TILE + (k // per) * CAL_TILE, ix * TILE + (k % per) * CAL_TILE
        rr = np.array([r, r, r + CAL_TILE, r + CAL_TILE], float) - 0.5
        cc = np.array([c, c + CAL_TILE, c + CAL_TILE, c], float) - 0.5
        regions.append(np.stack([np.full(4, float(iz)), rr, cc], axis=1))
    sampler.enter("calibrate")
    outputs = read_outputs(store, warn_incomplete=False)
    truth = truth_volume(shape)
    t0 = time.perf_counter()
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.1, delta=0.1,
                        tile_shape=(CAL_TILE, CAL_TILE), regions=regions)
    row["calibrate"] = {"tiles": len(regions), "seconds": time.perf_counter() - t0,
                        "lam": float(cal.result.lam)}
    # apply lazily; compute the products on written blocks; compare with memory
    sampler.enter("apply")
    t0 = time.perf_counter()
    shown = api.apply_record(cal.record, outputs, check_drift=False)
    row["apply_plan_s"] = time.perf_counter() - t0
    check = written[: args.check]
    halo, div = int(model.halo), int(model.divisor)
    margin = -(-halo // div) * div
    diff_out, diff_prod, t_apply = 0.0, 0.0, 0.0
    sampler.enter("compare")
    for block in check:
        iz, iy, ix = block
        region = (iz, slice(iy * TILE, (iy + 1) * TILE), slice(ix * TILE, (ix + 1) * TILE))
        ref = _crop_reference(model, volume, block, margin)
        stored = {k: np.asarray(v[region].compute()) for k, v in outputs.items()}
        diff_out = max(diff_out, *(float(np.abs(stored[k] - ref[k]).max()) for k in ref))
        t1 = time.perf_counter()  # through the one executor (a wave's tasks), as apply runs
        lazy = [run_to_end(compute_outputs({"p": data[region]}))["p"] for data, _, _ in shown]
        t_apply += time.perf_counter() - t1
        memory = api.apply_record(cal.record, ref, check_drift=False)
        for got, (want, _, _) in zip(lazy, memory, strict=True):
            diff_prod = max(diff_prod, float(np.nanmax(np.abs(np.asarray(got, float)
                                                              - np.asarray(want, float)))))
    row["apply"] = {"products": [kw["name"] for _, kw, _ in shown], "blocks": len(check),
                    "seconds": t_apply}
    row["max_diff_outputs_vs_memory"] = diff_out
    row["max_diff_products_vs_memory"] = diff_prod
    row["peak_rss_mb"] = sampler.stop()
    row["client_peak_by_phase_mb"] = dict(sampler.phases)
    shutil.rmtree(store, ignore_errors=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100],
                        help="virtual input sizes in GB")
    parser.add_argument("--first", type=int, default=12, help="blocks before the stop")
    parser.add_argument("--more", type=int, default=12, help="blocks after the resume")
    parser.add_argument("--tiles", type=int, default=200, help="calibration tiles")
    parser.add_argument("--check", type=int, default=4, help="blocks compared with memory")
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one-process", action="store_true",
                        help="run every size in this process (by default each size runs in a "
                             "fresh process with its own cluster, so a size's peak memory is "
                             "not what the sizes before it left behind)")
    args = parser.parse_args(argv)
    if len(args.sizes) > 1 and not args.one_process:
        return _fresh_processes(args, argv)

    import distributed

    rows = []
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  memory_limit=args.memory_limit,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        import os

        pids = client.run(os.getpid)
        workers = {f"worker{i}": pid for i, pid in enumerate(pids.values())}
        with tempfile.TemporaryDirectory(prefix="bench-facility-") as tmp:
            bundle = tiny_bundle(Path(tmp) / "bundle")
            warm = warm_up(client, bundle, Path(tmp))
            print(f"  warm-up: {warm}", file=sys.stderr)
            for gb in args.sizes:
                rows.append(run_size(gb, args, client, workers, Path(tmp), bundle))
                print(f"  {json.dumps(rows[-1])}", file=sys.stderr)
    _print_table(rows, warm, args)
    return 0


def _fresh_processes(args, argv) -> int:
    """Run each size of ``args.sizes`` in a fresh process; print and save the rows together."""
    import subprocess

    argv = list(sys.argv[1:] if argv is None else argv)
    rest, skip = [], False
    for a in argv:  # drop --sizes and --json (each child gets its own)
        if skip and not a.startswith("--"):
            continue
        skip = a in ("--sizes", "--json")
        if not skip:
            rest.append(a)
    rows, warm = [], None
    with tempfile.TemporaryDirectory(prefix="bench-facility-runs-") as tmp:
        for gb in args.sizes:
            out = Path(tmp) / f"{gb}.json"
            subprocess.run([sys.executable, __file__, "--sizes", str(gb), "--json", str(out),
                            *rest], check=True, stdout=subprocess.DEVNULL)
            got = json.loads(out.read_text())
            rows += got["runs"]
            warm = got["warm_up"]
    _print_table(rows, warm, args, fresh=True)
    return 0


def _print_table(rows, warm, args, *, fresh=False) -> None:
    where = "each size in a fresh process" if fresh or len(rows) == 1 else "one process"
    print(f"\nFacility run ({where}): tiny U-Net, {TILE} x {TILE} blocks, LocalCluster "
          f"2 processes x 1 thread, {args.memory_limit} each; stop after {args.first} blocks, "
          f"resume for {args.more}; {args.tiles} calibration tiles of {CAL_TILE} x {CAL_TILE}")
    print(f"{'GB':>6} {'blocks':>8} {'1st block s':>11} {'resume 1st s':>12} {'calib s':>8} "
          f"{'plan s':>7} {'client MB':>9} {'workers MB':>11} {'diff out':>9} "
          f"{'diff prod':>9}")
    for r in rows:
        peaks = r["peak_rss_mb"]
        w = max(v for k, v in peaks.items() if k != "client")
        print(f"{r['virtual_gb']:>6.1f} {r['blocks_total']:>8} {r['first_block_s']:>11.2f} "
              f"{r['resume']['first_block_s']:>12.2f} {r['calibrate']['seconds']:>8.1f} "
              f"{r['apply_plan_s']:>7.2f} {peaks['client']:>9.0f} {w:>11.0f} "
              f"{r['max_diff_outputs_vs_memory']:>9.1e} "
              f"{r['max_diff_products_vs_memory']:>9.1e}")
    print(f"warm-up (not in the table): imports {warm['imports_s']:.1f} s, first block with "
          f"the model loaded by the workers {warm['first_block_cold_model_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "warm_up": warm,
                                         "args": vars(args) | {"json": None}},
                                        indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
