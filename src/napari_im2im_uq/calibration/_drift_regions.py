"""The drift map's region test: conformal outlier p-values of regions, planes as units.

A new region (a plane, or a block of tiles within a plane) is compared with the calibration
regions cut the same way (Bates, Candès, Lei, Romano & Sesia 2023, "Testing for outliers with
conformal p-values", Ann. Statist. 51(1)), and the regions are marked by Benjamini-Hochberg.

Why blocks need their planes (issue 16)
---------------------------------------
Real planes differ from one another (a plane effect): the blocks of one plane share its
deviation. Ranked block against block, a new block is not exchangeable with the calibration
blocks: when its plane is the most extreme of the K + 1 planes (chance 1 / (K + 1)) every
block of it ranks above every calibration block at once, so ``P(p <= 1 / (K B + 1))`` is about
``1 / (K + 1)``, not ``1 / (K B + 1)`` (K calibration planes of B blocks), and Benjamini-Hochberg
marks all the blocks of that plane together. Measured on exchangeable ISBI planes (26
calibration, 4 new, 4 blocks each): some block marked in 10-14% of draws at level 0.05, about
``4 / 30``: the chance that one of the 4 new planes is the most extreme of the 30.

So the unit of exchangeability is the plane (``unit``): a new plane Q joins the K calibration
planes as one more unit; each region of the augmented set is scored against the tiles of the
*other* units only (leave-one-unit-out, the same rule for a calibration block as for a new
one), and a new region's p-value is its rank among the regions of all K + 1 units, the new
plane's own regions included.

Validity (short proof). Assume the K + 1 units exchangeable, and, within a unit, its B regions
exchangeable (no region position differs systematically from another). The score array
``s[unit, region]`` is computed by a rule that treats every unit and every region alike, so
permuting units, or regions within a unit, permutes the scores the same way. Under that group
the new region's (unit, region) pair is carried uniformly onto all (K + 1) B pairs, so its
rank among the (K + 1) B scores is uniform (ties counted against it): ``P(p <= t) <= t``. With
units of unequal region counts, each region weighs ``1 / (regions of its unit)`` (each unit
weighs ``1 / (K + 1)``), the same p-value when the counts are equal. The price: a region of a
plane that drifts as a whole is at best ``rank / ((K + 1) B)`` with the plane's other regions
just above it, so a whole-plane shift is marked only as well as a plane map would mark it
(``p >= 1 / (K + 1)`` for the plane's last region), while a shift of part of a plane (the
right half of every plane) ranks its blocks above their own plane's unshifted blocks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["benjamini_hochberg", "plane_permutation_test", "region_pvalues"]


def benjamini_hochberg(pvalues, level: float) -> np.ndarray:
    """Benjamini-Hochberg step-up rejections at false discovery rate ``level`` (NaN: not tested).

    The k smallest p-values are rejected for the largest k with ``p_(k) <= level * k / m``
    (m: the tested hypotheses). Each true null hypothesis is rejected with probability at most
    ``level`` (no p-value above ``level`` is ever rejected), and the false discovery rate is at
    most ``level`` when the p-values are positively dependent (PRDS; Benjamini & Yekutieli
    2001), as conformal p-values sharing one calibration set are (Bates et al. 2023). When no
    region drifts every rejection is false: the false discovery rate is then the family-wise
    false-alarm rate.

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.02, 0.5, np.nan], 0.05).tolist()
    [True, True, False, False]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.zeros(p.shape, bool)
    tested = np.flatnonzero(~np.isnan(p))
    if len(tested):
        order = tested[np.argsort(p[tested], kind="stable")]
        ok = p[order] <= float(level) * np.arange(1, len(order) + 1) / len(order)
        if ok.any():
            out[order[: np.flatnonzero(ok)[-1] + 1]] = True
    return out


def _within_unit_counts(col, unit, n_units):
    """Per value: how many values of its own unit lie below it, and how many tie (itself too)."""
    _, dense = np.unique(col, return_inverse=True)
    width = int(dense.max()) + 2
    key = unit.astype(np.int64) * width + dense.ravel()
    srt = np.sort(key)
    lo, hi = np.searchsorted(srt, key, "left"), np.searchsorted(srt, key, "right")
    start = np.searchsorted(srt, np.arange(n_units, dtype=np.int64) * width, "left")
    return lo - start[unit], hi - lo


def _units_of(region, unit, name):
    """Compact region and unit indices; each region must lie in one unit."""
    _, reg = np.unique(np.asarray(region).ravel(), return_inverse=True)
    reg = reg.ravel()
    if unit is None:
        return reg, reg.copy()
    unit = np.asarray(unit).ravel()
    if unit.shape != reg.shape:
        raise ValueError(f"{name}_unit must have one entry per tile ({len(reg)}); got shape "
                         f"{unit.shape}")
    _, un = np.unique(unit, return_inverse=True)
    un = un.ravel()
    n_reg = int(reg.max()) + 1 if len(reg) else 0
    first = np.full(n_reg, -1)
    first[reg] = un
    if np.any(first[reg] != un):
        raise ValueError(f"each {name} region must lie in a single unit (plane); got a region "
                         f"whose tiles are in several units")
    return reg, un


def _subset_rank(group, rng):
    """Each tile's rank in a random order of its group's tiles (a group scores its first m)."""
    n = len(group)
    sizes = np.bincount(group)
    order = np.lexsort((rng.random(n), group))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return rank, sizes


def region_pvalues(reference, reference_region, new, new_region, *, reference_unit=None,
                   new_unit=None, seed: int = 0) -> dict:
    """Conformal outlier p-value of each new region against the calibration regions.

    Real images differ from one plane to the next, so a region's tiles are not exchangeable
    with pooled calibration tiles; a new region is compared instead with the calibration
    *regions*. Each new unit (a plane; by default each region is its own unit) joins the
    calibration units as one more: in that augmented set each region's score is the largest,
    over the statistics, of ``|AUC - 0.5|`` (its tiles against the tiles of every *other* unit)
    divided by that statistic's root-mean-square over the set's regions. Every region is
    scored on a random subset of as many tiles as the set's smallest region, so every score is
    equally noisy. The p-value of a new region is the weighted share of the set's regions
    scoring at least as high (each unit weighs ``1 / (units)``, shared by its regions). When
    the new unit is exchangeable with the calibration units, and regions within a unit with one
    another, it is a valid p-value (the module docstring proves it): full conformal outlier
    p-values (Bates et al. 2023) with the plane, not the block, as the exchangeable unit. It
    cannot go below ``1 / ((K + 1) B)`` (K calibration units, B regions in the new one).

    Parameters
    ----------
    reference, new : array, shape (n, k) and (m, k)
        Statistics of the calibration and new tiles.
    reference_region, new_region : array of int, shape (n,) and (m,)
        Region of each tile (calibration regions and new regions are numbered apart).
    reference_unit, new_unit : array of int, shape (n,) and (m,), optional
        Unit (plane) of each tile; each region lies in one unit. None: each region is a unit.
    seed : int
        Seeds the subsets of the larger regions.

    Returns
    -------
    dict
        ``p`` (per new region, in the order of ``np.unique(new_region)``), ``score``,
        ``feature`` (index of the statistic that scores highest), ``auc`` (of that statistic),
        ``floor`` (the smallest p-value each region could have), ``n_reference_regions``,
        ``n_reference_units`` (K).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ref = rng.normal(size=(200, 1)) + np.repeat(rng.normal(size=20), 10)[:, None]
    >>> new = rng.normal(size=(20, 1)) + np.repeat([0.0, 9.0], 10)[:, None]
    >>> out = region_pvalues(ref, np.repeat(np.arange(20), 10), new, np.repeat([0, 1], 10))
    >>> [round(float(v), 3) for v in out["p"]]
    [0.714, 0.048]
    """
    ref = np.asarray(reference, dtype=np.float64)
    x = np.asarray(new, dtype=np.float64)
    ref_reg, ref_unit = _units_of(reference_region, reference_unit, "reference")
    new_reg, new_un = _units_of(new_region, new_unit, "new")
    n, n_feat = ref.shape
    k_reg, k_unit = int(ref_reg.max()) + 1, int(ref_unit.max()) + 1
    reg_unit = np.zeros(k_reg, np.int64)
    reg_unit[ref_reg] = ref_unit
    unit_size = np.bincount(ref_unit, minlength=k_unit)
    regs_per_unit = np.bincount(reg_unit, minlength=k_unit)
    rng = np.random.default_rng(seed)
    rank, sizes = _subset_rank(ref_reg, rng)
    srt = np.sort(ref, axis=0)
    below = np.empty((n, n_feat))  # below + ties / 2 among the other calibration units' tiles
    for f in range(n_feat):
        lo = np.searchsorted(srt[:, f], ref[:, f], "left")
        hi = np.searchsorted(srt[:, f], ref[:, f], "right")
        own_lo, own_tie = _within_unit_counts(ref[:, f], ref_unit, k_unit)
        below[:, f] = (lo - own_lo) + 0.5 * ((hi - lo) - own_tie)
    w_ref = 1.0 / regs_per_unit[reg_unit]
    n_new = int(new_reg.max()) + 1
    res = {key: np.zeros(n_new) for key in ("p", "score", "auc", "floor")}
    res["feature"] = np.zeros(n_new, np.int64)
    for u in np.unique(new_un):
        in_u = new_un == u
        own, own_reg = x[in_u], new_reg[in_u]
        ids, own_reg = np.unique(own_reg, return_inverse=True)
        own_reg = own_reg.ravel()
        own_rank, own_sizes = _subset_rank(own_reg, rng)
        m = int(min(sizes.min(), own_sizes.min()))
        sel, own_sel = rank < m, own_rank < m
        denom = (n - unit_size + len(own))[ref_unit[sel]]
        auc = np.empty((k_reg + len(ids), n_feat))
        for f in range(n_feat):
            t, o = ref[sel, f], np.sort(own[:, f])
            lo, hi = np.searchsorted(o, t, "left"), np.searchsorted(o, t, "right")
            val = (below[sel, f] + lo + 0.5 * (hi - lo)) / denom
            auc[:k_reg, f] = np.bincount(ref_reg[sel], weights=val, minlength=k_reg) / m
            lo = np.searchsorted(srt[:, f], own[own_sel, f], "left")
            hi = np.searchsorted(srt[:, f], own[own_sel, f], "right")
            val = (lo + 0.5 * (hi - lo)) / n
            auc[k_reg:, f] = np.bincount(own_reg[own_sel], weights=val, minlength=len(ids)) / m
        dev = np.abs(auc - 0.5)
        scale = np.sqrt(np.mean(dev ** 2, axis=0)) + 1e-12
        score = (dev / scale).max(axis=1)
        weight = np.concatenate([w_ref, np.full(len(ids), 1.0 / len(ids))]) / (k_unit + 1)
        for i, r in enumerate(ids):
            s = score[k_reg + i]
            j = int(np.argmax(dev[k_reg + i] / scale))
            res["p"][r] = min(1.0, float(np.sum(weight[score >= s - 1e-12])))
            res["score"][r], res["feature"][r] = s, j
            res["auc"][r] = auc[k_reg + i, j]
            res["floor"][r] = weight[-1]
    return {**res, "n_reference_regions": k_reg, "n_reference_units": k_unit}


def plane_permutation_test(reference, reference_unit, new, new_unit, *,
                           permutations: int = 999, seed: int = 0) -> dict:
    """Test the whole volume with planes as units: are the new planes like the calibration ones.

    The tiles of all K + L planes are ranked together (mid-ranks, per statistic); a set S of
    planes gives, per statistic, the Mann-Whitney AUC of its tiles against the others' (from
    the planes' rank sums) and the set's score is the largest ``|AUC - 0.5|`` over the
    statistics, each divided by its root-mean-square over the sets scored. The new planes' set
    is scored with ``permutations`` random sets of L planes among the K + L, and
    ``p = (1 + #{random sets scoring at least as high}) / (permutations + 1)``. When the new
    planes are exchangeable with the calibration planes the new set is one more uniform draw
    of L planes among K + L, exchangeable with the random ones (the scaling treats every set
    alike), so p is a valid p-value (a Monte-Carlo permutation test), whatever the
    differences between planes; it cannot go below ``1 / C(K + L, L)`` nor
    ``1 / (permutations + 1)``.

    Parameters
    ----------
    reference, new : array, shape (n, k) and (m, k)
        Statistics of the calibration and new tiles.
    reference_unit, new_unit : array of int, shape (n,) and (m,)
        Plane of each tile (calibration and new planes are numbered apart).
    permutations : int
    seed : int

    Returns
    -------
    dict
        ``p``, ``feature`` (index of the statistic that scores highest for the new planes),
        ``auc`` (per statistic, the new planes' tiles against the calibration tiles),
        ``n_reference_units`` (K), ``n_units`` (L), ``floor`` (the smallest possible p).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(400, 1)) + np.repeat(rng.normal(size=40), 10)[:, None]
    >>> new = rng.normal(size=(40, 1)) + np.repeat(rng.normal(size=4) + 3.0, 10)[:, None]
    >>> out = plane_permutation_test(ref, np.repeat(np.arange(40), 10), new,
    ...                              np.repeat(np.arange(4), 10))
    >>> out["p"] < 0.01, out["n_reference_units"]
    (True, 40)
    """
    from math import comb

    from scipy import stats

    ref = np.asarray(reference, dtype=np.float64)
    x = np.asarray(new, dtype=np.float64)
    _, ru = np.unique(np.asarray(reference_unit).ravel(), return_inverse=True)
    _, nu = np.unique(np.asarray(new_unit).ravel(), return_inverse=True)
    k, n_new = int(ru.max()) + 1, int(nu.max()) + 1
    unit = np.concatenate([ru.ravel(), k + nu.ravel()])
    ranks = stats.rankdata(np.concatenate([ref, x]), axis=0)
    total = len(unit)
    sums = np.stack([np.bincount(unit, weights=c, minlength=k + n_new) for c in ranks.T], 1)
    counts = np.bincount(unit, minlength=k + n_new).astype(np.float64)
    rng = np.random.default_rng(seed)
    members = np.zeros((permutations + 1, k + n_new))
    members[0, k:] = 1.0
    pick = np.argsort(rng.random((permutations, k + n_new)), axis=1)[:, :n_new]
    np.put_along_axis(members[1:], pick, 1.0, axis=1)
    n_s = members @ counts
    auc = (members @ sums - (n_s * (n_s + 1) / 2)[:, None]) / (n_s * (total - n_s))[:, None]
    dev = np.abs(auc - 0.5)
    scale = np.sqrt(np.mean(dev ** 2, axis=0)) + 1e-12
    score = (dev / scale).max(axis=1)
    p = (1.0 + np.sum(score[1:] >= score[0] - 1e-12)) / (permutations + 1)
    floor = max(1.0 / comb(k + n_new, n_new), 1.0 / (permutations + 1))
    return {"p": float(max(p, floor)), "feature": int(np.argmax(dev[0] / scale)),
            "auc": auc[0], "n_reference_units": k, "n_units": n_new, "floor": floor}
