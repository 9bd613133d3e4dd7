"""Pieces shared by the calibrate_* functions: curves, guarantee sentences, tile shapes."""

from __future__ import annotations

import numpy as np

from napari_im2im_uq.calibration import bounds as _bounds

from ._fraction import FractionLoss


def tile_phrase(tile_shape) -> str:
    """'256 x 256' for a tile shape."""
    return " x ".join(str(int(s)) for s in tile_shape)


def fraction_curve(loss: FractionLoss, lam_hat: float, at_hat: np.ndarray, *, rule: str,
                   alpha: float, delta, bound, order, loss_bound: float = 1.0,
                   points: int = 64) -> dict:
    """Empirical risk and the controlled quantity on a uniform lam grid around lam_hat.

    ``at_hat`` holds the per-tile losses at lam_hat (already computed by the caller). Only WSR
    needs per-tile losses on the grid (one exact pass); the other rules depend on the mean alone,
    which the grid reads off the subsample the calibration already drew (a plot estimate, within
    about 1/sqrt(131072) of the pooled value; exact at lam_hat).
    """
    cmax = loss._stats()[2]
    top = cmax if not np.isfinite(lam_hat) or lam_hat <= 0 else min(cmax, 3.0 * lam_hat)
    if top <= 0:
        top = 1.0
    uniform = np.linspace(0.0, top, points)
    n = loss.n
    per_tile = rule == "rcps" and bound == "wsr"
    if per_tile:
        grid = loss.binned_tile_losses(uniform)
    else:
        w_inf, w_pos, _, (sub_v, sub_w) = loss._stats()
        scale = (w_pos - w_inf) / sub_w.sum() if sub_w.size else 0.0
        ascending = sub_v[::-1]
        above_w = np.concatenate([np.cumsum(sub_w)[::-1], [0.0]])  # sub weight >= each value
        idx = np.searchsorted(ascending, uniform, side="right")  # first value above the lam
        grid = w_inf + scale * above_w[idx]
        grid[uniform == 0] = w_pos
    lams = list(uniform)
    if np.isfinite(lam_hat) and not np.any(uniform == lam_hat):
        lams.append(lam_hat)
        extra = at_hat[:, None] if per_tile else np.array([at_hat.sum()])
        grid = np.concatenate([grid, extra], axis=-1)
    order_idx = np.argsort(lams)
    lams = np.asarray(lams)[order_idx]
    grid = grid[..., order_idx]
    risk = grid.mean(axis=0) if per_tile else grid / n
    if rule == "crc":
        controlled = (n * risk + loss_bound) / (n + 1)
    elif per_tile:
        controlled = np.atleast_1d(_bounds.upper_confidence_bound(grid.T, delta=delta,
                                                                  bound=bound, order=order))
    else:
        controlled = _bounds.upper_confidence_bound_from_mean(risk, n, delta=delta, bound=bound)
    return {"lam": lams.tolist(), "risk": risk.tolist(), "bound": np.asarray(controlled).tolist()}
