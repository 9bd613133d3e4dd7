"""Pieces shared by the calibrate_* functions: curves, guarantee sentences, tile shapes."""

from __future__ import annotations

import numpy as np

from . import bounds as _bounds
from ._fraction import FractionLoss


def tile_phrase(tile_shape) -> str:
    """'256 x 256' for a tile shape."""
    return " x ".join(str(int(s)) for s in tile_shape)


def fraction_curve(loss: FractionLoss, lam_hat: float, *, rule: str, alpha: float, delta,
                   bound, order, loss_bound: float = 1.0, points: int = 64) -> dict:
    """Empirical risk and the controlled quantity on a uniform lam grid around lam_hat."""
    cmax = loss._stats()[2]
    top = cmax if not np.isfinite(lam_hat) or lam_hat <= 0 else min(cmax, 3.0 * lam_hat)
    if top <= 0:
        top = 1.0
    # binned_tile_losses needs a uniform grid; lam_hat is evaluated separately when off-grid
    uniform = np.linspace(0.0, top, points)
    per_tile = loss.binned_tile_losses(uniform, exact=False)  # (n, points), for the plot
    lams = list(uniform)
    if np.isfinite(lam_hat) and not np.any(uniform == lam_hat):
        extra = loss.tile_losses([lam_hat])
        per_tile = np.concatenate([per_tile, extra], axis=1)
        lams.append(lam_hat)
    order_idx = np.argsort(lams)
    lams = np.asarray(lams)[order_idx]
    per_tile = per_tile[:, order_idx]
    risk = per_tile.mean(axis=0)
    n = loss.n
    if rule == "crc":
        controlled = (n * risk + loss_bound) / (n + 1)
    else:
        controlled = _bounds.upper_confidence_bound(per_tile.T, delta=delta, bound=bound,
                                                    order=order)
        controlled = np.atleast_1d(controlled)
    return {"lam": lams.tolist(), "risk": risk.tolist(), "bound": np.asarray(controlled).tolist()}
