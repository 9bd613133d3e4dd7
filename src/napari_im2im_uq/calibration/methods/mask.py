"""Registry entry: the continuous mask of Kutiel et al. 2023."""

from __future__ import annotations

import numpy as np

from ..._validation import is_dask
from .. import drift
from .._schema import Param
from ..mask import calibrate_mask
from ..metrics import mask_size, masked_distortion, oracle_mask_size
from ._base import Method, Product
from ._report import floats, fmt


class _Mask(Method):
    """Calibrated continuous mask ``min(1, lam / (eps + 1 - m))`` from a mask network."""

    name = "mask"
    title = "continuous mask (Kutiel et al.)"
    needs = ("mask", "prediction")
    producers = "the mask model (tem-sr4x-mask)"
    rules = ("conformal", "crc", "paper")
    options = frozenset({"beta", "distance"})
    truth = "image"
    x_label = "lam"
    tile_keys = ("mask_scores", "prediction", "truth")
    plots = ("mask_size",)
    losses = tuple(f"distortion_{d}{s}" for d in ("l1", "l2", "ssim") for s in ("", "_above_alpha"))
    lam_range = (0.0, 1e12)  # inf: every pixel kept
    lam_infinite = (float("inf"),)
    params_schema = {
        "eps": Param("number", lo=0.0, lo_open=True),
        "distance": Param("choice", choices=("l1", "l2", "ssim")),
        "data_range": Param("number", required=False, nullable=True, lo=0.0, lo_open=True),
    }

    def alpha_limit(self, fields):
        if fields["params"]["distance"] == "ssim":
            return 2.0, "1 - SSIM lies in [0, 2]"
        return 1.0, "a fraction of the data range"

    def check_consistency(self, fields):
        d = fields["params"]["distance"]
        want = f"distortion_{d}" + ("" if fields["rule"] == "crc" else "_above_alpha")
        if fields["loss"] != want:
            return [("loss", f"{want!r} (distance {d!r}, rule {fields['rule']!r})",
                     fields["loss"])]
        return []

    def inputs(self, arrays, *, sigma=None):
        return {"mask_scores": arrays["mask"], "prediction": arrays["prediction"]}

    def calibrate(self, tiles, *, alpha, delta=0.1, rule=None, bound="hoeffding_bentkus",
                  beta=0.9, distance="l1", data_range=None, seed=0):
        rule = self.check_rule(rule)
        return calibrate_mask(tiles["mask_scores"], tiles["prediction"], tiles["truth"],
                              alpha=alpha, beta=beta, distance=distance, rule=rule,
                              data_range=data_range)

    def drift_features(self, tiles):
        out = super().drift_features(tiles)
        out.update(drift.score_features(tiles["mask_scores"], "mask"))
        return out

    def products(self, result, arrays, *, sigma=None, show_bounds=False):
        m = result.mask(arrays["mask"])  # dask stays dask
        m = m.astype(np.float32) if is_dask(m) else np.asarray(m, dtype=np.float32)
        return [Product("calibrated mask", m, "mask", limits=(0.0, 1.0))]

    def level(self, result):
        if result.rule in ("conformal", "paper"):
            return 1.0 - float(result.beta)
        return float(result.alpha)

    def counts_tiles(self, result):
        return result.rule != "crc"

    def held_out_losses(self, result, tiles):
        m = result.mask(tiles["mask_scores"])
        d = masked_distortion(m, tiles["prediction"], tiles["truth"],
                              distance=result.params["distance"],
                              data_range=result.params.get("data_range"),
                              valid=tiles.get("valid"))
        return d if result.rule == "crc" else (d > result.alpha).astype(np.float64)

    def recalibrate(self, result, tiles):
        p = result.params
        crc = result.rule == "crc"
        return calibrate_mask(
            tiles["mask_scores"], tiles["prediction"], tiles["truth"], alpha=result.alpha,
            beta=result.beta if result.beta is not None else 0.9, distance=p["distance"],
            rule=result.rule, eps=p["eps"], data_range=p.get("data_range"),
            loss_bound=result.loss_bound if crc else None, valid=tiles.get("valid"),
        )

    def held_out_words(self, result):
        if result.rule != "crc":
            return "fraction of tiles whose masked distortion exceeds alpha"
        return "masked distortion"

    def metrics(self, result, tiles, losses):
        a = tiles
        valid = a.get("valid")
        p = result.params
        m = np.asarray(result.mask(a["mask_scores"]))
        size = mask_size(m, valid=valid)
        dist = masked_distortion(m, a["prediction"], a["truth"], distance=p["distance"],
                                 data_range=p.get("data_range"), valid=valid)
        out = {
            "mask_size": floats(size),
            "mean_mask_size": float(size.mean()),
            "masked_distortion": floats(dist),
            "mean_masked_distortion": float(dist.mean()),
            "fraction_above_alpha": float(np.mean(dist > result.alpha)),
            "oracle_mask_size": None,
            "mean_oracle_mask_size": None,
            "oracle_correlation": None,
        }
        if p["distance"] in ("l1", "l2"):
            oracle = oracle_mask_size(a["prediction"], a["truth"], alpha=result.alpha,
                                      distance=p["distance"], valid=valid)
            corr = float("nan")
            if np.ptp(size) > 0 and np.ptp(oracle) > 0:
                corr = float(np.corrcoef(size, oracle)[0, 1])
            out.update({"oracle_mask_size": floats(oracle), "mean_oracle_mask_size":
                        float(oracle.mean()), "oracle_correlation": corr})
        return out

    def summary(self, result, metrics):
        m = metrics
        out = [
            ("mask size", f"{m['mean_mask_size']:.1%} of the tile kept on average"),
            ("masked distortion", f"{fmt(m['mean_masked_distortion'])} mean; "
                                  f"{m['fraction_above_alpha']:.1%} of tiles above alpha = "
                                  f"{fmt(result.alpha)}"),
        ]
        if m["oracle_mask_size"] is not None:
            out.append(("oracle mask", f"{m['mean_oracle_mask_size']:.1%} kept; correlation "
                                       f"with the calibrated mask {fmt(m['oracle_correlation'])}"))
        return out


ENTRY = _Mask()
