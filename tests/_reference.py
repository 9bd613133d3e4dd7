"""Slow, obviously correct references for the calibration tests (loops over every candidate)."""

from __future__ import annotations

import numpy as np

from napari_im2im_uq.calibration import bounds

CRC_SLACK = 1e-12


def neighbours(values, ulps=6):
    """Each value and its floating-point neighbours, +-ulps steps."""
    out = [np.asarray(values, dtype=np.float64)]
    up = down = out[0]
    for _ in range(ulps):
        up = np.nextafter(up, np.inf)
        down = np.nextafter(down, -np.inf)
        out += [up, down]
    vals = np.concatenate(out)
    vals = vals[np.isfinite(vals) & (vals >= 0)]
    return np.unique(np.append(vals, 0.0))


def certified(tile_losses, *, rule, alpha, delta=None, bound=None, order=None, loss_bound=1.0):
    """Is this vector of per-tile losses certified (one lam)?"""
    n = tile_losses.size
    if rule == "crc":
        return tile_losses.sum() + loss_bound <= alpha * (n + 1) + CRC_SLACK
    mean = tile_losses.mean()
    if bound == "hoeffding":
        return mean + np.sqrt(np.log(1 / delta) / (2 * n)) <= alpha
    if bound == "hoeffding_bentkus":
        return bounds.hoeffding_bentkus_pvalue(mean, n, alpha) <= delta
    return bounds.wsr_pvalue(tile_losses, alpha, delta, order=order) <= delta


def lam_hat_decreasing(candidates, loss_fn, **cert_kwargs):
    """inf{lam : every candidate lam' >= lam is certified}; None if the largest is not."""
    candidates = np.sort(np.asarray(candidates))
    answer = None
    for lam in candidates[::-1]:
        if not certified(loss_fn(lam), **cert_kwargs):
            break
        answer = lam
    return answer


def interval_tile_losses(pred, lower, upper, truth, lam, valid=None):
    """Fraction of valid pixels outside [f - lam (f - lower), f + lam (upper - f)], tile by tile."""
    f, lo, up, y = (np.asarray(a, dtype=np.float64) for a in (pred, lower, upper, truth))
    out = []
    for i in range(f.shape[0]):
        v = np.ones(f[i].shape, bool) if valid is None else valid[i]
        lo_i = f[i] - lam * (f[i] - lo[i])
        up_i = f[i] + lam * (up[i] - f[i])
        miss = ~((lo_i <= y[i]) & (y[i] <= up_i))
        out.append(miss[v].mean())
    return np.array(out)
