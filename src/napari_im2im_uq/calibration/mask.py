"""Continuous masks ``m_lam = min(1, lam / (eps + 1 - m_theta))`` (Kutiel et al. 2023).

A mask network scores each pixel's trustworthiness m_theta in [0, 1]; the calibrated mask
multiplies both the prediction and the truth, and the distortion ``d(m y, m yhat)`` (L1, L2 or
1 - SSIM; L1 and L2 are means over the tile's pixels, so alpha does not depend on the tile
size) grows with lam. Three rules choose lam:

- "conformal" (default, valid): each tile's critical value lam_i is the largest lam before its
  distortion first exceeds alpha; lam_hat is the k-th smallest, k = floor((n + 1)(1 - beta)),
  so ``P(d_test(lam_hat) <= alpha) >= beta`` over the calibration draw and the test tile.
- "crc" (valid): conformal risk control of the expected distortion,
  ``lam_hat = sup{lam : (sum_i d_i(lam) + B) / (n + 1) <= alpha}``, solved exactly on the
  pooled breakpoints for L1 and L2.
- "paper" (NOT valid, kept for comparison): the empirical (1 - beta)-quantile of the lam_i
  exactly as the paper writes it ("the maximal value for which at least beta fraction of the
  calibration set satisfies the condition"); it lacks the finite-sample correction and misses
  its stated level for some n (see Appendix B of Adame et al. 2025).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import (
    as_tiles,
    check_choice,
    check_finite,
    check_level,
    check_positive,
    check_same_shape,
    check_valid_block,
    is_dask,
    tile_blocks,
)
from ._apply import calibrated_mask as _calibrated_mask
from ._common import tile_phrase
from ._errors import InfeasibleCalibrationError, crc_threshold
from ._result import CalibrationResult

__all__ = ["calibrate_mask", "masked_distortion_curve"]

_DISTANCES = ("l1", "l2", "ssim")
_RULES = ("conformal", "crc", "paper")
_ROUND = 9  # decimals kept when turning (n + 1)(1 - beta) into an integer rank
_SSIM_GRID = 48
_SSIM_BISECT = 50


def _distortion(mask, prediction, truth, distance, data_range, valid=None):
    """Per-tile d(m y, m yhat) for a stack of tiles (mean over valid pixels for l1 / l2)."""
    diff = mask * (np.asarray(truth, np.float64) - np.asarray(prediction, np.float64))
    n = diff.shape[0]
    if distance in ("l1", "l2"):
        a = np.abs(diff) if distance == "l1" else diff**2
        if valid is None:
            return a.reshape(n, -1).mean(axis=1)
        v = valid.reshape(n, -1)
        return np.where(v, a.reshape(n, -1), 0.0).sum(axis=1) / v.sum(axis=1)
    from skimage.metrics import structural_similarity

    y = mask * np.asarray(truth, np.float64)
    yhat = mask * np.asarray(prediction, np.float64)
    return np.array([1.0 - structural_similarity(y[i], yhat[i], data_range=data_range)
                     for i in range(n)])


def masked_distortion_curve(mask_scores, prediction, truth, lams, *, distance="l1", eps=1e-3,
                            data_range=None, valid=None):
    """Per-tile distortion of the calibrated mask at each lam: array (n, len(lams)).

    Examples
    --------
    >>> m = np.zeros((1, 2, 2)); y = np.ones((1, 2, 2)); yhat = np.zeros((1, 2, 2))
    >>> masked_distortion_curve(m, yhat, y, [0.0, 0.5, 2.0]).round(3).tolist()
    [[0.0, 0.5, 1.0]]
    """
    out = []
    for lam in np.atleast_1d(lams):
        mask = _calibrated_mask(mask_scores, float(lam), eps=eps)
        out.append(_distortion(mask, prediction, truth, distance, data_range, valid))
    return np.stack(out, axis=1)


_STORE_BYTES = 1 << 30  # lazy inputs are kept in memory up to this size (else streamed)


def _read_once(arrays) -> bool:
    """Whether ``arrays`` hold a lazy input small enough to be read once and kept."""
    lazy = [a for a in arrays.values() if a is not None and is_dask(a)]
    size = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in arrays.values()
               if a is not None)
    return bool(lazy) and size <= _STORE_BYTES


def _materialise(arrays, n) -> dict:
    """Read every array block by block, once, into memory (numpy)."""
    parts = {k: [] for k in arrays}
    for _, blk in tile_blocks(n, arrays):
        for k, v in blk.items():
            if v is not None:
                parts[k].append(np.asarray(v))
    return {k: (np.concatenate(v) if v else None) for k, v in parts.items()}


def _distortion_on_grid(m, f, y, valid, grid, *, distance, eps):
    """Per-tile L1 / L2 distortion at every sorted lam of ``grid`` in one pass: (n, len(grid)).

    ``d_i(lam) = sum_p min(1, lam / b_p)**q a_p / count_i`` with ``b_p = eps + 1 - m_p`` and
    ``a_p = |y_p - f_p|**q``: pixels with ``b_p <= lam`` are saturated and count ``a_p``, the
    others ``lam**q a_p / b_p**q``. Each pixel goes to the first grid point at or above its
    ``b_p``; two weighted counts per tile and grid interval give every point (the same values as
    :func:`masked_distortion_curve` up to rounding, about 1e-15 relative).
    """
    px = _Pixels(m, f, y, valid, distance=distance, eps=eps)
    q, b, a, count = px.q, px.b, px.a, px.count.astype(np.float64)
    n, g = b.shape[0], grid.size
    idx = np.searchsorted(grid, b, side="left")  # saturated at grid[j] iff j >= idx
    keys = (idx + (g + 1) * np.arange(n)[:, None]).ravel()
    sat = np.bincount(keys, weights=a.ravel(), minlength=n * (g + 1)).reshape(n, g + 1)
    lin = np.bincount(keys, weights=(a / b**q).ravel(),
                      minlength=n * (g + 1)).reshape(n, g + 1)
    saturated = np.cumsum(sat, axis=1)[:, :g]  # idx <= j
    linear = np.cumsum(lin[:, ::-1], axis=1)[:, ::-1][:, 1:]  # idx > j
    return (saturated + np.asarray(grid, np.float64) ** q * linear) / count[:, None]


_LOW32 = np.uint64(0xFFFFFFFF)


class _Pixels:
    """Per-pixel terms of L1 / L2 distortions, computed once from the tiles.

    ``b = eps + 1 - m`` is the lam at which a pixel saturates, ``e = y - f``, ``a = |e|**q`` its
    weight (0 where not valid), all (n, pixels) float64; ``count`` the valid pixels of each tile.
    """

    def __init__(self, m, f, y, valid, *, distance, eps):
        self.q = q = 1 if distance == "l1" else 2
        n = m.shape[0]
        self.m = np.asarray(m)
        self.b = (eps + 1.0 - np.asarray(m, np.float64)).reshape(n, -1)
        self.e = (np.asarray(y, np.float64) - np.asarray(f, np.float64)).reshape(n, -1)
        a = np.abs(self.e) if q == 1 else self.e**2
        if valid is None:
            self.v, self.a, self.count = None, a, np.full(n, a.shape[1])
        else:
            self.v = np.asarray(valid).reshape(n, -1)
            self.a, self.count = np.where(self.v, a, 0.0), self.v.sum(axis=1)

    def at(self, lam):
        """Each tile's distortion at ``lam``, by the same operations as :func:`_distortion`."""
        mask = self.b * 0.0 + 1.0 if lam == np.inf else np.minimum(1.0, float(lam) / self.b)
        diff = mask * self.e
        d = np.abs(diff) if self.q == 1 else diff**2
        if self.v is None:
            return d.mean(axis=1)
        return np.where(self.v, d, 0.0).sum(axis=1) / self.v.sum(axis=1)


def _mask_bits(m):
    """uint32 ``2**32 - 1 - bits(m)`` (ascending with b) for a mask whose values fit float32.

    float16 / float32, integers or booleans (the values being in [0, 1]), and wider floats
    holding float32 values (a float32 output upcast) are exact in float32, whose bits grow with
    a non-negative value; None for other masks.
    """
    if m.dtype.kind not in "biuf":
        return None
    m32 = m.astype(np.float32).reshape(m.shape[0], -1)
    if m.dtype.kind == "f" and m.dtype.itemsize > 4 and \
            not np.array_equal(m32, m.reshape(m32.shape)):
        return None
    m32 += np.float32(0.0)  # -0.0 -> +0.0, whose bits sort with the other zeros
    return np.uint32(0xFFFFFFFF) - m32.view(np.uint32)


def _order_keys(m):
    """uint64 keys (n, pixels) whose ascending order is the stable ascending order of ``b``.

    ``key = mask bits << 32 | flat index`` (:func:`_mask_bits`): keys ascend with b, and ties of
    m go by index. Two different m can round to one b (tiny m): callers check for that
    (:func:`_ties_agree`) and fall back to a stable argsort of b. None for wider masks.
    """
    bits = _mask_bits(m) if m.size < 2**32 else None
    if bits is None:
        return None
    keys = bits.astype(np.uint64) << np.uint64(32)
    keys |= np.arange(bits.size, dtype=np.uint64).reshape(bits.shape)
    return keys


def _ties_agree(bs, hi) -> bool:
    """Whether b ties only where m does, so an order by m's bits is the stable order of b.

    ``bs`` holds b in that order, ``hi`` the mask bits in it (along the last axis).
    """
    return bool(np.all((bs[..., 1:] > bs[..., :-1]) | (hi[..., 1:] == hi[..., :-1])))


def _radix_order(bits, width):
    """Stable ascending order of unsigned integers ``bits``: 16 bits a pass, the lowest first.

    Each pass is numpy's stable argsort of 16-bit digits (a radix sort, linear in size); a
    digit the same for every element is skipped.
    """
    order = None
    for shift in range(0, width, 16):
        digit = (bits >> bits.dtype.type(shift)).astype(np.uint16)
        if order is not None:
            digit = digit[order]
        if digit.min() == digit.max():
            continue
        step = np.argsort(digit, kind="stable")
        order = step if order is None else order[step]
    return np.arange(bits.size) if order is None else order


def _pooled_order(m, b):
    """Flat indices of every pixel in stable ascending order of b, and b in that order.

    A 32-bit mask sorts by its bits (two radix passes), checked against b's ties; otherwise b's
    own bits (b > 0, so they ascend with it; four passes).
    """
    bits = _mask_bits(m)
    if bits is not None:
        bits = bits.ravel()
        flat = _radix_order(bits, 32)
        bs = b.ravel()[flat]
        if _ties_agree(bs, bits[flat]):
            return flat, bs
    flat = _radix_order(b.ravel().view(np.uint64), 64)
    return flat, b.ravel()[flat]


class _SortedTiles(_Pixels):
    """Each tile's pixels in stable ascending order of b, with the sums the sweeps read.

    ``sat_before[i, j]`` is the weight ``a`` of the pixels before j (saturated once lam reaches
    ``bs[i, j]``), ``lin_from[i, j]`` the slope weight ``a / b**q`` from j on. Built once and
    read by the critical values and the risk curve.
    """

    def __init__(self, m, f, y, valid, *, distance, eps):
        super().__init__(m, f, y, valid, distance=distance, eps=eps)
        q, b, a, n = self.q, self.b, self.a, self.b.shape[0]
        keys = _order_keys(self.m)
        flat, self.sorted_by = None, "argsort"
        if keys is not None:
            keys.sort(axis=1)
            flat = (keys & _LOW32).astype(np.intp)
            bs = b.ravel()[flat]
            if _ties_agree(bs, keys >> np.uint64(32)):
                self.sorted_by = "mask bits"
            else:
                flat = None
        if flat is None:
            order = np.argsort(b, axis=1, kind="stable")
            flat = order + b.shape[1] * np.arange(n)[:, None]
            bs = np.take_along_axis(b, order, axis=1)
        self.flat, self.bs, self.as_ = flat, bs, a.ravel()[flat]
        ws = (1.0 / bs) ** q * self.as_
        self.sat_before = np.cumsum(self.as_, axis=1) - self.as_
        self.lin_from = np.cumsum(ws[:, ::-1], axis=1)[:, ::-1]

    def critical_values(self, alpha):
        """Largest lam before each tile's distortion first exceeds alpha (+inf if never)."""
        q, bs, as_, sat_before, lin_from = self.q, self.bs, self.as_, self.sat_before, \
            self.lin_from
        count = self.count.astype(np.float64)
        d_at = (sat_before + bs**q * lin_from) / count[:, None]
        over = d_at > alpha
        first = over.argmax(axis=1)
        crit = np.full(bs.shape[0], np.inf)
        for i in np.flatnonzero(~over.any(axis=1)):
            if as_[i].sum() / count[i] > alpha:  # cannot happen: d is continuous
                crit[i] = bs[i, -1]
        for i in np.flatnonzero(over.any(axis=1)):  # scalar arithmetic, as the reference does
            j = first[i]
            slope = lin_from[i, j]
            lam = ((alpha * count[i] - sat_before[i, j]) / slope) ** (1.0 / q) \
                if slope > 0 else 0.0
            lo = bs[i, j - 1] if j > 0 else 0.0
            crit[i] = min(max(lam, lo), bs[i, j])
        return crit

    def on_grid(self, grid):
        """Each tile's distortion at every sorted lam of ``grid``: (n, len(grid)).

        A pixel is saturated at lam when ``b <= lam``: with k of them, the distortion is
        ``(sat_before[k] + lam**q lin_from[k]) / count`` (k = all: the tile's whole weight).
        """
        grid = np.asarray(grid, np.float64)
        n, p = self.bs.shape
        k = np.stack([np.searchsorted(row, grid, side="right") for row in self.bs]) if n else \
            np.zeros((0, grid.size), np.intp)
        inside = np.minimum(k, p - 1)
        sat = np.take_along_axis(self.sat_before, inside, axis=1)
        total = self.sat_before[:, -1] + self.as_[:, -1]
        sat = np.where(k < p, sat, total[:, None])
        lin = np.where(k < p, np.take_along_axis(self.lin_from, inside, axis=1), 0.0)
        return (sat + grid**self.q * lin) / self.count[:, None]


class _PooledTiles(_Pixels):
    """Every pixel of every tile in one stable ascending order of b (crc's pooled sweep).

    ``as_`` holds each pixel's weight divided by its tile's count, ``ws`` its slope weight.
    """

    def __init__(self, m, f, y, valid, *, distance, eps):
        super().__init__(m, f, y, valid, distance=distance, eps=eps)
        self.flat, self.bs = _pooled_order(self.m, self.b)
        self.as_ = (self.a / self.count[:, None]).ravel()[self.flat]
        self.ws = (1.0 / self.bs) ** self.q * self.as_

    def crc_lam(self, threshold):
        """sup{lam : sum_i d_i(lam) <= threshold}, from the pooled breakpoints."""
        bs, as_, ws, q = self.bs, self.as_, self.ws, self.q
        sat_before = np.cumsum(as_)
        sat_before -= as_
        lin_from = np.cumsum(ws[::-1])[::-1]
        total_at = (bs if q == 1 else bs**q) * lin_from
        total_at += sat_before
        over = total_at > threshold
        j = int(np.argmax(over))
        if not over[j]:
            return np.inf
        slope = lin_from[j]
        lam = ((threshold - sat_before[j]) / slope) ** (1.0 / q) if slope > 0 else 0.0
        lo = bs[j - 1] if j > 0 else 0.0
        return float(min(max(lam, lo), bs[j]))

    def on_grid(self, grid):
        """Each tile's distortion at every sorted lam of ``grid``: (n, len(grid)).

        In pooled order the pixels saturated at ``grid[j]`` (``b <= grid[j]``) come first:
        each pixel's first such j is read off the run lengths, and two weighted counts per tile
        and grid interval give every point.
        """
        grid = np.asarray(grid, np.float64)
        n, p = self.b.shape
        g = grid.size
        cuts = np.searchsorted(self.bs, grid, side="right")
        first = np.repeat(np.arange(g + 1), np.diff(np.concatenate([[0], cuts, [n * p]])))
        keys = first + (g + 1) * (self.flat // p)
        sat = np.bincount(keys, weights=self.as_, minlength=n * (g + 1)).reshape(n, g + 1)
        lin = np.bincount(keys, weights=self.ws, minlength=n * (g + 1)).reshape(n, g + 1)
        saturated = np.cumsum(sat, axis=1)[:, :g]  # first <= j
        linear = np.cumsum(lin[:, ::-1], axis=1)[:, ::-1][:, 1:]  # first > j
        return saturated + grid**self.q * linear


def _ssim_critical_values(m, f, y, *, alpha, eps, data_range):
    """Largest lam before each tile's 1 - SSIM first exceeds alpha (+inf if it never does)."""
    n = m.shape[0]
    b = (eps + 1.0 - np.asarray(m, np.float64)).reshape(n, -1)  # lam at which a pixel saturates
    return np.array([
        _ssim_critical(b[i], f[i], y[i], alpha=alpha, eps=eps, data_range=data_range, m=m[i])
        for i in range(n)
    ])


def _ssim_critical(b, f, y, *, alpha, eps, data_range, m):
    def d(lam):
        mask = _calibrated_mask(m, lam, eps=eps)
        return _distortion(mask[None], f[None], y[None], "ssim", data_range)[0]

    top = float(b.max())
    grid = np.linspace(0.0, top, _SSIM_GRID)
    values = np.array([d(g) for g in grid])
    over = np.flatnonzero(values > alpha)
    if over.size == 0:
        return np.inf
    j = over[0]
    if j == 0:
        return 0.0
    lo, hi = grid[j - 1], grid[j]
    for _ in range(_SSIM_BISECT):
        mid = 0.5 * (lo + hi)
        if d(mid) > alpha:
            hi = mid
        else:
            lo = mid
    return lo


def calibrate_mask(mask_scores, prediction, truth, *, alpha, beta=0.9, distance="l1",
                   rule="conformal", eps=1e-3, data_range=None, loss_bound=None, valid=None):
    """Calibrate Kutiel et al.'s continuous mask so the masked distortion stays below alpha.

    Parameters
    ----------
    mask_scores : array_like, shape (n, rows, columns)
        The mask network's output m_theta in [0, 1] (1 = trustworthy), one tile per index.
    prediction, truth : array_like, shape (n, rows, columns)
    alpha : float
        Distortion level, in the units of the distance (L1: intensity; L2: squared
        intensity; SSIM: 1 - SSIM).
    beta : float, default 0.9
        For "conformal" and "paper": the probability that a new tile meets alpha.
    distance : {"l1", "l2", "ssim"}
        "l1": mean |m (y - yhat)|; "l2": mean (m (y - yhat))**2; "ssim": 1 - SSIM(m y, m yhat)
        (scikit-image, needs ``data_range``).
    rule : {"conformal", "crc", "paper"}
        See the module docstring; "paper" is marked ``valid=False`` in the result.
    eps : float, default 1e-3
        The epsilon of the mask formula.
    data_range : float or (float, float), optional
        Image range: needed for SSIM, and gives B for "crc" (width, or width**2 for L2).
    loss_bound : float, optional
        B for "crc", stated directly.
    valid : array_like of bool, optional
        Pixels that count in the L1 / L2 means (not supported with SSIM).

    Notes
    -----
    Dask inputs are read block by block; "conformal" and "paper" keep one critical value per
    tile, while "crc" pools every pixel's breakpoint in memory to solve the sweep exactly.

    Returns
    -------
    CalibrationResult
        ``method="mask"``; apply with ``result.mask(mask_scores)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((50, 8, 8)); yhat = y + rng.normal(scale=0.1, size=y.shape)
    >>> m = rng.random(y.shape)
    >>> res = calibrate_mask(m, yhat, y, alpha=0.05, beta=0.8)
    >>> res.valid, res.rule
    (True, 'conformal')
    """
    alpha = check_level(alpha, "alpha") if distance != "ssim" else _check_ssim_alpha(alpha)
    check_choice(distance, "distance", _DISTANCES)
    check_choice(rule, "rule", _RULES)
    if rule != "crc":
        beta = check_level(beta, "beta")
    eps = check_positive(eps, "eps")
    mask_scores = as_tiles(mask_scores, "mask_scores")
    prediction = as_tiles(prediction, "prediction")
    truth = as_tiles(truth, "truth")
    check_same_shape("mask_scores", mask_scores, prediction=prediction, truth=truth)
    if valid is not None:
        if distance == "ssim":
            raise ValueError("valid is not supported with distance='ssim' (SSIM is computed on "
                             "whole tiles); crop the tiles to the labelled region instead")
        valid = valid if is_dask(valid) else np.asarray(valid)
        check_same_shape("mask_scores", mask_scores, valid=valid)
    width = _range_width(data_range)
    if distance == "ssim" and width is None:
        raise ValueError("data_range is required for distance='ssim' (the SSIM constants depend "
                         "on it); got None")
    n = int(mask_scores.shape[0])
    arrays = {"m": mask_scores, "f": prediction, "y": truth, "valid": valid}
    if _read_once(arrays):  # lazy inputs are read once and kept (every pass replays them)
        arrays = _materialise(arrays, n)
        mask_scores, prediction, truth, valid = (arrays[k] for k in ("m", "f", "y", "valid"))

    # one pass: validate, and collect either per-tile critical values or the pooled data (crc);
    # in memory, the tiles sorted by breakpoint are kept for the risk curve (sorted once)
    streamed = any(a is not None and is_dask(a) for a in arrays.values())  # beyond _STORE_BYTES
    crit_parts, pooled, sorted_tiles = [], {"m": [], "f": [], "y": [], "valid": []}, None
    for start, blk in tile_blocks(n, arrays):
        v = check_valid_block(blk["valid"], start)
        for name, key in (("mask_scores", "m"), ("prediction", "f"), ("truth", "y")):
            check_finite(blk[key], name, where=v, offset=start)
        mm = np.asarray(blk["m"])
        if mm.size and (mm.min() < 0 or mm.max() > 1):
            raise ValueError(f"mask_scores must lie in [0, 1]; got values from {mm.min():g} to "
                             f"{mm.max():g}")
        if rule == "crc":
            for key, val in (("m", mm), ("f", blk["f"]), ("y", blk["y"]), ("valid", v)):
                pooled[key].append(val)
        elif distance == "ssim":
            crit_parts.append(_ssim_critical_values(mm, blk["f"], blk["y"], alpha=alpha,
                                                    eps=eps, data_range=width))
        else:
            block_sorted = _SortedTiles(mm, blk["f"], blk["y"], v, distance=distance, eps=eps)
            crit_parts.append(block_sorted.critical_values(alpha))
            if not streamed:  # in memory, tile_blocks gives one block: every tile
                sorted_tiles = block_sorted

    tile = tile_phrase(mask_scores.shape[1:])
    dist_words = {"l1": "mean absolute", "l2": "mean squared", "ssim": "1 - SSIM"}[distance]
    if rule == "crc":
        if distance == "ssim":
            raise ValueError("rule='crc' needs a distortion that grows with lam; 1 - SSIM need "
                             "not, so use rule='conformal' with distance='ssim'")
        bound = _crc_bound(loss_bound, width, distance)
        threshold = crc_threshold(n, alpha, bound, what="rule='crc'")
        stack = {k: (None if not vals or vals[0] is None else vals[0] if len(vals) == 1
                     else np.concatenate(vals)) for k, vals in pooled.items()}
        sorted_tiles = _PooledTiles(stack["m"], stack["f"], stack["y"], stack["valid"],
                                    distance=distance, eps=eps)
        lam = sorted_tiles.crc_lam(threshold)
        crit = None
        guarantee = (
            f"On average over the calibration draw and a new {tile} tile from the same "
            f"population as the {n} calibration tiles, the {dist_words} distortion between the "
            f"masked prediction and the masked truth is at most {alpha:g}."
        )
        valid_rule, beta_out = True, None
    else:
        bound = None
        crit = np.sort(np.concatenate(crit_parts))
        if rule == "conformal":
            k = math.floor(round((n + 1) * (1.0 - beta), _ROUND))
            if k < 1:
                need = math.ceil(round(1.0 / (1.0 - beta), _ROUND)) - 1
                raise InfeasibleCalibrationError(
                    f"the calibration set has {n} tiles; beta={beta:g} needs at least {need} "
                    "(with fewer, no lam > 0 is certified)"
                )
            guarantee = (
                f"With probability at least {beta:.0%} over the calibration draw and a new {tile} "
                f"tile from the same population as the {n} calibration tiles, the {dist_words} "
                f"distortion between the masked prediction and the masked truth is at most "
                f"{alpha:g}."
            )
            valid_rule = True
        else:
            k = n - math.ceil(round(beta * n, _ROUND)) + 1
            k = min(max(k, 1), n)
            guarantee = (
                "Kutiel et al.'s empirical (1 - beta)-quantile, kept for comparison: it is NOT a "
                "valid guarantee (no finite-sample correction), and for some n fewer than "
                f"{beta:.0%} of new tiles meet alpha={alpha:g}. Use rule='conformal'."
            )
            valid_rule = False
        lam = float(crit[k - 1])
        beta_out = beta
    if rule != "paper":
        guarantee += " It holds for tiles exchangeable with the calibration tiles."
    # curve: distortion against lam, on a grid up to the saturation point
    lam_top = 1.0 + eps
    grid = np.linspace(0.0, lam_top, 32)
    if np.isfinite(lam):
        grid = np.unique(np.append(grid, lam))
    # lam_hat decides the empirical risk: each tile's distortion there is evaluated directly
    if sorted_tiles is not None:  # the kept sorted tiles: no second look at the inputs
        per_tile, at_hat = sorted_tiles.on_grid(grid), sorted_tiles.at(lam)
    else:  # streamed (or SSIM): a pass over the blocks gives the curve and the point
        per_tile, at_hat = [], []
        for _, blk in tile_blocks(n, arrays):
            at_hat.append(masked_distortion_curve(blk["m"], blk["f"], blk["y"], [lam],
                                                  distance=distance, eps=eps,
                                                  data_range=width, valid=blk["valid"])[:, 0])
            if distance == "ssim":
                per_tile.append(masked_distortion_curve(blk["m"], blk["f"], blk["y"], grid,
                                                        distance=distance, eps=eps,
                                                        data_range=width, valid=blk["valid"]))
            else:
                per_tile.append(_distortion_on_grid(blk["m"], blk["f"], blk["y"],
                                                    blk["valid"], grid, distance=distance,
                                                    eps=eps))
        per_tile, at_hat = np.concatenate(per_tile), np.concatenate(at_hat)
    at = min(np.searchsorted(grid, lam), grid.size - 1)
    if np.isfinite(lam):
        per_tile[:, at] = at_hat
    if rule == "crc":
        risk_curve = per_tile.mean(axis=0)
        controlled = (n * risk_curve + bound) / (n + 1)
        empirical = float(at_hat.mean())
        loss_bound_out = bound
    else:
        risk_curve = (per_tile > alpha).mean(axis=0)
        controlled = (np.searchsorted(crit, grid, side="left") + 1) / (n + 1)
        empirical = float((at_hat > alpha).mean())
        loss_bound_out = 1.0
    return CalibrationResult(
        method="mask",
        lam=float(lam),
        alpha=alpha,
        beta=beta_out,
        n=n,
        rule=rule,
        valid=valid_rule,
        guarantee=guarantee,
        loss=f"distortion_{distance}" if rule == "crc" else f"distortion_{distance}_above_alpha",
        loss_bound=float(loss_bound_out),
        tile_shape=tuple(int(s) for s in mask_scores.shape[1:]),
        empirical_risk=empirical,
        curve={"lam": grid.tolist(), "risk": risk_curve.tolist(), "bound": controlled.tolist()},
        params={"eps": float(eps), "distance": distance,
                "data_range": None if width is None else float(width)},
    )


def _check_ssim_alpha(alpha):
    if isinstance(alpha, bool) or not np.isscalar(alpha) or not (0 < float(alpha) < 2):
        raise ValueError(f"alpha must be in (0, 2) for distance='ssim' (1 - SSIM lies in [0, 2]); "
                         f"got {alpha!r}")
    return float(alpha)


def _range_width(data_range):
    if data_range is None:
        return None
    if np.isscalar(data_range):
        width = float(data_range)
    else:
        try:
            lo, hi = (float(x) for x in data_range)
        except (TypeError, ValueError):
            raise ValueError(f"data_range must be a width or (low, high); got {data_range!r}") \
                from None
        width = hi - lo
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"data_range must have a positive finite width; got {data_range!r}")
    return width


def _crc_bound(loss_bound, width, distance):
    if loss_bound is not None:
        return check_positive(loss_bound, "loss_bound")
    if width is None:
        raise ValueError(
            "rule='crc' needs B, the largest possible distortion: pass data_range (B = width for "
            "l1, width**2 for l2) or loss_bound; it is never guessed"
        )
    return width if distance == "l1" else width**2
