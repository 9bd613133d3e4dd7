"""Registry entry: per-pixel intervals (Angelopoulos et al. 2022)."""

from __future__ import annotations

import numpy as np

from ..._validation import is_dask
from .. import drift
from .._schema import Param
from ..intervals import calibrate_intervals
from ..metrics import (
    interval_miscoverage,
    interval_size,
    size_stratified_risk,
    spatial_miscoverage,
    spearman_size_error,
)
from ._base import Method, Product
from ._report import SPEARMAN_PIXELS, floats, fmt


class _Intervals(Method):
    """Calibrated intervals ``[f - lam (f - lower), f + lam (upper - f)]`` for every pixel."""

    name = "intervals"
    title = "intervals (per-pixel, RCPS / CRC)"
    needs = ("prediction", "lower", "upper")
    producers = "a quantile, residual, gaussian or softmax model"
    rules = ("rcps", "crc")
    options = frozenset({"delta", "bound", "show_bounds", "seed"})
    truth = "image"
    x_label = "lam"
    tile_keys = ("prediction", "lower", "upper", "truth")
    plots = ("size_stratified_risk", "spatial_miscoverage")
    losses = ("miscoverage",)
    lam_range = (0.0, 1e12)  # a factor on the heuristic widths
    params_schema = {"seed": Param("integer", required=False, lo=0)}

    def inputs(self, arrays, *, sigma=None):
        return {k: arrays[k] for k in ("prediction", "lower", "upper")}

    def calibrate(self, tiles, *, alpha, delta=0.1, rule=None, bound="hoeffding_bentkus",
                  beta=0.9, distance="l1", data_range=None, seed=0):
        rule = self.check_rule(rule)
        return calibrate_intervals(tiles["prediction"], tiles["lower"], tiles["upper"],
                                   tiles["truth"], alpha=alpha, delta=delta, rule=rule,
                                   bound=bound, seed=seed)

    def drift_features(self, tiles):
        out = super().drift_features(tiles)
        width = np.asarray(tiles["upper"], np.float64) - np.asarray(tiles["lower"], np.float64)
        out.update(drift.score_features(width, "interval width"))
        return out

    def products(self, result, arrays, *, sigma=None, show_bounds=False):
        lo, up = result.intervals(arrays["prediction"], arrays["lower"], arrays["upper"])
        width = (up - lo).astype(np.float32)
        limits = None  # lazy outputs: the layer style samples a few chunks
        if not is_dask(width):
            limits = (0.0, float(np.nanpercentile(width[..., ::4, ::4], 99)) or 1.0)
        out = [Product("interval width", width, "width", limits=limits)]
        if show_bounds:
            out += [Product("calibrated lower", lo.astype(np.float32), "bound"),
                    Product("calibrated upper", up.astype(np.float32), "bound")]
        return out

    def held_out_losses(self, result, tiles):
        lo, hi = result.intervals(tiles["prediction"], tiles["lower"], tiles["upper"])
        return interval_miscoverage(lo, hi, tiles["truth"], valid=tiles.get("valid"))

    def recalibrate(self, result, tiles):
        return calibrate_intervals(
            tiles["prediction"], tiles["lower"], tiles["upper"], tiles["truth"],
            alpha=result.alpha, rule=result.rule, valid=tiles.get("valid"),
            **self.risk_control_options(result),
            curve=False,  # diagnostics read lam only
        )

    def held_out_words(self, result):
        return "fraction of pixels outside their interval"

    def metrics(self, result, tiles, losses):
        a = tiles
        valid = a.get("valid")
        lo, hi = result.intervals(a["prediction"], a["lower"], a["upper"])
        size = interval_size(lo, hi, valid=valid)
        raw = interval_size(a["lower"], a["upper"], valid=valid)
        strata = size_stratified_risk(lo, hi, a["truth"], n_strata=4, valid=valid)
        rho = spearman_size_error(lo, hi, a["truth"], a["prediction"], valid=valid,
                                  max_pixels=SPEARMAN_PIXELS)
        return {
            "interval_size": floats(size),
            "mean_interval_size": float(size.mean()),
            "mean_heuristic_interval_size": float(raw.mean()),
            "size_stratified_risk": {k: (floats(v) if k != "count" else [int(c) for c in v])
                                     for k, v in strata.items()},
            "spearman_size_error": float(rho),
            "spatial_miscoverage": spatial_miscoverage(lo, hi, a["truth"], valid=valid),
        }

    def summary(self, result, metrics):
        m = metrics
        r = m["size_stratified_risk"]["risk"]
        return [
            ("interval size", f"{fmt(m['mean_interval_size'])} mean width (heuristic: "
                              f"{fmt(m['mean_heuristic_interval_size'])})"),
            ("size-stratified risk", "smallest to largest quartile: "
                                     + ", ".join(fmt(v) for v in r)),
            ("size/error correlation", f"Spearman {fmt(m['spearman_size_error'])}"),
            ("spatial miscoverage", f"{fmt(np.nanmin(m['spatial_miscoverage']))} to "
                                    f"{fmt(np.nanmax(m['spatial_miscoverage']))} per position"),
        ]


ENTRY = _Intervals()
