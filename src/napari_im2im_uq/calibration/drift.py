"""A drift alarm that needs no ground truth: test whether new tiles look like calibration tiles.

Every guarantee of a calibration speaks about new tiles exchangeable with its calibration
tiles. This module tests that assumption on what is available without ground truth: a few
numbers per tile (:func:`image_features` of the prediction, :func:`score_features` of the
score that drives the interval or trust mask, ...; which ones a method contributes is asked of
its registry entry, ``Method.drift_features``). The calibration keeps them in its record
(:func:`summarize`: a few numbers per tile, no pixels); :func:`drift_test` compares the new
tiles with them, for the whole volume and per region.

The test, and why
-----------------
For each feature and each tested set of new tiles (the whole volume, then each region) a
two-sided Mann-Whitney U (Wilcoxon rank-sum) test compares the new tiles' values with the
calibration tiles' values. Under exchangeability of calibration and new tiles the ranks are
uniformly permuted, so its p-value is distribution-free (exact for small samples, the
tie-corrected normal approximation otherwise; Mann & Whitney 1947). All the p-values (features
x {whole, regions}) form one family, corrected by the weighted Holm step-down procedure (Holm
1979), which controls the family-wise error rate at ``level`` under any dependence between the
tests (the features of a tile are correlated; every region is compared with the same
calibration tiles). The weights give half of the level to the whole volume and half to the
regions, so that many regions do not dilute the main verdict.
So the chance that the alarm sounds anywhere when nothing drifted is at most ``level``.
Rabanser, Günnemann & Lipton (NeurIPS 2019, "Failing Loudly") found univariate two-sample tests
on a low-dimensional summary, aggregated with a Bonferroni correction, as good as or better than
multivariate tests (MMD) for detecting dataset shift, at a fraction of the cost: no
permutations, closed-form p-values, and a per-feature answer a user can read. The effect size is
the AUC of the rank test, ``P(new > calibration) + P(tie) / 2`` (0.5: no shift; 0 or 1: the two
samples do not overlap), and the standardized mean difference.

Planes as units
---------------
The tile test above takes tiles as exchangeable; the planes of a real stack differ from one
another more than the tiles of one plane do (on ISBI 2012, planes split at random into 26
calibration and 4 new sound it in about 90% of draws). When the plane of every tile is known
(``reference_unit``, ``unit``) and there are planes enough (``C(K + L, L) >= 1 / level``, K
calibration and L new planes), the whole volume is tested instead by
:func:`plane_permutation_test` (the new planes against random sets of as many planes; valid
when the planes are exchangeable, whatever their differences), and blocks within planes are
ranked with their planes as units (:func:`region_pvalues`; ``_drift_regions`` proves both).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> cal = {"f": rng.normal(size=200)}
>>> new = {"f": rng.normal(1.0, 1.0, size=100)}
>>> out = drift_test(cal, new, np.zeros(100, int), level=0.05)
>>> out["drifted"], round(out["auc"], 2) > 0.7
(True, True)
"""

from __future__ import annotations

import warnings
from math import comb

import numpy as np

from ._drift_regions import benjamini_hochberg, plane_permutation_test, region_pvalues

__all__ = [
    "DRIFT_TEST",
    "SUMMARY_VERSION",
    "as_features",
    "benjamini_hochberg",
    "drift_test",
    "holm",
    "region_pvalues",
    "image_features",
    "plane_permutation_test",
    "rank_test",
    "score_features",
    "summarize",
    "verdict_words",
]

#: How the test is described in a record and in a verdict.
DRIFT_TEST = ("two-sided Mann-Whitney U per tile statistic, Holm-corrected across statistics, "
              "the whole volume and its regions (family-wise level)")
SUMMARY_VERSION = 2
#: How the region test is described (records with tile positions, enough calibration regions).
REGION_TEST = ("conformal outlier p-value per region against the calibration regions (Bates et "
               "al. 2023), Benjamini-Hochberg across regions")
#: How the whole volume is tested when the planes of the tiles are known.
PLANE_TEST = ("permutation test over planes (the new planes' tiles against the calibration "
              "planes', among random sets of as many planes)")
#: Regions with fewer new tiles are not tested (too few to say).
MIN_REGION_TILES = 5


def _flat(tiles) -> np.ndarray:
    a = np.asarray(tiles, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def _finite(values) -> np.ndarray:
    """Return float64 values with NaN (unwritten pixels) and infinities made 0 (JSON-safe)."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def image_features(tiles, prefix: str) -> dict:
    """Intensity and texture statistics of each tile: a few numbers, no pixels.

    Parameters
    ----------
    tiles : array, shape (n, rows, columns)
    prefix : str
        Prepended to the statistic names ("prediction mean", ...).

    Returns
    -------
    dict of str to ndarray of shape (n,)
        ``mean``, ``std``, ``p10``, ``p90`` of the pixel values and ``gradient``, the mean
        gradient magnitude (a texture / sharpness statistic that moves with noise and blur).

    Examples
    --------
    >>> f = image_features(np.zeros((3, 8, 8)), "x")
    >>> sorted(f), f["x mean"].shape
    (['x gradient', 'x mean', 'x p10', 'x p90', 'x std'], (3,))
    """
    a = np.asarray(tiles, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"tiles must have shape (n, rows, columns); got shape {a.shape}")
    flat = a.reshape(a.shape[0], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tiles become 0 below
        p10, p90 = np.nanpercentile(flat, [10, 90], axis=1)
        gr = np.abs(np.diff(a, axis=1))[:, :, :-1] if a.shape[1] > 1 else np.zeros_like(a)
        gc = np.abs(np.diff(a, axis=2))[:, :-1, :] if a.shape[2] > 1 else np.zeros_like(a)
        grad = np.sqrt(gr ** 2 + gc ** 2).reshape(a.shape[0], -1)
        out = {
            f"{prefix} mean": np.nanmean(flat, axis=1),
            f"{prefix} std": np.nanstd(flat, axis=1),
            f"{prefix} p10": p10,
            f"{prefix} p90": p90,
            f"{prefix} gradient": np.nanmean(grad, axis=1),
        }
    return {k: _finite(v) for k, v in out.items()}


def score_features(tiles, prefix: str) -> dict:
    """Level statistics of a per-pixel score (an interval width, a trust-mask sigma, a mask).

    Returns ``mean``, ``p10`` and ``p90`` of each tile (dict of (n,) arrays).

    Examples
    --------
    >>> sorted(score_features(np.ones((2, 4, 4)), "width"))
    ['width mean', 'width p10', 'width p90']
    """
    flat = _flat(tiles)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p10, p90 = np.nanpercentile(flat, [10, 90], axis=1)
        out = {f"{prefix} mean": np.nanmean(flat, axis=1), f"{prefix} p10": p10,
               f"{prefix} p90": p90}
    return {k: _finite(v) for k, v in out.items()}


def summarize(features: dict, *, tile_shape, tiles=None, max_tiles: int = 5000,
              seed: int = 0) -> dict:
    """Return the record's ``drift_summary``: the calibration tiles' statistics as lists.

    Parameters
    ----------
    features : dict of str to array of shape (n,)
        Per-tile statistics (``Method.drift_features`` of the calibration tiles).
    tile_shape : (int, int)
    tiles : array of int, shape (n, 3), optional
        Each tile's first pixel (plane, row, column): kept, so that the region test can group
        the calibration tiles into regions as it groups the new tiles.
    max_tiles : int
        At most this many tiles are kept (a seeded random subset, still an exchangeable sample).
    seed : int

    Returns
    -------
    dict
        JSON-ready: ``version``, ``test``, ``tile_shape``, ``n`` (tiles kept), ``n_tiles`` (all
        calibration tiles), ``features`` (name -> list of floats, one per tile) and, with
        ``tiles``, ``tiles`` (one [plane, row, column] per kept tile).

    Examples
    --------
    >>> s = summarize({"a": np.arange(3.0)}, tile_shape=(8, 8))
    >>> s["n"], s["features"]["a"]
    (3, [0.0, 1.0, 2.0])
    """
    names = sorted(features)
    if not names:
        raise ValueError("features must hold at least one statistic; got none")
    n = len(np.asarray(features[names[0]]))
    bad = [k for k in names if np.shape(features[k]) != (n,)]
    if bad:
        raise ValueError(f"features must all have shape ({n},) (one value per tile); got "
                         f"{ {k: np.shape(features[k]) for k in bad} }")
    if tiles is not None:
        tiles = np.asarray(tiles)
        if tiles.shape != (n, 3) or not np.issubdtype(tiles.dtype, np.integer):
            raise ValueError(f"tiles must be an int array of shape ({n}, 3) (plane, row, "
                             f"column of each tile); got {tiles.dtype} {tiles.shape}")
    keep = np.arange(n)
    if n > max_tiles:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_tiles, replace=False))
    out = {
        "version": SUMMARY_VERSION,
        "test": DRIFT_TEST,
        "tile_shape": [int(v) for v in tile_shape],
        "n": int(len(keep)),
        "n_tiles": int(n),
        "features": {k: [float(v) for v in _finite(features[k])[keep]] for k in names},
    }
    if tiles is not None:
        out["tiles"] = tiles[keep].astype(int).tolist()
    return out


def as_features(summary) -> dict:
    """Return the features of a ``drift_summary`` as (n,) float arrays (checked)."""
    if not isinstance(summary, dict) or not isinstance(summary.get("features"), dict):
        raise ValueError("the record must hold a 'drift_summary' with per-tile 'features' "
                         "(calibrate again with this version to get one); got "
                         f"{type(summary).__name__}")
    return {k: np.asarray(v, dtype=np.float64) for k, v in summary["features"].items()}


def rank_test(new, reference):
    """Two-sided Mann-Whitney U test per column: new tiles against reference tiles.

    Parameters
    ----------
    new : array, shape (m, k)
    reference : array, shape (n, k)

    Returns
    -------
    p, auc, smd : ndarrays of shape (k,)
        The p-values (1 where a column is constant in both samples), the AUC
        ``P(new > reference) + P(tie) / 2`` and the standardized mean difference
        ``(mean new - mean reference) / sqrt((var new + var reference) / 2)`` (0 when both
        variances are 0).

    Examples
    --------
    >>> p, auc, smd = rank_test(np.arange(10.0)[:, None] + 100, np.arange(10.0)[:, None])
    >>> float(auc[0]), bool(p[0] < 1e-3)
    (1.0, True)
    """
    from scipy import stats

    x = np.asarray(new, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    m, n = len(x), len(y)
    k = x.shape[1]
    p = np.ones(k)
    auc = np.full(k, 0.5)
    if m == 0 or n == 0:
        return p, auc, np.zeros(k)
    varying = (np.ptp(np.concatenate([x, y]), axis=0) > 0)
    if varying.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.mannwhitneyu(x[:, varying], y[:, varying], alternative="two-sided",
                                     method="auto", axis=0)
        p[varying] = np.nan_to_num(res.pvalue, nan=1.0)
        auc[varying] = res.statistic / (m * n)
    s = np.sqrt((x.var(axis=0) + y.var(axis=0)) / 2.0)
    diff = x.mean(axis=0) - y.mean(axis=0)
    smd = np.divide(diff, s, out=np.zeros(k), where=s > 0)
    return np.minimum(p, 1.0), auc, smd


def holm(pvalues, weights=None) -> np.ndarray:
    """Holm's step-down adjusted p-values, optionally weighted (same shape; NaN: not tested).

    A hypothesis is rejected at family-wise level ``level`` when its adjusted p-value is at most
    ``level``. With ``weights`` (positive, same shape) this is the weighted Holm procedure
    (Holm 1979): hypotheses are taken in the order of ``p / w`` and the one taken at step j is
    rejected while ``p / w <= level / (sum of the weights not yet rejected)``; it controls the
    family-wise error under any dependence, and spends more of ``level`` where the weight is.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    >>> holm([0.01, 0.04], weights=[3.0, 1.0]).tolist()
    [0.013333333333333334, 0.04]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    w = np.ones(p.shape) if weights is None else np.broadcast_to(
        np.asarray(weights, dtype=np.float64), p.shape)
    if np.any(w <= 0):
        raise ValueError("weights must be positive; got a weight <= 0")
    flat, wf = p.ravel(), w.ravel()
    tested = np.flatnonzero(~np.isnan(flat))
    out = np.full(flat.shape, np.nan)
    if len(tested):
        ratio = flat[tested] / wf[tested]
        order = tested[np.argsort(ratio, kind="stable")]
        remaining = np.cumsum(wf[order][::-1])[::-1]  # weight of the hypotheses not yet taken
        adj = np.maximum.accumulate(flat[order] / wf[order] * remaining)
        out[order] = np.minimum(adj, 1.0)
    return out.reshape(p.shape)


def _matrix(features: dict, names) -> np.ndarray:
    return np.stack([np.asarray(features[k], dtype=np.float64) for k in names], axis=1)


def drift_test(reference: dict, new: dict, region, *, level: float = 0.05,
               min_region_tiles: int = MIN_REGION_TILES, reference_region=None,
               reference_unit=None, unit=None) -> dict:
    """Test whether new tiles look like the calibration tiles, for the whole and per region.

    Parameters
    ----------
    reference : dict of str to array of shape (n,)
        The calibration tiles' statistics (:func:`as_features` of a record's summary).
    new : dict of str to array of shape (m,)
        The same statistics of the new tiles (every name of ``reference``).
    region : array of int, shape (m,)
        The region of each new tile (0 .. R - 1); regions with fewer than
        ``min_region_tiles`` tiles are not tested. With one region only the whole is tested.
    level : float
        Error level, in (0, 1).
    reference_region : array of int, shape (n,), optional
        The region of each calibration tile, cut as the new tiles' regions are (planes,
        blocks). With it, and enough calibration regions, the regions are tested by
        :func:`region_pvalues` (a new region against the calibration regions: valid when they
        are exchangeable as regions, whatever the differences between regions) and marked by
        :func:`benjamini_hochberg` at ``level``; the whole volume keeps its test (Mann-Whitney
        per statistic, Holm across statistics at ``level``). Without it, or with fewer than
        ``1 / level - 1`` calibration regions (a conformal p-value cannot go below
        ``1 / (K + 1)``), the regions fall back to the tile test: each region's tiles against
        the pooled calibration tiles, one weighted Holm family with the whole (half of
        ``level`` each), which also marks ordinary differences between regions; the result
        says so (``region_test``, ``region_note``) and a region it does not mark is "cannot
        tell".
    reference_unit, unit : array of int, shape (n,) and (m,), optional
        The unit of exchangeability (the plane) of each calibration and new tile, when regions
        are blocks within planes: planes differ from one another, so a block is ranked among
        the blocks of the calibration planes and of its own plane, each scored against the
        other planes (:func:`region_pvalues`); without them blocks of one plane, which share
        its differences, are marked together too often. Both or neither.

    Returns
    -------
    dict
        ``drifted`` (bool), ``p_value`` (the smallest adjusted p-value of the whole volume, and
        of the regions under the tile test), ``level``, ``auc`` and ``smd`` (effect sizes of the
        whole volume's most significant statistic, ``statistic``), ``whole`` (per statistic:
        raw and adjusted p-value, AUC, SMD), ``regions`` (per region: ``n_tiles``, ``tested``,
        ``p_value``, ``statistic``, ``auc``, ``smd``, ``drifted``, ``status``: "drift",
        "no drift" or "cannot tell"), ``region_test`` ("regions" or "tiles"), ``region_note``,
        ``n_reference``, ``n_new``, ``n_tests`` and ``test``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> effect = np.repeat(rng.normal(size=80), 10)
    >>> cal = {"f": effect + 0.1 * rng.normal(size=800)}
    >>> shift = np.repeat([0.0, 0.0, 6.0], 10)
    >>> new = {"f": np.repeat(rng.normal(size=3), 10) + shift + 0.1 * rng.normal(size=30)}
    >>> out = drift_test(cal, new, np.repeat([0, 1, 2], 10),
    ...                  reference_region=np.repeat(np.arange(80), 10))
    >>> out["region_test"], [r["status"] for r in out["regions"]]
    ('regions', ['no drift', 'no drift', 'drift'])
    """
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    names = sorted(reference)
    missing = [k for k in names if k not in new]
    if missing:
        raise ValueError(f"new must hold every statistic of the calibration summary; missing "
                         f"{missing}, got {sorted(new)}")
    ref = _matrix(reference, names)
    x = _matrix(new, names)
    region = np.asarray(region, dtype=np.int64).ravel()
    if region.shape != (len(x),):
        raise ValueError(f"region must have one entry per new tile ({len(x)}); got shape "
                         f"{region.shape}")
    if len(x) == 0:
        raise ValueError("new must hold at least one tile; got none (is the image smaller "
                         "than one tile?)")
    lvl = float(level)
    n_regions = int(region.max()) + 1 if len(region) else 0
    k_ref, note = 0, ""
    if reference_region is not None:
        reference_region = np.asarray(reference_region).ravel()
        if reference_region.shape != (len(ref),):
            raise ValueError(f"reference_region must have one entry per calibration tile "
                             f"({len(ref)}); got shape {reference_region.shape}")
        ids, counts = np.unique(reference_region, return_counts=True)
        big = np.isin(reference_region, ids[counts >= min_region_tiles])
        k_ref = int(np.sum(counts >= min_region_tiles))
    if (reference_unit is None) != (unit is None):
        raise ValueError("reference_unit and unit must be given together (the plane of each "
                         "calibration and new tile) or not at all; got one of them")
    region_units = unit is not None and reference_region is not None
    for name, arr, want in (("reference_unit", reference_unit, len(ref)), ("unit", unit, len(x))):
        if arr is not None and np.shape(arr) != (want,):
            raise ValueError(f"{name} must have one entry per tile ({want}); got shape "
                             f"{np.shape(arr)}")
    floor = _floor(region, unit if region_units else None, n_regions, min_region_tiles,
                   None if reference_region is None else reference_region[big],
                   np.asarray(reference_unit).ravel()[big] if region_units else None)
    use_regions = n_regions > 1 and reference_region is not None and floor <= lvl
    if n_regions > 1 and not use_regions:
        need = int(np.ceil(1.0 / lvl - 1.0 - 1e-9))
        note = ("the calibration tiles cannot be cut into these regions (a record made before "
                "tile positions were kept: calibrate again; or regions given as an array)"
                if reference_region is None else
                f"the calibration has {k_ref} regions of {min_region_tiles} tiles or more, too "
                f"few for the region test at level {lvl:g}: its p-values cannot go below "
                f"{floor:.3g}; it needs {need}")
        note = (f"{note}. The map shows the tile test instead (each region's tiles against the "
                "pooled calibration tiles), which also marks ordinary differences between "
                "regions: a marked region may be ordinary, an unmarked one cannot be told")
    p_whole, auc_whole, smd_whole = rank_test(x, ref)
    rows = [p_whole]
    whole_test = "tiles"
    if unit is not None:
        n_cal_units = len(np.unique(reference_unit))
        n_new_units = len(np.unique(unit))
        if comb(n_cal_units + n_new_units, n_new_units) * lvl >= 1 and lvl * 1000 >= 1:
            perm = plane_permutation_test(ref, reference_unit, x, unit)
            rows = [np.full(len(names), np.nan)]  # one test, its statistic the largest shift
            rows[0][perm["feature"]] = perm["p"]
            whole_test = "planes"
    per_region = []
    for r in range(n_regions if (n_regions > 1 and not use_regions) else 0):
        sel = region == r
        count = int(sel.sum())
        if count >= min_region_tiles:
            pr, ar, sr = rank_test(x[sel], ref)
        else:
            pr, ar, sr = np.full(len(names), np.nan), np.full(len(names), 0.5), np.zeros(len(names))
        rows.append(pr)
        per_region.append((count, pr, ar, sr))
    # tile test: half of the level for the whole volume, half for the regions (weighted Holm)
    weights = np.ones((len(rows), len(names)))
    if len(rows) > 1:
        weights[0] = (len(rows) - 1) * (len(names) if whole_test == "planes" else 1)
    adjusted = holm(np.stack(rows), weights=weights)
    best = int(np.nanargmin(adjusted[0]))
    whole = {k: {"p_value": float(p_whole[j]),
                 "p_adjusted": None if np.isnan(adjusted[0, j]) else float(adjusted[0, j]),
                 "auc": float(auc_whole[j]), "smd": float(smd_whole[j])}
             for j, k in enumerate(names)}
    regions = []
    for r, (count, _, ar, sr) in enumerate(per_region):
        adj = adjusted[r + 1]
        tested = bool(~np.isnan(adj).all())
        j = int(np.nanargmin(adj)) if tested else int(np.argmax(np.abs(ar - 0.5)))
        marked = bool(tested and adj[j] <= lvl)
        regions.append({
            "region": r, "n_tiles": count, "tested": tested,
            "p_value": float(adj[j]) if tested else None, "statistic": names[j],
            "auc": float(ar[j]), "smd": float(sr[j]), "drifted": marked,
            "status": "drift" if marked else "cannot tell",
        })
    if use_regions:
        units = None if not region_units else (np.asarray(reference_unit).ravel()[big],
                                               np.asarray(unit).ravel())
        regions = _conformal_regions(ref[big], reference_region[big], x, region, names, lvl,
                                     min_region_tiles, n_regions, units)
        n_tested = sum(r["tested"] for r in regions)
        if n_tested and floor > lvl / n_tested:
            note = (f"with {k_ref} calibration regions the region test's p-values cannot go "
                    f"below {floor:.3g}: it marks only when many regions drift "
                    f"(Benjamini-Hochberg across {n_tested} regions at {lvl:g}); an unmarked "
                    f"region cannot be told")
            for r in regions:
                if r["tested"] and not r["drifted"]:
                    r["status"] = "cannot tell"
    p_min = float(np.nanmin(adjusted))
    drifted = bool(p_min <= lvl) or any(r["drifted"] for r in regions)
    return {
        "drifted": drifted,
        "p_value": p_min,
        "level": lvl,
        "statistic": names[best],
        "auc": float(auc_whole[best]),
        "smd": float(smd_whole[best]),
        "whole_drifted": bool(adjusted[0, best] <= lvl),
        "whole": whole,
        "regions": regions,
        "region_test": "regions" if use_regions else "tiles",
        "region_note": note,
        "n_reference": int(len(ref)),
        "n_reference_regions": k_ref,
        "n_reference_units": (int(len(np.unique(np.asarray(reference_unit)[big])))
                              if use_regions and region_units else k_ref),
        "region_units": "planes" if use_regions and region_units else "regions",
        "whole_test": whole_test,
        "n_reference_planes": (int(len(np.unique(reference_unit)))
                               if reference_unit is not None else None),
        "n_new_planes": int(len(np.unique(unit))) if unit is not None else None,
        "n_new": int(len(x)),
        "n_tests": int(np.sum(~np.isnan(adjusted))),
        "test": DRIFT_TEST + ("; regions: " + REGION_TEST if use_regions else "")
        + ("; regions ranked with planes as units" if use_regions and region_units else "")
        + ("; whole volume: " + PLANE_TEST if whole_test == "planes" else ""),
    }


def _floor(region, unit, n_regions, min_tiles, ref_region, ref_unit):
    """Smallest p-value the region test can give a region (1 where it cannot run)."""
    if ref_region is None or n_regions < 2 or len(ref_region) == 0:
        return 1.0
    counts = np.bincount(region, minlength=n_regions)
    if unit is None:
        return 1.0 / (len(np.unique(ref_region)) + 1)
    unit = np.asarray(unit).ravel()
    tested = counts[region] >= min_tiles
    if not tested.any():
        return 1.0
    per_unit = max(len(np.unique(region[tested & (unit == u)])) for u in np.unique(unit[tested]))
    return 1.0 / ((len(np.unique(ref_unit)) + 1) * per_unit)


def _conformal_regions(ref, ref_region, x, region, names, lvl, min_tiles, n_regions, units):
    counts = np.bincount(region, minlength=n_regions)
    tested = np.flatnonzero(counts >= min_tiles)
    sel = np.isin(region, tested)
    ref_unit, new_unit = units if units is not None else (None, None)
    out = region_pvalues(ref, ref_region, x[sel], region[sel], reference_unit=ref_unit,
                         new_unit=None if new_unit is None else new_unit[sel])
    p = np.full(n_regions, np.nan)
    p[tested] = out["p"]
    marked = benjamini_hochberg(p, lvl)
    regions = []
    for r in range(n_regions):
        if r in tested:
            i = int(np.searchsorted(tested, r))
            j = int(out["feature"][i])
            _, _, smd = rank_test(x[region == r][:, [j]], ref[:, [j]])
            regions.append({"region": r, "n_tiles": int(counts[r]), "tested": True,
                            "p_value": float(p[r]), "statistic": names[j],
                            "auc": float(out["auc"][i]), "smd": float(smd[0]),
                            "score": float(out["score"][i]), "drifted": bool(marked[r]),
                            "status": "drift" if marked[r] else "no drift"})
        else:
            regions.append({"region": r, "n_tiles": int(counts[r]), "tested": False,
                            "p_value": None, "statistic": names[0], "auc": 0.5, "smd": 0.0,
                            "drifted": False, "status": "cannot tell"})
    return regions


def verdict_words(result: dict, *, region_word: str = "region") -> str:
    """Say a :func:`drift_test` result in plain words (the verdict a user reads)."""
    lvl = result["level"]
    regions = result["regions"]
    words = (region_word.replace("block of", "blocks of") if region_word.startswith("block")
             else f"{region_word}s")
    n_drift = sum(r["drifted"] for r in regions)
    n_tested = sum(r["tested"] for r in regions)
    n_unsure = sum(r.get("status") == "cannot tell" for r in regions)
    effect = (f"most shifted statistic: {result['statistic']} (AUC {result['auc']:.2f}, "
              f"standardized mean difference {result['smd']:+.2f})")
    p = result["p_value"]
    p_txt = f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"
    by_region = result.get("region_test") == "regions"
    how = ""
    if by_region and result.get("region_units") == "planes" and region_word != "plane":
        how = (f" (map of {words}, each ranked among the {result['n_reference_regions']} "
               f"{words} of the {result['n_reference_units']} calibration planes and its "
               f"own plane's, planes as the exchangeable units; false discovery rate {lvl:g}, "
               f"so when nothing drifts a false mark anywhere has chance at most {lvl:g})")
    elif by_region:
        how = (f" (map of {words} against the {result.get('n_reference_regions')} "
               f"calibration {words}; false discovery rate {lvl:g}, so when nothing "
               f"drifts a false mark anywhere has chance at most {lvl:g})")
    where = (f"; {n_drift} of {n_tested} {words} drift{how}" if n_tested else "")
    if n_unsure:
        where += f"; {n_unsure} cannot tell"
    note = result.get("region_note") or ""
    note = f" Regions: {note}." if note else ""
    planes = result.get("whole_test") == "planes"
    whole_how = (f", the {result['n_new_planes']} new planes against the "
                 f"{result['n_reference_planes']} calibration planes by a permutation test "
                 f"over planes" if planes else "")
    if not planes and result.get("n_new_planes"):
        note += (f" Whole volume: too few planes for the test over planes (it needs "
                 f"C(calibration + new planes, new planes) >= 1 / {lvl:g}): tiles are compared "
                 f"with tiles, so planes that differ only as planes ordinarily do can sound it.")
    if result["drifted"]:
        what = "planes" if planes else "tiles"
        head = (f"the new {what} do not look like the calibration {what}" if result.get(
            "whole_drifted", True) else f"some {words} do not look like the calibration "
            f"{words}")
        return (f"DRIFT: {head} (p = {p_txt} at family-wise level {lvl:g}{whole_how}{where}). "
                f"The guarantee "
                f"may not hold here: annotate ground truth in the marked {words} and "
                f"recalibrate. {effect[0].upper()}{effect[1:]}.{note}")
    what = (f"{result['n_new_planes']} new planes ({result['n_new']} tiles) are consistent with "
            f"the {result['n_reference_planes']} calibration planes" if planes else
            f"{result['n_new']} new tiles are consistent with the {result['n_reference']} "
            f"calibration tiles")
    return (f"No drift detected: the {what} (p = {p_txt} at family-wise level {lvl:g}"
            f"{whole_how}{where}; {effect}). Not a proof of exchangeability: a shift these "
            f"statistics do not see can still break the guarantee.{note}")
