"""Calibration speed and memory, each side by side with the approach it replaces (one run).

(a) ``calibrate_intervals`` with Hoeffding-Bentkus on 100 tiles of 512 x 512 against the
    reference algorithm of the im2im-uq code: a loop over a grid of 1000 lambdas computing the
    mean loss and the HB bound at each one (scan from the safe end).
(b) ``calibrate_trust_mask`` on 100 tiles of 1024 x 1024 against Algorithm 1 of Adame et al.
    (Appendix C) written as a plain loop over the globally sorted pixels.
(c) Peak traced memory of ``calibrate_intervals`` on dask inputs of 100 and 400 tiles (the same
    chunk size). Lazy inputs are now read once and their critical values kept (8 bytes a
    pixel, up to 1 GiB, then streamed): the peak grows with n by that much.
(d) Every method, rule and bound on the same tiles (512 tiles of 64 x 64), with the risk curve
    on as the widgets use it: the new single-pass core against the previous one (frozen in
    ``tests/_calibration_old``), in memory and on lazy (dask) inputs whose chunk reads are
    counted (``passes``: the most reads of any chunk), and each time against the new
    Hoeffding-Bentkus intervals on the same tiles.
(e) WSR against Hoeffding-Bentkus intervals on the same tiles in memory (256 and 1,024 tiles of
    64 x 64, the sizes of issue 14's figures), risk curve on.
(f) The mask method, every rule and distance, against Hoeffding-Bentkus intervals on the same
    tiles in memory (512 and 1,024 tiles of 64 x 64), curve on, runs interleaved; with the
    float32 mask of (d) (sorted by its bits), and the same mask computed in float64 (values
    that are not float32 ones: a stable argsort per tile, four radix passes pooled).

Usage::

    python benchmarks/bench_calibration.py [--quick] [--json PATH] [--only SECTIONS]

``--quick`` shrinks every size by 16x (a smoke run; the ratios are then not the issue's).
``--only f`` (or ``de``, ...) runs those sections only.

The exact calibrations take about a second, so one timing of them is at the mercy of whatever
else the machine does in that second: they are run ``REPEATS`` times and the median is the
reported time (every timing is kept in the JSON). The references run once; each takes minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from napari_im2im_uq.calibration import (
    bounds,
    calibrate_intervals,
    calibrate_mask,
    calibrate_trust_mask,
)

REPEATS = 5  # runs of each exact calibration; the median is reported
OLD = Path(__file__).resolve().parents[1] / "tests"  # holds _calibration_old, the previous core


def timed(fn, repeats=REPEATS):
    """(result of the last run, median seconds, every timing) of ``repeats`` runs of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), times


def regression_tiles(n, side, seed=0, dtype=np.float32):
    """Heteroscedastic tiles: truth = f + s z, heuristic width = s exp(0.4 eta)."""
    rng = np.random.default_rng(seed)
    f = rng.random((n, side, side), dtype=np.float32).astype(dtype)
    s = (0.02 + 0.1 * rng.random((n, side, side), dtype=np.float32)).astype(dtype)
    truth = f + s * rng.standard_normal((n, side, side), dtype=np.float32)
    width = s * np.exp(0.4 * rng.standard_normal((n, side, side), dtype=np.float32))
    return f, f - width, f + width, truth


def reference_rcps_grid(f, lower, upper, truth, *, alpha, delta, lam_max, grid=1000):
    """im2im-uq's reference: mean loss and HB bound at each of ``grid`` lambdas."""
    n = f.shape[0]
    lams = np.linspace(0.0, lam_max, grid)
    lw, uw = f - lower, upper - f
    risks = np.empty(grid)
    for j, lam in enumerate(lams):
        lam = np.float32(lam)
        covered = (f - lam * lw <= truth) & (truth <= f + lam * uw)
        risks[j] = 1.0 - covered.reshape(n, -1).mean(axis=1).mean()
    ok = bounds.hoeffding_bentkus_pvalue(risks, n, alpha) <= delta
    lam_hat = lam_max
    for j in range(grid - 1, -1, -1):
        if not ok[j]:
            break
        lam_hat = lams[j]
    return lam_hat, lams[1] - lams[0]


def algorithm1_loop(sigma, D, *, alpha, B):
    """Adame et al., Appendix C, Algorithm 1, as a plain loop (with the final check added)."""
    n = sigma.shape[0]
    s = sigma.reshape(-1)
    order = np.argsort(s, kind="stable")
    tile_of = np.repeat(np.arange(n), sigma[0].size)
    per_tile = [0.0] * n
    total = B / (n + 1)
    t_star, last = -math.inf, None
    chunk = 1 << 20
    for a in range(0, order.size, chunk):
        idx = order[a : a + chunk]
        for t, d, i in zip(s[idx].tolist(), D.reshape(-1)[idx].tolist(), tile_of[idx].tolist()):
            if t != last and last is not None and total <= alpha:
                t_star = last
            last = t
            r = per_tile[i] if per_tile[i] > d else d
            total += (r - per_tile[i]) / (n + 1)
            per_tile[i] = r
    if total <= alpha:
        t_star = math.inf  # Eq. (1): the condition holds beyond every observed sigma
    return t_star


def bench_intervals(n, side, alpha=0.1, delta=0.1):
    data = regression_tiles(n, side)
    res, ours, runs = timed(lambda: calibrate_intervals(*data, alpha=alpha, delta=delta))
    lam_max = 2.0 * res.lam
    t0 = time.perf_counter()
    ref, step = reference_rcps_grid(*data, alpha=alpha, delta=delta, lam_max=lam_max)
    naive = time.perf_counter() - t0
    agree = bool(res.lam <= ref + 1e-6 and ref - res.lam <= step + 1e-6)
    return {"task": f"intervals HB, {n} x {side}x{side}", "ours_s": ours, "ours_runs_s": runs,
            "naive_s": naive, "ratio": naive / ours, "lam_ours": res.lam, "lam_naive": float(ref),
            "grid_step": float(step), "same_up_to_grid": agree}


def bench_trust_mask(n, side, alpha=0.3):
    f, _, _, truth = regression_tiles(n, side, seed=1)
    truth = np.clip(truth, 0, 1)
    D = np.abs(truth.astype(np.float64) - f)
    rng = np.random.default_rng(2)
    sigma = (D + 0.05 * rng.standard_normal(D.shape)).astype(np.float64)
    res, ours, runs = timed(lambda: calibrate_trust_mask(sigma, f, truth, alpha=alpha,
                                                         data_range=(0, 1), curve_points=0))
    t0 = time.perf_counter()
    ref = algorithm1_loop(sigma, D, alpha=alpha, B=1.0)
    naive = time.perf_counter() - t0
    return {"task": f"trust mask, {n} x {side}x{side}", "ours_s": ours, "ours_runs_s": runs,
            "naive_s": naive, "ratio": naive / ours, "t_ours": res.lam, "t_naive": ref,
            "same_t": bool(res.lam == ref)}


def bench_dask_memory(n_values, side, chunk_tiles=10):
    import dask.array as da

    out = []
    for n in n_values:
        def block(block_info=None, n=n):
            loc = block_info[None]["array-location"][0]
            m = loc[1] - loc[0]
            return np.stack(regression_tiles(m, side, seed=loc[0]), axis=0)

        stacked = da.map_blocks(block, chunks=((4,), (chunk_tiles,) * (n // chunk_tiles),
                                               (side,), (side,)), dtype=np.float32,
                                meta=np.empty((0, 0, 0, 0), np.float32))
        arrays = [stacked[k] for k in range(4)]
        tracemalloc.start()
        t0 = time.perf_counter()
        with __import__("dask").config.set(scheduler="synchronous"):
            res = calibrate_intervals(*arrays, alpha=0.1, delta=0.1)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        volume = 4 * n * side * side * 4
        out.append({"task": f"dask intervals, {n} tiles of {side}x{side} "
                            f"({volume / 2**20:.0f} MiB of inputs)",
                    "peak_mib": peak / 2**20, "seconds": elapsed, "lam": res.lam})
    return out


def _methods(core, n, side):
    """(name, call(arrays), arrays) of every method, rule and bound for the module ``core``."""
    f, lo, up, y = regression_tiles(n, side, seed=3)
    yc = np.clip(y, 0, 1)
    width = (up - lo).astype(np.float32)
    m = np.clip(1 - 5 * width, 0, 1).astype(np.float32)
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(n, 3, side, side)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (p.cumsum(axis=1) < rng.random((n, 1, side, side))).sum(axis=1).clip(0, 2)
    ci, tm, mk, sg = (core[k] for k in ("intervals", "trust_mask", "mask", "segmentation"))
    rows = []
    for rule, bound in (("rcps", "hoeffding_bentkus"), ("rcps", "hoeffding"), ("rcps", "wsr"),
                        ("crc", "hoeffding_bentkus")):
        rows.append((f"intervals {rule} {bound if rule == 'rcps' else ''}".strip(),
                     lambda a, r=rule, b=bound: ci(*a, alpha=0.1, delta=0.1, rule=r, bound=b),
                     (f, lo, up, y)))
    rows.append(("trust_mask crc (16-point curve)",
                 lambda a: tm(*a, alpha=0.3, data_range=(0, 1)), (width, f, yc)))
    for rule in ("conformal", "crc", "paper"):
        rows.append((f"mask {rule} l1", lambda a, r=rule: mk(*a, alpha=0.02, beta=0.9, rule=r,
                                                          data_range=(0, 1)), (m, f, y)))
    for rule, bound in (("crc", None), ("rcps", "hoeffding_bentkus"), ("rcps", "wsr")):
        kw = {"rule": rule} if bound is None else {"rule": rule, "bound": bound}
        rows.append((f"segmentation {rule} {bound or ''}".strip(),
                     lambda a, kw=kw: sg(*a, alpha=0.1, **kw), (p, labels)))
    return rows


def bench_methods(n, side, repeats=3):
    """(d): every method, old vs new, in memory and lazy (passes counted)."""
    import dask
    import dask.array as da

    from napari_im2im_uq import calibration as new_core
    from napari_im2im_uq.workflows._reads import ReadCounter

    sys.path.insert(0, str(OLD))
    from _calibration_old import intervals, mask, segmentation, trust_mask

    cores = {
        "new": {"intervals": new_core.calibrate_intervals, "trust_mask":
                new_core.calibrate_trust_mask, "mask": new_core.calibrate_mask,
                "segmentation": new_core.calibrate_segmentation},
        "old": {"intervals": intervals.calibrate_intervals, "trust_mask":
                trust_mask.calibrate_trust_mask, "mask": mask.calibrate_mask,
                "segmentation": segmentation.calibrate_segmentation},
    }
    out = []
    rows = {k: _methods(v, n, side) for k, v in cores.items()}
    chunk = 64
    for i, (task, _, arrays) in enumerate(rows["new"]):
        row = {"task": task}
        for which in ("old", "new"):
            call = rows[which][i][1]
            res, t_mem, _ = timed(lambda call=call, a=arrays: call(a), 1 if which == "old" else
                                  repeats)
            counter = ReadCounter()
            wrapped = [counter.wrap(da.from_array(a, chunks=(chunk,) + a.shape[1:]), f"a{k}")
                       for k, a in enumerate(arrays)]
            with dask.config.set(scheduler="synchronous"):
                res_lazy, t_lazy, _ = timed(lambda call=call, a=wrapped: call(a), 1)
            row[which] = {"memory_s": t_mem, "lazy_s": t_lazy,
                          "passes": counter.passes(), "lam": res.lam,
                          "lam_lazy": res_lazy.lam}
        row["same_lam"] = bool(row["old"]["lam"] == row["new"]["lam"] == row["new"]["lam_lazy"])
        out.append(row)
        print(f"  {task}: done", flush=True)
    hb = out[0]["new"]["memory_s"]
    for row in out:
        row["vs_hb_new"] = row["new"]["memory_s"] / hb
    return out


def bench_wsr(n_values, side, repeats=REPEATS):
    """(e): WSR against Hoeffding-Bentkus intervals on the same tiles, in memory, curve on."""
    out = []
    for n in n_values:
        arrays = regression_tiles(n, side, seed=5)
        row = {"task": f"intervals rcps, {n} tiles of {side}x{side}"}
        for bound in ("hoeffding_bentkus", "wsr"):
            res, t, times = timed(lambda b=bound, a=arrays: calibrate_intervals(
                *a, alpha=0.1, delta=0.1, bound=b), repeats)
            row[bound] = {"seconds": t, "times": times, "lam": res.lam,
                          "curve_points": len(res.curve["lam"])}
        row["wsr_vs_hb"] = row["wsr"]["seconds"] / row["hoeffding_bentkus"]["seconds"]
        out.append(row)
    return out


def bench_mask(n_values, side, repeats=2 * REPEATS - 1, *, dtypes=("float32",)):
    """(f): every mask rule and distance against Hoeffding-Bentkus intervals on the same tiles.

    In memory, curve on; the runs are interleaved (HB, then each mask row, ``repeats`` times)
    so that a busy spell of the machine slows both sides of a ratio alike: the ratio reported
    is the median over the repeats of each run's time over the HB run of the same repeat.
    """
    out = []
    for n in n_values:
        f, lo, up, y = regression_tiles(n, side, seed=3)
        m32 = np.clip(1 - 5 * (up - lo), 0, 1).astype(np.float32)  # as (d) makes it
        calls = {"intervals rcps hoeffding_bentkus":
                 lambda a=(f, lo, up, y): calibrate_intervals(*a, alpha=0.1, delta=0.1)}
        m64 = np.clip(1 - 5 * (up.astype(np.float64) - lo), 0, 1)  # not float32 values
        for dtype in dtypes:
            m = m32 if dtype == "float32" else m64.astype(dtype)
            for distance, alpha in (("l1", 0.02), ("l2", 0.002)):
                for rule in ("conformal", "crc", "paper"):
                    kw = dict(alpha=alpha, beta=0.9, rule=rule, distance=distance,
                              data_range=(0, 1))
                    if rule == "crc" and distance == "l2":  # B = 1 needs 499 tiles (--quick)
                        kw.update(data_range=None, loss_bound=0.1)
                    name = f"mask {rule} {distance}" + ("" if dtype == "float32" else
                                                        f" ({dtype} mask)")
                    calls[name] = lambda kw=kw, a=(m, f, y): calibrate_mask(*a, **kw)
        times = {k: [] for k in calls}
        lams = {}
        for _ in range(repeats):
            for k, call in calls.items():
                t0 = time.perf_counter()
                res = call()
                times[k].append(time.perf_counter() - t0)
                lams[k] = res.lam
        hb = times["intervals rcps hoeffding_bentkus"]
        for k in calls:
            ratios = [t / h for t, h in zip(times[k], hb)]  # each run against the HB run before
            out.append({"task": k, "n": n, "seconds": statistics.median(times[k]),
                        "times": times[k], "lam": lams[k], "vs_hb": statistics.median(ratios),
                        "vs_hb_runs": ratios})
    return out


def _section_d(n_tiles):
    """Run and print (d)."""
    print(f"(d) every method on {n_tiles} tiles of 64 x 64, risk curve on (new: median of 3; "
          "old: 1 run; lazy: dask chunks of 64 tiles, 1 run)")
    methods = bench_methods(n_tiles, 64)
    print(f"{'method':<34} {'old mem':>8} {'new mem':>8} {'x HB':>6} {'old lazy':>9} "
          f"{'new lazy':>9} {'passes old/new':>15}  same lam")
    for r in methods:
        o, w = r["old"], r["new"]
        print(f"{r['task']:<34} {o['memory_s']:>8.3f} {w['memory_s']:>8.3f} "
              f"{r['vs_hb_new']:>6.1f} {o['lazy_s']:>9.3f} {w['lazy_s']:>9.3f} "
              f"{o['passes']:>7d}/{w['passes']:<7d}  {r['same_lam']}")
    return methods


SECTIONS = "abcdef"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--only", default=SECTIONS,
                        help="the sections to run, e.g. 'f' or 'de' (default: all)")
    args = parser.parse_args(argv)
    bad = set(args.only) - set(SECTIONS)
    if bad:
        parser.error(f"--only takes letters of {SECTIONS!r}; got {args.only!r}")
    k = 4 if args.quick else 1
    report = {}
    if "a" in args.only or "b" in args.only:
        rows = ([bench_intervals(100, 512 // k)] if "a" in args.only else []) + \
            ([bench_trust_mask(100, 1024 // k)] if "b" in args.only else [])
        report["speed"] = rows
        print(f"{'task':<40} {'ours (s)':>9} {'naive (s)':>10} {'ratio':>8}  agreement "
              f"(ours: median of {REPEATS} runs)")
        for r in rows:
            agree = (f"lam {r['lam_ours']:.5f} vs grid {r['lam_naive']:.5f} (step "
                     f"{r['grid_step']:.5f}): {r['same_up_to_grid']}") if "lam_ours" in r else \
                f"t {r['t_ours']:.6g} vs {r['t_naive']:.6g}: {r['same_t']}"
            print(f"{r['task']:<40} {r['ours_s']:>9.2f} {r['naive_s']:>10.2f} "
                  f"{r['ratio']:>7.1f}x  {agree}")
    if "c" in args.only:
        report["memory"] = mem = bench_dask_memory([100, 400], 256 // k)
        for m in mem:
            print(f"{m['task']:<58} peak traced memory {m['peak_mib']:8.1f} MiB  "
                  f"({m['seconds']:.1f} s, lam {m['lam']:.5f})")
        print(f"peak memory ratio 400 vs 100 tiles: "
              f"{mem[1]['peak_mib'] / mem[0]['peak_mib']:.2f}")
    if "d" in args.only:
        report["methods"] = _section_d(512 // k)
    if "e" in args.only:
        report["wsr"] = wsr_rows = bench_wsr([256 // k, 1024 // k], 64)
        print(f"(e) WSR vs Hoeffding-Bentkus intervals, same tiles, in memory, curve on (median "
              f"of {REPEATS})")
        for r in wsr_rows:
            print(f"{r['task']:<40} HB {r['hoeffding_bentkus']['seconds']:.3f} s  WSR "
                  f"{r['wsr']['seconds']:.3f} s  {r['wsr_vs_hb']:.2f}x")
    if "f" in args.only:
        report["mask"] = mask_rows = bench_mask([512 // k, 1024 // k], 64,
                                                dtypes=("float32", "float64"))
        print(f"(f) the mask method vs Hoeffding-Bentkus intervals, same tiles of 64 x 64, in "
              f"memory, curve on (median of {2 * REPEATS - 1} interleaved runs; x HB: median of "
              "the runs' ratios)")
        print(f"{'method':<40} {'tiles':>6} {'seconds':>8} {'x HB':>6}")
        for r in mask_rows:
            print(f"{r['task']:<40} {r['n']:>6d} {r['seconds']:>8.3f} {r['vs_hb']:>6.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
