"""The drift alarm (issue 16): its false-alarm rate and its power, on real TEM and the zoo model.

Outputs come from the zoo model ``tem-sr4x-quantile`` (input: the model's own degradation of the
high-resolution slice, ``TEM_DEGRADATION`` of the recipes: 4 x 4 binning and the Poisson-Gaussian
noise of a short exposure, seeded per slice; before 2026-12-02 the slice at every 4th pixel), cut
into 64 x 64 tiles; each tile gives the
statistics the intervals method records (prediction mean, std, p10, p90, gradient; interval
width mean, p10, p90). The test is :func:`napari_im2im_uq.calibration.drift.drift_test` at
family-wise level 0.05, with one region per plane (64 tiles).

(a) False alarms: random splits of one pool of tiles into calibration tiles and a "new volume"
    of 4 regions of 64 tiles (exchangeable by construction), on ISBI 2012 (30 slices), on the
    Drosophila VNC (stack 1, slices 14-19, 1024 x 1024: never used to train the model) and on
    synthetic TEM (``synthetic_em_tissue``).
(b) Power, over random draws of the calibration tiles:
    ISBI slices 0-14 -> slices 15-29; ISBI (all) -> VNC; and a synthetic shift on a
    half-shifted volume: the calibration tiles come from a random half of the ISBI slices, the
    new volume is the other half with half of its planes shifted (contrast x 0.7 about the
    mean, or Gaussian noise of std 0.05 added to the input); the drift map is scored by the
    fraction of shifted planes it marks and of unshifted planes it marks.
(c) The region test with one region per plane: each new plane against the calibration planes.
(d) The region test with regions = blocks of k x k tiles within the planes (k = 2, 4; k = 8 is
    the whole 512 x 512 ISBI plane), so that the calibration has hundreds of regions: ISBI (26
    calibration slices, 4 new) and VNC stack 2 (raw only, 20 slices of 1024 x 1024: 16
    calibration, 4 new), the new slices exchangeable or half shifted (contrast x 0.7, noise
    0.05; half of the slices, or the right half of every slice), blocks ranked with their
    planes as units (the library's map since 2026-12-02).
(e) The issue's table, as ``check_drift`` decides: the whole volume by the permutation test over
    planes, the map as "auto" picks it (blocks of 4 x 4 tiles within planes, planes as units),
    level 0.05. Each draw takes random calibration planes (all their tiles and positions).

Usage::

    python benchmarks/bench_drift.py [--quick] [--json PATH] [--cache PATH.npz] [--parts abcde]

``--quick`` uses fewer splits and draws (a smoke run). Needs ../shared/data.

Measured (2026-12-02, 2 shared CPU cores, level 0.05; the model's own degradation as input):
``python benchmarks/bench_drift.py --cache /tmp/b6/h1_drift_cache.npz --parts e`` (the statistics:
274 s once, niced; part (e) 899 s). Exchangeable planes, 200 draws (3 MC s.e. = 0.046): the
map's family-wise false alarm (some block marked) ISBI 26 -> 4 planes 0.000, VNC stack 2 16 -> 4
0.000; the whole volume's test over planes 0.070 / 0.090 (400 other VNC2 splits: 0.050; the tile
test sounded on about 90% of ISBI splits by planes). Shifts, 100 draws, as (whole-volume alarm,
shifted blocks marked, unshifted blocks marked, some unshifted block marked): ISBI 0-14 (13 of
them) -> 15-29 (1.00, 0.000, -, -); ISBI (26 of 30) -> VNC (1.00, 0.009, -, -); ISBI contrast
x 0.7, half the planes (0.73, 0.015, 0.007, 0.06) / right halves (0.97, 0.927, 0.000, 0.00);
ISBI input noise +0.05, half the planes (0.52, 0.007, 0.004, 0.03) / right halves (0.61, 0.100,
0.000, 0.00); VNC2 contrast x 0.7, half the planes (0.99, 0.000, 0.000, 0.00) / right halves
(1.00, 0.000, 0.000, 0.00). Why the map misses whole-plane shifts and VNC2's right halves: a
block is ranked among the (K + 1) B blocks of the K calibration planes and its own plane, so
when a fraction f of each plane drifts its blocks' p-values reach f / (K + 1), while
Benjamini-Hochberg needs them below level x (the fraction of regions drifted): a whole-plane
shift of 2 planes of 4 needs K >= 39, a half-plane shift K >= 19 (ISBI 26: marked, VNC2 16:
not); ISBI 15-29 and VNC differ from ISBI 0-14 as a volume, not plane by plane beyond the
ordinary differences of ISBI planes, so the test over planes finds them and the map cannot.

Earlier figures below (2026-12-01) used the every-4th-pixel input, and in (d) the block map
without planes as units (not valid under a plane effect; superseded by (e)).

Measured (2026-12-01, 2 shared CPU cores, 200 s after the statistics are cached; level 0.05):
false alarms over 1000 splits, n_cal = 32 / 100 / 300: ISBI 0.021 / 0.025 / 0.026, VNC
0.016 / 0.023 / 0.025, synthetic 0.022 / 0.018 / 0.038 (all <= 0.05 + 0.021). Power over 200
calibration draws: ISBI 0-14 -> 15-29 and ISBI -> VNC 1.00 at every n_cal (every plane marked,
median AUC 0.88 / 0.89); half the planes shifted, contrast or noise: 1.00, but 67-90% of the
unshifted ISBI planes are marked too (ISBI slices differ from one another as much as the shift);
right halves shifted with regions = tile columns spanning the planes: contrast 1.00 (shifted
columns marked 100%, unshifted 1-10%), noise 0.05: 0.50 / 0.99 / 1.00 (shifted columns marked
21% / 71% / 100%, unshifted 0-6%).

Measured (2026-12-01, 2 shared CPU cores, ``--parts d`` 179 s with the statistics cached; level
0.05; exchangeable 200 draws, shifted 100). The map's false alarm (some block of an undrifted
volume marked): ISBI k=2 0.110, k=4 0.100 (1000 draws, other seed: 0.138), planes 0.000; VNC2 k=4
0.000. So on ISBI blocks are NOT valid family-wise: the blocks of a new slice share its
differences from the calibration slices, and a slice extreme among the 27 takes all its blocks
below the BH thresholds at once. Per block the rate stays at the level: ISBI unshifted blocks
marked 1.4% (k=2) / 3.3% (k=4), VNC2 0.0%. Contrast x 0.7 (half of the slices / right halves):
shifted blocks marked ISBI k=2 42% / 43%, k=4 85% / 84% (a shifted slice has some block marked
98% / 95%, most of its blocks 82% / 73%), planes 8% (p >= 1/27); VNC2 k=4 100% / 100%, its
unshifted blocks 2.4% / 3.2%. Noise 0.05: ISBI k=4 shifted blocks 2.6% / 3.0%, as unshifted ones
(invisible: no per-tile statistic of the prediction, its width or the 4x-binned input, the
median absolute Laplacian included, moves by more than ISBI slices differ). "auto" keeps planes.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from napari_im2im_uq.calibration import drift, methods

LEVEL = 0.05
TILE = 64
ENTRY = methods.get("intervals")


def predict_planes(images, model="tem-sr4x-quantile", *, extra_noise=0.0, seed=0):
    """Model outputs of high-resolution slices (planes, rows, cols).

    The input is the model's own degradation (``TEM_DEGRADATION`` of the recipes: 4 x 4
    binning and the Poisson-Gaussian noise of a short exposure, seeded per slice), plus
    Gaussian noise of std ``extra_noise`` on the input (the noise shift), clipped to [0, 1].
    """
    from napari_im2im_uq.training._recipes_tem import TEM_DEGRADATION, degrade
    from napari_im2im_uq.workflows.predict import predict

    rng = np.random.default_rng([seed, 1])
    low = np.stack([degrade(im, TEM_DEGRADATION, [seed, z]) for z, im in enumerate(images)])
    if extra_noise:
        low = np.clip(low + extra_noise * rng.standard_normal(low.shape), 0, 1)
    shown = predict(model, np.ascontiguousarray(low, dtype=np.float32), output="memory")
    return {kw["metadata"]["im2im_uq"]["output"]: np.asarray(d) for d, kw, _ in shown}


def tile_features(outputs):
    """Per-tile statistics (dict of (n,)) and each tile's plane, for tiles of TILE x TILE."""
    pred = outputs["prediction"]
    planes, rows, cols = pred.shape
    feats, plane_of = [], []
    for z in range(planes):
        tiles = {}
        for k in ENTRY.inputs(outputs):
            a = outputs[k][z, : rows // TILE * TILE, : cols // TILE * TILE]
            t = a.reshape(rows // TILE, TILE, cols // TILE, TILE).swapaxes(1, 2)
            tiles[k] = t.reshape(-1, TILE, TILE)
        feats.append(ENTRY.drift_features(tiles))
        plane_of.append(np.full(len(tiles["prediction"]), z))
    return ({k: np.concatenate([f[k] for f in feats]) for k in feats[0]},
            np.concatenate(plane_of))


def take(feats, idx):
    return {k: v[idx] for k, v in feats.items()}


def false_alarms(feats, *, n_cal, splits, seed, regions=4, per_region=64):
    n = len(next(iter(feats.values())))
    per_region = min(per_region, (n - n_cal) // regions)  # a small pool: smaller regions
    n_new = regions * per_region
    rng = np.random.default_rng(seed)
    region = np.repeat(np.arange(regions), per_region)
    alarms = 0
    for _ in range(splits):
        perm = rng.permutation(n)
        out = drift.drift_test(take(feats, perm[:n_cal]), take(feats, perm[n_cal:n_cal + n_new]),
                               region, level=LEVEL)
        alarms += out["drifted"]
    return alarms / splits


def power_fixed_target(ref, new, new_plane, *, n_cal, draws, seed):
    """Alarm rate over random calibration draws against one fixed new volume (regions=planes)."""
    n = len(next(iter(ref.values())))
    _, region = np.unique(new_plane, return_inverse=True)
    rng = np.random.default_rng(seed)
    alarms, flagged, aucs = 0, [], []
    for _ in range(draws):
        out = drift.drift_test(take(ref, rng.choice(n, n_cal, replace=False)), new, region,
                               level=LEVEL)
        alarms += out["drifted"]
        flagged.append(np.mean([r["drifted"] for r in out["regions"]]))
        aucs.append(out["auc"])
    return {"power": alarms / draws, "regions_flagged": float(np.mean(flagged)),
            "median_auc": float(np.median(aucs))}


def power_half_shifted(clean, shifted, plane, *, n_cal, draws, seed):
    """Calibrate on a random half of the slices; the other half, half of it shifted, is new."""
    slices = np.unique(plane)
    rng = np.random.default_rng(seed)
    alarms, sens, fpr = 0, [], []
    for _ in range(draws):
        perm = rng.permutation(slices)
        cal_sl, new_sl = perm[: len(perm) // 2], perm[len(perm) // 2:]
        shifted_sl = new_sl[: len(new_sl) // 2]
        cal_idx = rng.choice(np.flatnonzero(np.isin(plane, cal_sl)), n_cal, replace=False)
        parts, regions, is_shifted = [], [], []
        for r, z in enumerate(new_sl):
            idx = np.flatnonzero(plane == z)
            src = shifted if z in shifted_sl else clean
            parts.append(take(src, idx))
            regions.append(np.full(len(idx), r))
            is_shifted.append(z in shifted_sl)
        new = {k: np.concatenate([p[k] for p in parts]) for k in clean}
        out = drift.drift_test(take(clean, cal_idx), new, np.concatenate(regions), level=LEVEL)
        alarms += out["drifted"]
        marked = np.array([r["drifted"] for r in out["regions"]])
        is_shifted = np.array(is_shifted)
        sens.append(marked[is_shifted].mean())
        fpr.append(marked[~is_shifted].mean())
    return {"power": alarms / draws, "shifted_planes_marked": float(np.mean(sens)),
            "unshifted_planes_marked": float(np.mean(fpr))}


def region_map_half_shifted(clean, shifted, plane, *, n_cal_planes, draws, seed):
    """The region test (calibration planes as the reference set) on a half-shifted volume.

    Calibrate on a random ``n_cal_planes`` of the slices (all their tiles, with their plane);
    the other slices are the new volume, the first half of them (in a random order) shifted
    (``shifted is None``: none, the exchangeable-planes false-alarm case).
    """
    slices = np.unique(plane)
    rng = np.random.default_rng(seed)
    alarms, sens, fpr, top_s, top_u = 0, [], [], [], []
    for _ in range(draws):
        perm = rng.permutation(slices)
        cal_sl, new_sl = perm[:n_cal_planes], perm[n_cal_planes:]
        n_shift = 0 if shifted is None else len(new_sl) // 2
        cal_idx = np.flatnonzero(np.isin(plane, cal_sl))
        parts, regions = [], []
        for r, z in enumerate(new_sl):
            idx = np.flatnonzero(plane == z)
            parts.append(take(shifted if r < n_shift else clean, idx))
            regions.append(np.full(len(idx), r))
        new = {k: np.concatenate([p[k] for p in parts]) for k in clean}
        out = drift.drift_test(take(clean, cal_idx), new, np.concatenate(regions), level=LEVEL,
                               reference_region=plane[cal_idx])
        alarms += out["drifted"]
        marked = np.array([r["drifted"] for r in out["regions"]])
        at_min = np.isclose([r["p_value"] for r in out["regions"]], 1 / (n_cal_planes + 1))
        if n_shift:
            sens.append(marked[:n_shift].mean())
            top_s.append(at_min[:n_shift].mean())
        fpr.append(marked[n_shift:].mean())
        top_u.append(at_min[n_shift:].mean())
    res = {"power": alarms / draws, "unshifted_planes_marked": float(np.mean(fpr)),
           "unshifted_at_min_p": float(np.mean(top_u))}
    if sens:
        res.update({"shifted_planes_marked": float(np.mean(sens)),
                    "shifted_at_min_p": float(np.mean(top_s))})
    return res


def block_map_half_shifted(clean, shifted, plane, *, k, n_cal_planes, draws, seed,
                           half="planes", units=True):
    """The region test with regions = blocks of k x k tiles within planes (d).

    Calibrate on a random ``n_cal_planes`` of the slices (all their tiles, the region of each
    its block); the other slices are the new volume, its regions their blocks. ``half``:
    "planes" shifts the first half of the new slices (in a random order), "columns" the right
    half of every new slice; ``shifted is None``: nothing shifted (exchangeable planes). A
    slice counts as marked when any of its blocks is ("any") or more than half ("majority").
    """
    idx = np.concatenate([np.arange(np.sum(plane == z)) for z in np.unique(plane)])
    side = int(round(np.sqrt(np.sum(plane == plane[0]))))  # tiles per row of a (square) slice
    row, col = idx // side, idx % side
    nb = -(-side // k)
    block = (plane * nb + row // k) * nb + col // k
    slices = np.unique(plane)
    rng = np.random.default_rng(seed)
    acc = {key: [] for key in ("region_test", "map_false_alarm", "shifted_blocks", "unshifted_blocks",
                               "unshifted_p_small", "shifted_any", "shifted_majority", "unshifted_any",
                               "unshifted_majority")}
    for _ in range(draws):
        perm = rng.permutation(slices)
        cal_sl, new_sl = perm[:n_cal_planes], perm[n_cal_planes:]
        cal_idx = np.flatnonzero(np.isin(plane, cal_sl))
        new_idx = np.concatenate([np.flatnonzero(plane == z) for z in new_sl])
        if shifted is None:
            is_sh = np.zeros(len(new_idx), bool)
        elif half == "planes":
            is_sh = np.isin(plane[new_idx], new_sl[: len(new_sl) // 2])
        else:
            is_sh = col[new_idx] >= side // 2
        src = clean if shifted is None else shifted
        new = {key: np.where(is_sh, src[key][new_idx], clean[key][new_idx]) for key in clean}
        _, region = np.unique(block[new_idx], return_inverse=True)
        by_plane = {"reference_unit": plane[cal_idx], "unit": plane[new_idx]} if units else {}
        out = drift.drift_test(take(clean, cal_idx), new, region, level=LEVEL,
                               reference_region=block[cal_idx], min_region_tiles=1, **by_plane)
        acc["region_test"].append(out["region_test"] == "regions")  # not the tile fallback
        marked = np.array([r["drifted"] for r in out["regions"]])
        p = np.array([r["p_value"] for r in out["regions"]])
        reg_sh = np.zeros(len(marked), bool)
        reg_sh[region[is_sh]] = True
        reg_plane = np.zeros(len(marked), int)
        reg_plane[region] = plane[new_idx]
        acc["map_false_alarm"].append(marked[~reg_sh].any())  # any unshifted block marked
        if reg_sh.any():
            acc["shifted_blocks"].append(marked[reg_sh].mean())
        if (~reg_sh).any():
            acc["unshifted_blocks"].append(marked[~reg_sh].mean())
            acc["unshifted_p_small"].append(np.mean(p[~reg_sh] <= LEVEL))
        for z in new_sl:
            for tag, sel in (("shifted", reg_sh), ("unshifted", ~reg_sh)):
                here = sel & (reg_plane == z)
                if here.any():
                    acc[f"{tag}_any"].append(marked[here].any())
                    acc[f"{tag}_majority"].append(marked[here].mean() > 0.5)
    return {key: float(np.mean(v)) for key, v in acc.items() if v}


def power_half_columns(clean, shifted, column, *, n_cal, draws, seed, n_columns=8):
    """The right half of every plane shifted; regions = tile columns spanning all planes.

    The calibration tiles are drawn from the left half (unshifted) of every plane; the new
    volume is every other tile, the right half shifted.
    """
    rng = np.random.default_rng(seed)
    left = np.flatnonzero(column < n_columns // 2)
    right = np.flatnonzero(column >= n_columns // 2)
    alarms, sens, fpr = 0, [], []
    for _ in range(draws):
        cal_idx = rng.choice(left, n_cal, replace=False)
        rest = np.setdiff1d(left, cal_idx)
        new = {k: np.concatenate([clean[k][rest], shifted[k][right]]) for k in clean}
        region = np.concatenate([column[rest], column[right]])
        out = drift.drift_test(take(clean, cal_idx), new, region, level=LEVEL)
        alarms += out["drifted"]
        marked = np.array([r["drifted"] for r in out["regions"]])
        sens.append(marked[n_columns // 2:].mean())
        fpr.append(marked[: n_columns // 2].mean())
    return {"power": alarms / draws, "shifted_columns_marked": float(np.mean(sens)),
            "unshifted_columns_marked": float(np.mean(fpr))}


KEYS = ("isbi", "vnc", "synthetic", "contrast", "noise")


def summarize_data():
    """Predict every data set with the zoo model; return the statistics of their tiles."""
    from napari_im2im_uq.data import load_em_drosophila, load_isbi2012, synthetic_em_tissue

    isbi = load_isbi2012()["raw"]  # (30, 512, 512)
    vnc = load_em_drosophila(stack=1, slices=range(14, 20))["raw"]  # (6, 1024, 1024)
    synth = np.stack([synthetic_em_tissue((512, 512), seed=s)["image"] for s in range(8)])
    # the shifted copies are degraded with the clean slices' noise seeds: only the shift differs
    f_isbi, p_isbi = tile_features(predict_planes(isbi))
    f_vnc, p_vnc = tile_features(predict_planes(vnc, seed=1))
    f_syn, _ = tile_features(predict_planes(synth.astype(np.float32), seed=2))
    f_con, _ = tile_features(predict_planes(contrast_of(isbi)))
    f_noi, _ = tile_features(predict_planes(isbi, extra_noise=0.05))
    return f_isbi, p_isbi, f_vnc, p_vnc, f_syn, f_con, f_noi


def save_cache(path, f_isbi, p_isbi, f_vnc, p_vnc, f_syn, f_con, f_noi):
    arrays = {"p_isbi": p_isbi, "p_vnc": p_vnc}
    for key, feats in zip(KEYS, (f_isbi, f_vnc, f_syn, f_con, f_noi), strict=True):
        arrays.update({f"{key}|{k}": v for k, v in feats.items()})
    np.savez(path, **arrays)


def load_cache(path):
    data = np.load(path)
    feats = {key: {k.split("|", 1)[1]: data[k] for k in data.files if k.startswith(key + "|")}
             for key in KEYS}
    return (feats["isbi"], data["p_isbi"], feats["vnc"], data["p_vnc"], feats["synthetic"],
            feats["contrast"], feats["noise"])


def contrast_of(images, factor=0.7):
    """Each slice's contrast scaled by ``factor`` about its mean (clipped to [0, 1])."""
    mean = images.mean(axis=(1, 2), keepdims=True)
    return np.clip(mean + factor * (images - mean), 0, 1).astype(np.float32)


def vnc2_features(cache=None):
    """Tile statistics of VNC stack 2 (20 slices, raw only), as is and at contrast x 0.7."""
    if cache and os.path.exists(cache):
        data = np.load(cache)
        if "p_vnc2" in data.files:
            feats = {key: {k.split("|", 1)[1]: data[k] for k in data.files
                           if k.startswith(key + "|")} for key in ("vnc2", "vnc2_contrast")}
            return feats["vnc2"], feats["vnc2_contrast"], data["p_vnc2"]
    from napari_im2im_uq.data import load_em_drosophila

    vnc2 = load_em_drosophila(stack=2)["raw"]  # (20, 1024, 1024)
    f_clean, plane = tile_features(predict_planes(vnc2, seed=3))
    f_con, _ = tile_features(predict_planes(contrast_of(vnc2), seed=3))
    if cache:
        old = dict(np.load(cache)) if os.path.exists(cache) else {}
        old.update({f"vnc2|{k}": v for k, v in f_clean.items()})
        old.update({f"vnc2_contrast|{k}": v for k, v in f_con.items()})
        np.savez(cache, p_vnc2=plane, **old)
    return f_clean, f_con, plane


def block_table(report, f_isbi, p_isbi, f_con, f_noi, vnc2, *, draws):
    """(d): the region test with regions = blocks of k x k tiles within the new planes."""
    print(f"\n(d) region test on blocks of k x k tiles within planes (calibration regions: the "
          f"blocks of the calibration slices, BH at {LEVEL}); exchangeable: {draws} draws, "
          f"shifted: {draws // 2}; map_false_alarm = any unshifted block marked; a slice is "
          "marked when any / the majority of its blocks are")
    f_vnc2, f_vnc2_con, p_vnc2 = vnc2
    cases = [("ISBI", f_isbi, p_isbi, 26, k, name, sh, half)
             for k, todo in ((2, ("exchangeable", "contrast")),
                             (4, ("exchangeable", "contrast", "noise")),
                             (8, ("exchangeable", "contrast", "noise")))
             for name, sh in (("exchangeable", None), ("contrast", f_con), ("noise", f_noi))
             if name in todo
             for half in (("planes",) if sh is None or k == 8 else ("planes", "columns"))]
    # VNC2: 20 slices, 16 calibration planes: too few for planes as regions (needs 19 at 0.05)
    cases += [("VNC2", f_vnc2, p_vnc2, 16, 4, name, sh, half)
              for name, sh in (("exchangeable", None), ("contrast", f_vnc2_con))
              for half in (("planes",) if sh is None else ("planes", "columns"))]
    report["block_test"] = {}
    for data, clean, plane, n_cal, k, name, sh, half in cases:
        res = block_map_half_shifted(clean, sh, plane, k=k, n_cal_planes=n_cal, seed=k,
                                     draws=draws if sh is None else draws // 2, half=half)
        key = f"{data} k={k} {name}" + ("" if sh is None else f" ({half})")
        report["block_test"][key] = res
        print(f"{key:<32} " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)


def grid_of(plane, k):
    """Block (k x k tiles, within its plane) and tile column of each tile (square planes,
    tiles in row-major order, as :func:`tile_features` lists them); k = 0: the plane itself."""
    block, column = np.zeros(len(plane), np.int64), np.zeros(len(plane), np.int64)
    start = 0
    for z in np.unique(plane):
        sel = np.flatnonzero(plane == z)
        side = int(round(np.sqrt(len(sel))))
        idx = np.arange(len(sel))
        row, column[sel] = idx // side, idx % side
        nb = -(-side // k) if k else 1
        block[sel] = start + ((row // k) * nb + column[sel] // k if k else 0)
        start += nb * nb
    return block, column


def map_draw(cal, cal_plane, new, new_plane, is_shifted, *, units=True):
    """One check of a new volume against calibration planes, the map chosen as "auto" does.

    Returns the whole-volume alarm, the map's regions word, the fraction of shifted and of
    unshifted regions marked and whether any unshifted region is marked.
    """
    from napari_im2im_uq.workflows.drift import _auto_regions

    side = int(round(np.sqrt(np.sum(new_plane == new_plane[0]))))
    summary = {"tiles": [[int(z), 0, 0] for z in np.unique(cal_plane)]}
    grid = (len(np.unique(new_plane)), side * TILE, side * TILE)
    regions = _auto_regions("auto", summary, (TILE, TILE), grid, LEVEL)
    k = 0 if regions == "plane" else int(regions)
    cal_block, _ = grid_of(cal_plane, k)
    new_block, _ = grid_of(new_plane, k)
    _, region = np.unique(new_block, return_inverse=True)
    by_plane = {"reference_unit": cal_plane, "unit": new_plane} if units else {}
    out = drift.drift_test(cal, new, region, level=LEVEL, reference_region=cal_block,
                           min_region_tiles=1, **by_plane)
    marked = np.array([r["drifted"] for r in out["regions"]])
    reg_sh = np.zeros(len(marked), bool)
    reg_sh[region[is_shifted]] = True
    return {"whole_alarm": out["whole_drifted"], "map": "planes" if k == 0 else f"blocks k={k}",
            "map_test": out["region_test"],
            "shifted_marked": marked[reg_sh].mean() if reg_sh.any() else np.nan,
            "unshifted_marked": marked[~reg_sh].mean() if (~reg_sh).any() else np.nan,
            "false_alarm": bool(marked[~reg_sh].any())}


def power_table(report, f_isbi, p_isbi, f_vnc, p_vnc, f_con, f_noi, vnc2, *, draws):
    """(e) The issue's table: the whole-volume alarm and the "auto" map, level 0.05.

    Each draw: the calibration is a random set of planes (all their tiles and positions), the
    new volume other planes. Fixed targets draw the calibration planes only.
    """
    f_vnc2, f_vnc2_con, p_vnc2 = vnc2
    _, col_isbi = grid_of(p_isbi, 0)
    _, col_vnc2 = grid_of(p_vnc2, 0)
    rng = np.random.default_rng(11)

    def split(plane, n_cal):
        perm = rng.permutation(np.unique(plane))
        return (np.flatnonzero(np.isin(plane, perm[:n_cal])),
                np.concatenate([np.flatnonzero(plane == z) for z in perm[n_cal:]]),
                perm[n_cal:])

    def half(clean, shifted, plane, col, n_cal, how):
        cal_idx, new_idx, new_sl = split(plane, n_cal)
        if shifted is None:
            is_sh = np.zeros(len(new_idx), bool)
        elif how == "planes":
            is_sh = np.isin(plane[new_idx], new_sl[: len(new_sl) // 2])
        else:
            is_sh = col[new_idx] >= (col[new_idx].max() + 1) // 2
        src = clean if shifted is None else shifted
        new = {k: np.where(is_sh, src[k][new_idx], clean[k][new_idx]) for k in clean}
        return map_draw(take(clean, cal_idx), plane[cal_idx], new, plane[new_idx], is_sh)

    def fixed(ref, ref_plane, new, new_plane, n_cal):
        cal_sl = rng.choice(np.unique(ref_plane), n_cal, replace=False)
        cal_idx = np.flatnonzero(np.isin(ref_plane, cal_sl))
        return map_draw(take(ref, cal_idx), ref_plane[cal_idx], new, new_plane + 1000,
                        np.ones(len(new_plane), bool))

    lo, hi = p_isbi < 15, p_isbi >= 15
    cases = {
        "ISBI 0-14 (13 of them) -> 15-29": lambda: fixed(
            take(f_isbi, lo), p_isbi[lo], take(f_isbi, hi), p_isbi[hi], 13),
        "ISBI (26 of 30) -> VNC": lambda: fixed(f_isbi, p_isbi, f_vnc, p_vnc, 26),
        "ISBI exchangeable, 26 -> 4": lambda: half(f_isbi, None, p_isbi, col_isbi, 26, ""),
        "VNC2 exchangeable, 16 -> 4": lambda: half(f_vnc2, None, p_vnc2, col_vnc2, 16, ""),
        "ISBI contrast x0.7, half the planes": lambda: half(
            f_isbi, f_con, p_isbi, col_isbi, 26, "planes"),
        "ISBI contrast x0.7, right halves": lambda: half(
            f_isbi, f_con, p_isbi, col_isbi, 26, "columns"),
        "ISBI noise +0.05, half the planes": lambda: half(
            f_isbi, f_noi, p_isbi, col_isbi, 26, "planes"),
        "ISBI noise +0.05, right halves": lambda: half(
            f_isbi, f_noi, p_isbi, col_isbi, 26, "columns"),
        "VNC2 contrast x0.7, half the planes": lambda: half(
            f_vnc2, f_vnc2_con, p_vnc2, col_vnc2, 16, "planes"),
        "VNC2 contrast x0.7, right halves": lambda: half(
            f_vnc2, f_vnc2_con, p_vnc2, col_vnc2, 16, "columns"),
    }
    print(f"\n(e) whole-volume alarm and the 'auto' map (level {LEVEL}; exchangeable: {draws} "
          f"draws, others {draws // 2}); false_alarm = some unshifted region marked")
    report["map_table"] = {}
    for case, fn in cases.items():
        n = draws if "exchangeable" in case else draws // 2
        rows = [fn() for _ in range(n)]
        res = {"draws": n, "map": rows[0]["map"], "map_test": rows[0]["map_test"]}
        for key in ("whole_alarm", "shifted_marked", "unshifted_marked", "false_alarm"):
            vals = np.array([r[key] for r in rows], dtype=float)
            res[key] = None if np.isnan(vals).all() else float(np.nanmean(vals))
        report["map_table"][case] = res
        print(f"{case:<38} " + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()),
            flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--cache", metavar="PATH.npz",
                        help="keep the per-tile statistics here (predicting takes minutes)")
    parser.add_argument("--parts", default="abcde",
                        help="which parts to run, e.g. 'de' (default: abcde)")
    args = parser.parse_args(argv)
    splits, draws = (200, 50) if args.quick else (1000, 200)

    t0 = time.perf_counter()
    if args.cache and os.path.exists(args.cache):
        f_isbi, p_isbi, f_vnc, p_vnc, f_syn, f_con, f_noi = load_cache(args.cache)
    else:
        f_isbi, p_isbi, f_vnc, p_vnc, f_syn, f_con, f_noi = summarize_data()
        if args.cache:
            save_cache(args.cache, f_isbi, p_isbi, f_vnc, p_vnc, f_syn, f_con, f_noi)
    print(f"statistics ready in {time.perf_counter() - t0:.0f} s: ISBI {len(p_isbi)} tiles, "
          f"VNC {len(p_vnc)} tiles, synthetic {len(f_syn['prediction mean'])} tiles")

    report = {"level": LEVEL, "tile": TILE, "splits": splits, "draws": draws,
              "false_alarm": {}, "power": {}}
    if "a" in args.parts:
        tol = 3 * np.sqrt(LEVEL * (1 - LEVEL) / splits)
        print(f"\n(a) false-alarm rate over {splits} exchangeable splits (level {LEVEL}, 3 MC s.e. = "
              f"{tol:.3f}); new volume = 4 regions x 64 tiles (synthetic: fewer when the pool is short)")
        print(f"{'pool':<12}" + "".join(f"n_cal={n:<6}" for n in (32, 100, 300)))
        for name, feats in [("ISBI", f_isbi), ("VNC", f_vnc), ("synthetic", f_syn)]:
            rates = {n: false_alarms(feats, n_cal=n, splits=splits, seed=n) for n in (32, 100, 300)}
            report["false_alarm"][name] = rates
            print(f"{name:<12}" + "".join(f"{rates[n]:<12.3f}" for n in rates))

    if "b" in args.parts:
        print(f"\n(b) power over {draws} calibration draws (family-wise level {LEVEL})")
        lo, hi = p_isbi < 15, p_isbi >= 15
        per_plane = 512 // TILE  # ISBI slices are 512 x 512: tiles in row-major order
        c_isbi = np.concatenate([np.arange(np.sum(p_isbi == z)) % per_plane
                                 for z in np.unique(p_isbi)])
        cases = {
            "ISBI 0-14 -> 15-29": lambda n, s: power_fixed_target(
                take(f_isbi, lo), take(f_isbi, hi), p_isbi[hi], n_cal=n, draws=draws, seed=s),
            "ISBI -> VNC": lambda n, s: power_fixed_target(
                f_isbi, f_vnc, p_vnc, n_cal=n, draws=draws, seed=s),
            "half-shifted ISBI, contrast x0.7": lambda n, s: power_half_shifted(
                f_isbi, f_con, p_isbi, n_cal=n, draws=draws, seed=s),
            "half-shifted ISBI, noise 0.05": lambda n, s: power_half_shifted(
                f_isbi, f_noi, p_isbi, n_cal=n, draws=draws, seed=s),
            "right halves shifted, contrast x0.7": lambda n, s: power_half_columns(
                f_isbi, f_con, c_isbi, n_cal=n, draws=draws, seed=s),
            "right halves shifted, noise 0.05": lambda n, s: power_half_columns(
                f_isbi, f_noi, c_isbi, n_cal=n, draws=draws, seed=s),
        }
        for case, fn in cases.items():
            report["power"][case] = {}
            for n in (32, 100, 300):
                res = fn(n, n + 1)
                report["power"][case][n] = res
                extra = ", ".join(f"{k} {v:.2f}" for k, v in res.items() if k != "power")
                print(f"{case:<36} n_cal={n:<4} power {res['power']:.3f}  ({extra})")
    if "c" in args.parts:
        n_cal = 26
        print(f"\n(c) region test (each new plane against the {n_cal} calibration planes, conformal "
              f"p-value >= 1/{n_cal + 1}, BH at {LEVEL}) over {draws // 2} draws: new volume = the "
              f"other {30 - n_cal} ISBI slices, half shifted")
        report["region_test"] = {}
        for case, sh in [("exchangeable planes", None), ("contrast x0.7", f_con),
                         ("noise 0.05", f_noi)]:
            res = region_map_half_shifted(f_isbi, sh, p_isbi, n_cal_planes=n_cal,
                                          draws=draws // 2, seed=7)
            report["region_test"][case] = res
            print(f"{case:<22} " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
    if "d" in args.parts:
        block_table(report, f_isbi, p_isbi, f_con, f_noi, vnc2_features(args.cache),
                    draws=draws)
    if "e" in args.parts:
        power_table(report, f_isbi, p_isbi, f_vnc, p_vnc, f_con, f_noi,
                    vnc2_features(args.cache), draws=draws)
    report["seconds"] = time.perf_counter() - t0
    print(f"\ntotal {report['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
