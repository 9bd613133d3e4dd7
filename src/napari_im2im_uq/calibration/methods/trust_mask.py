"""Registry entry: the binary trust mask of conformal masks (Adame et al. 2025)."""

from __future__ import annotations

import math

import numpy as np

from ..._validation import is_dask
from .. import drift
from .._schema import Param
from ..metrics import fidelity_error, mask_size, psnr
from ..trust_mask import calibrate_trust_mask, fidelity_error_map
from ._base import Method, Product
from ._report import floats, fmt, nanmedian

#: The per-pixel scores a trust mask can threshold, in the order "auto" tries them.
SCORES = ("std", "residual", "width", "mask", "std_smoothed")
#: How a score is written in a record (and read back).
SIGMA_LABEL = {"mask": "1 - mask"}


def sigma_name(outputs, sigma) -> str:
    """Resolve the trust-mask score: "given" (an array), or one of :data:`SCORES`.

    ``outputs`` is anything with the output names (``in`` is all that is asked of it).
    """
    if sigma is not None and not isinstance(sigma, str):
        return "given"
    choice = sigma or next(
        (k for k in SCORES if k in outputs or (k == "width" and {"lower", "upper"} <= set(outputs))),
        None)
    if choice == "width" and not {"lower", "upper"} <= set(outputs):
        raise ValueError("sigma='width' needs the outputs 'lower' and 'upper'")
    if choice == "width" or (choice in SCORES and choice in outputs):
        return choice
    raise ValueError(
        f"sigma must name an output of the model (one of {SCORES}) or be an "
        f"array; got {sigma!r} with outputs {sorted(outputs)}"
    )


def sigma_of(arrays: dict, sigma):
    """Return the whole-image trust-mask score (lazy when the outputs are dask arrays)."""
    name = sigma_name(arrays, sigma)
    if name == "given":
        return sigma
    if name == "width":
        return arrays["upper"] - arrays["lower"]
    if name == "mask":
        return 1.0 - arrays["mask"]
    return arrays[name]


def record_sigma(record):
    """Return the score a record was calibrated with, as ``sigma=`` takes it (None: default)."""
    label = record.get("sigma")
    name = {v: k for k, v in SIGMA_LABEL.items()}.get(label, label)
    return name if name in SCORES else None


class _TrustMask(Method):
    """Trust the pixels whose indecision score is at most the calibrated threshold t."""

    name = "trust_mask"
    title = "trust mask (Adame et al.)"
    needs = ("prediction",)
    producers = "any regression model"
    rules = ("crc",)
    options = frozenset({"sigma"})
    truth = "image"
    x_label = "threshold t"
    tile_keys = ("sigma", "prediction", "truth")
    plots = ("trusted_fraction", "psnr_inside_vs_whole")
    losses = ("fidelity_pointwise", "fidelity_blurred", "fidelity_given")
    lam_range = (-1e30, 1e30)  # a threshold on the score; inf trusts every pixel, -inf none
    lam_infinite = (float("inf"), float("-inf"))
    params_schema = {
        "fidelity": Param("choice", choices=("pointwise", "blurred", "given")),
        "blur_sigma": Param("number", required=False, nullable=True, lo=0.0, lo_open=True),
        "data_range": Param("range", required=False, nullable=True),
    }

    def alpha_limit(self, fields):
        return fields["loss_bound"], "the tolerated error, below loss_bound"

    def check_consistency(self, fields):
        p = fields["params"]
        out = []
        if fields["loss"] != f"fidelity_{p['fidelity']}":
            out.append(("loss", f"'fidelity_{p['fidelity']}' (params.fidelity is "
                                f"{p['fidelity']!r})", fields["loss"]))
        if p["fidelity"] == "blurred" and p.get("blur_sigma") is None:
            out.append(("params.blur_sigma", "a positive number for fidelity 'blurred'", None))
        return out

    def inputs(self, arrays, *, sigma=None):
        return {"sigma": sigma_of(arrays, sigma), "prediction": arrays["prediction"]}

    def calibrate(self, tiles, *, alpha, delta=0.1, rule=None, bound="hoeffding_bentkus",
                  beta=0.9, distance="l1", data_range=None, seed=0):
        self.check_rule(rule)
        if data_range is None:
            raise ValueError(
                "data_range must be given for a trust mask (the model declares no output range): "
                "B, the largest possible error, is derived from it"
            )
        return calibrate_trust_mask(tiles["sigma"], tiles["prediction"], tiles["truth"],
                                    alpha=alpha, data_range=data_range)

    def record_extra(self, arrays, *, sigma=None):
        name = sigma_name(arrays, sigma)
        return {"sigma": SIGMA_LABEL.get(name, name)}

    def apply_options(self, record):
        return {"sigma": record_sigma(record)}

    def drift_features(self, tiles):
        out = super().drift_features(tiles)
        out.update(drift.score_features(tiles["sigma"], "sigma"))
        return out

    def products(self, result, arrays, *, sigma=None, show_bounds=False):
        sig = sigma_of(arrays, sigma)
        ok = result.trust_mask(sig)  # dask stays dask
        untrusted = (~(ok if is_dask(ok) else np.asarray(ok, dtype=bool))).astype(np.uint8)
        return [Product("untrusted", untrusted, "untrusted")]

    def held_out_losses(self, result, tiles):
        params = result.params
        if params["fidelity"] == "given":
            err = np.asarray(tiles["fidelity_error"], dtype=np.float64)
        else:
            err = fidelity_error_map(tiles["prediction"], tiles["truth"],
                                     fidelity=params["fidelity"],
                                     blur_sigma=params.get("blur_sigma"))
        trusted = np.asarray(result.trust_mask(tiles["sigma"]))
        valid = tiles.get("valid")
        if valid is not None:
            trusted = trusted & np.asarray(valid)
            err = np.where(valid, err, 0.0)
        return fidelity_error(trusted, err)

    def recalibrate(self, result, tiles):
        p = result.params
        given = p["fidelity"] == "given"
        return calibrate_trust_mask(
            tiles["sigma"], None if given else tiles["prediction"],
            None if given else tiles["truth"], alpha=result.alpha, fidelity=p["fidelity"],
            blur_sigma=p.get("blur_sigma"),
            fidelity_error=tiles["fidelity_error"] if given else None,
            loss_bound=result.loss_bound, data_range=p.get("data_range"),
            valid=tiles.get("valid"),
        )

    def required_keys(self, result):
        if result.params.get("fidelity") == "given":
            return ("sigma", "fidelity_error")
        return self.tile_keys

    def optional_keys(self, result):
        if result.params.get("fidelity") == "given":
            return ("prediction", "truth", "valid")  # prediction and truth give the PSNR
        return ("valid",)

    def held_out_words(self, result):
        return "largest error among the trusted pixels"

    def metrics(self, result, tiles, losses):
        a = tiles
        valid = a.get("valid")
        trusted = np.asarray(result.trust_mask(a["sigma"]))
        if valid is not None:
            trusted = trusted & valid
        size = mask_size(trusted, valid=valid)
        out = {
            "mask_size": floats(size),
            "mean_mask_size": float(size.mean()),
            "empty_mask_fraction": float(np.mean(~trusted.reshape(trusted.shape[0], -1)
                                                 .any(axis=1))),
            "fidelity_error": floats(losses),
            "mean_fidelity_error": float(np.mean(losses)),
            "psnr_inside": None,
            "psnr_whole": None,
            "psnr_peak": None,
            "psnr_floor": None,
        }
        if "prediction" in a and "truth" in a:
            data_range = result.params.get("data_range")
            peak = float(data_range[1] - data_range[0]) if data_range else float(result.loss_bound)
            with np.errstate(divide="ignore", invalid="ignore"):
                inside = psnr(a["prediction"], a["truth"], data_range=peak, mask=trusted,
                              valid=valid)
                whole = psnr(a["prediction"], a["truth"], data_range=peak, valid=valid)
            out.update({
                "psnr_inside": floats(inside),
                "psnr_whole": floats(whole),
                "psnr_peak": peak,
                # a tile whose trusted pixels all err by at most alpha has at least this PSNR
                "psnr_floor": float(20.0 * math.log10(peak / result.alpha))
                if result.params.get("fidelity") == "pointwise" else None,
                "median_psnr_inside": nanmedian(inside),
                "median_psnr_whole": nanmedian(whole),
            })
        return out

    def summary(self, result, metrics):
        m = metrics
        out = [
            ("trusted fraction", f"{m['mean_mask_size']:.1%} of the pixels "
                                 f"({m['empty_mask_fraction']:.0%} of tiles trust nothing)"),
            ("fidelity error", f"{fmt(m['mean_fidelity_error'])} mean largest trusted error"),
        ]
        if m["psnr_inside"] is not None:
            out.append(("PSNR", f"{fmt(m['median_psnr_inside'])} dB inside the mask vs "
                                f"{fmt(m['median_psnr_whole'])} dB whole tile (medians)"))
        return out


ENTRY = _TrustMask()
