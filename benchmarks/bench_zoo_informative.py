"""Is the zoo's TEM uncertainty informative on real held-out data? (issue 11)

For each TEM super-resolution head of the zoo (or of ``--zoo DIR``), on VNC stack1 slices
14-19 (never used for training), degraded the way the bundle was trained (its
``training_data.degradation``; bundles without one: 4x nearest), with fixed noise seeds:

- quality: PSNR (peak 1) and SSIM (Gaussian window, sigma 1.5) of the prediction, mean over
  the six 1024 x 1024 slices, next to cubic up-sampling aligned with the degradation (pixel
  centres for binning, corners for nearest);
- calibrated intervals: RCPS with the Hoeffding-Bentkus bound, alpha = delta = 0.1, on
  64 x 64 tiles (6 x 256 = 1536 tiles), ``--splits`` random halves: calibrate on one half
  (:func:`napari_im2im_uq.calibration.calibrate_intervals`), measure on the other the mean
  calibrated width and the risk (fraction of pixels outside); the same for intervals of
  constant width around the same prediction (lower/upper = prediction -/+ 1), calibrated the
  same way; ``narrower`` = 1 - learned width / constant width (mean over splits);
- Spearman correlation between the raw width (upper - lower) and the absolute error, over
  all held-out pixels (calibration scales the width, so the ranking is the calibrated one);
- size-stratified risk: on each test half, the pixels are split into quartiles of the width,
  and the risk (fraction outside the calibrated interval) is measured in each; the ratio of
  the largest to the smallest quartile risk (mean over splits);
- trust mask (:func:`napari_im2im_uq.calibration.calibrate_trust_mask`, 64 x 64 tiles,
  score = the width, whose order is the calibrated width's): fraction of test pixels trusted
  at alpha 0.2 with the pointwise error, and the trusted fraction against alpha, pointwise
  and blurred (Gaussian, 2 pixels), next to the oracle that trusts by the true error
  (score = the fidelity error itself), over ``--curve-splits`` splits;
- the lattice: the ratio max / min, over the 16 sub-pixel phases ``(y mod 4, x mod 4)``, of
  the mean width (:func:`phase_ratio`), next to the same ratio of the absolute error (the
  lattice the width should have), and the range over the phases of the fraction untrusted at
  alpha 0.2 (one split).

Usage::

    python benchmarks/bench_zoo_informative.py [--heads quantile residual gaussian softmax]
        [--zoo DIR] [--splits 100] [--curve-splits 5] [--threads 2] [--json OUT]
        [--plot OUT.png] [--reference TODAY.json] [--write-cards] [--spread-sigma S]
        [--lattice-only]

``--reference`` overlays the curves of another run of this script (e.g. on the zoo as it was)
on the ``--plot`` figure; ``--write-cards`` writes each head's figures into its bundle's card
(``card.informative`` in model.json, and README.md); ``--spread-sigma S`` runs the bundles'
weights with ``SRNet2d(spread_sigma=S)`` (not with ``--write-cards``); ``--lattice-only``
measures the lattice alone (with ``--write-cards``: into ``card.informative.lattice``). Needs
../shared/data (em_drosophila_vnc).
About 4-8 minutes per head on 2 shared CPU cores with the defaults below.

Measured (2 shared CPU cores, ``--splits 100 --curve-splits 5 --threads 1``; binned input,
photons 200, read noise 2 counts; each figure: model / bicubic or constant width). The zoo as
shipped (2026-12-02): quantile, residual and Gaussian heads with ``spread_sigma`` 1.5 (their
spread smoothed after the pixel shuffle; the point unchanged), softmax without:

=========  ============  ==========  ==============  ========  ===========  ===========
head       PSNR (dB)     SSIM        narrower than   Spearman  quartile     trusted at
                                     constant                  risk ratio   alpha 0.2
=========  ============  ==========  ==============  ========  ===========  ===========
quantile   19.37/18.98   .462/.444   3.3%            0.222     1.35         5.4%
residual   19.35/18.98   .460/.444   2.6%            0.204     1.18         6.2%
gaussian   19.24/18.98   .452/.444   3.0%            0.208     1.49         4.1%
softmax    19.35/18.98   .460/.444   2.7%            0.230     1.10         2.2%
=========  ============  ==========  ==============  ========  ===========  ===========

The same weights without the smoothing (2026-12-01): quantile 3.1% narrower, Spearman 0.234,
ratio 1.10, trusted 4.6%; residual 2.6%, 0.214, 1.06, 5.4%; Gaussian 3.1%, 0.220, 1.22, 3.6%.

The 4-pixel lattice (phase ratio of the mean width / of the absolute error over the 16
sub-pixel phases; 1 = none), the weights without smoothing and with ``spread_sigma`` 1.5:

=========  ==================  ==================  ==================  ==================
head       VNC 14-19 (held     validation slice    demo sample (3 x    demo sample, with
           out)                13                  384 x 384)          spread_sigma 1.5
=========  ==================  ==================  ==================  ==================
quantile   1.158 / 1.174       1.161 / 1.203       1.134 / 1.034       1.008 / 1.034
residual   1.156 / 1.174       1.157 / 1.203       1.144 / 1.031       1.009 / 1.031
gaussian   1.181 / 1.182       1.183 / 1.211       1.172 / 1.037       1.010 / 1.037
softmax    1.154 / 1.176       1.158 / 1.207       1.131 / 1.035       1.009 / 1.036
=========  ==================  ==================  ==================  ==================

(shipped, VNC 14-19: quantile 1.011 / 1.174, residual 1.010 / 1.174, Gaussian 1.011 / 1.182.)
On real binned TEM the error itself is lower at the centre of each 4 x 4 bin than at its
corners (cubic up-sampling's error has the same pattern), and the raw widths follow it: the
16 phase means of width and error correlate at 0.999 on slice 13 (quantile). So the lattice
is not an artefact of the pixel shuffle, and a rule "smallest ``spread_sigma`` that brings the
width's ratio down to the error's on the validation slice" would give 0. It is smoothed all
the same: the width is read as the local error level, a 1.16-fold pattern on a 4-pixel
period is drawn as a grid a microscopist takes for an artefact, and the trust mask amplifies
it (the demo's mask, alpha 0.25, leaves 5.5% to 44% of the pixels untrusted depending on the
phase without smoothing; 27.7% to 30.6% with it). The price, above: Spearman -0.01, the
quartile risk ratio up (the risk grows with the width, within the target's factor 2); the
calibrated width and the trusted fraction are no worse. Validation loss on slice 13 at 1.5:
quantile +0.00018 (the last five validations of training spread 0.00027), residual +0.00003
(0.00011), Gaussian NLL +0.0048 (0.006); softmax +0.011 (0.006: worse than noise; its point,
read from the smoothed bins, moves too: RMSE +0.7%, PSNR -0.07 dB), so the softmax head
ships without smoothing.

The oracle (trusting by the true error) trusts 93% at alpha 0.2. The nearest-sampled
quantile model it replaced, on its own nearest input (``--splits 50 --curve-splits 3``):
PSNR 18.69/18.09, SSIM .459/.466, 6.6% narrower, Spearman 0.317, ratio 1.36, trusted 7.2%
(its exactly observed pixels, one in 16, were the trusted ones). What limits the figures: the
truth's own band-limited version (nothing above the binned grid's Nyquist frequency) scores
20.3 dB on slices 14-19, so +1 dB over cubic needs nearly all of the in-band content back
through the binning and the noise; the pixel error is mostly unpredictable texture: even the
true error smoothed over 2 (4) pixels, used as a width, reaches Spearman 0.45 (0.30) with the
pixel error, and the quantile width reaches 0.52 with that smoothed error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HEADS = ("quantile", "residual", "gaussian", "softmax")
HELD_OUT = tuple(range(14, 20))
TILE = 64
ALPHA = DELTA = 0.1
MASK_ALPHA = 0.2
CURVE_ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
BLUR = 2.0


def _tiles(a: np.ndarray) -> np.ndarray:
    """(slices, H, W) -> (slices * H/T * W/T, T, T)."""
    n, h, w = a.shape
    t = a.reshape(n, h // TILE, TILE, w // TILE, TILE).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(t.reshape(-1, TILE, TILE))


def predict_held_out(model, hr: np.ndarray) -> dict[str, np.ndarray]:
    """Degrade each held-out slice as the bundle was trained, predict, and keep the baseline."""
    from napari_im2im_uq.training._card import _psnr, _ssim
    from napari_im2im_uq.training._recipes_tem import (
        bicubic_upsample,
        degradation_of,
        degrade,
    )

    deg = degradation_of(model.spec)
    grid = "centres" if deg["mode"] == "area" else "corners"
    keys = ("prediction", "lower", "upper")
    out = {k: [] for k in keys}
    quality = {"model_psnr_db": [], "model_ssim": [], "bicubic_psnr_db": [], "bicubic_ssim": []}
    for s, y in zip(HELD_OUT, hr, strict=True):
        x = degrade(y, deg, [s])
        o = model(x, batch_size=1)
        cubic = np.clip(bicubic_upsample(x, 4, y.shape, grid=grid), 0, 1)
        for k in keys:
            out[k].append(np.asarray(o[k], np.float32))
        quality["model_psnr_db"].append(_psnr(o["prediction"], y, 1.0))
        quality["model_ssim"].append(_ssim(o["prediction"], y, 1.0))
        quality["bicubic_psnr_db"].append(_psnr(cubic, y, 1.0))
        quality["bicubic_ssim"].append(_ssim(cubic, y, 1.0))
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["truth"] = hr.astype(np.float32)
    figures = {k: float(np.mean(v)) for k, v in quality.items()}
    figures["psnr_gain_db"] = figures["model_psnr_db"] - figures["bicubic_psnr_db"]
    figures["ssim_gain"] = figures["model_ssim"] - figures["bicubic_ssim"]
    return {"arrays": arrays, "quality": figures, "degradation": deg}


def _interval_split(t: dict[str, np.ndarray], cal: np.ndarray, test: np.ndarray) -> dict:
    from napari_im2im_uq.calibration import calibrate_intervals

    f, lo, up, y = t["prediction"], t["lower"], t["upper"], t["truth"]
    res = calibrate_intervals(f[cal], lo[cal], up[cal], y[cal], alpha=ALPHA, delta=DELTA)
    lam = float(res.lam)
    ft, lt, ut, yt = f[test], lo[test], up[test], y[test]
    low, high = ft - lam * (ft - lt), ft + lam * (ut - ft)
    width = high - low
    out = (yt < low) | (yt > high)
    const = calibrate_intervals(f[cal], f[cal] - 1, f[cal] + 1, y[cal], alpha=ALPHA,
                                delta=DELTA)
    c = float(const.lam)
    raw = (ut - lt).ravel()
    edges = np.quantile(raw, [0.25, 0.5, 0.75])
    quart = np.searchsorted(edges, raw, side="right")
    flat = out.ravel()
    risks = [float(flat[quart == q].mean()) if np.any(quart == q) else float("nan")
             for q in range(4)]
    return {
        "lam": lam,
        "width": float(width.mean()),
        "risk": float(out.mean()),
        "constant_width": 2 * c,
        "constant_risk": float((np.abs(yt - ft) > c).mean()),
        "quartile_risk": risks,
    }


def _trusted(score, pred, truth, cal, test, alpha, fidelity):
    from napari_im2im_uq.calibration import calibrate_trust_mask

    kwargs = {"blur_sigma": BLUR} if fidelity == "blurred" else {}
    res = calibrate_trust_mask(score[cal], pred[cal], truth[cal], alpha=alpha,
                               fidelity=fidelity, data_range=(0.0, 1.0), **kwargs)
    return float(np.mean(res.trust_mask(score[test])))


def _blurred_error(pred, truth):
    from scipy.ndimage import gaussian_filter

    return np.abs(gaussian_filter(truth.astype(np.float64), (0, BLUR, BLUR))
                  - gaussian_filter(pred.astype(np.float64), (0, BLUR, BLUR))).astype(np.float32)


def phase_means(a: np.ndarray, factor: int = 4) -> np.ndarray:
    """Mean of ``a`` at each sub-pixel phase ``(y mod factor, x mod factor)``: a (factor, factor) array.

    The last two axes are the high-resolution grid (rows and columns beyond a multiple of
    ``factor`` are dropped); every leading axis (slices, tiles) is averaged over.

    Examples
    --------
    >>> a = np.tile([[1.0, 2.0], [2.0, 4.0]], (3, 3))
    >>> phase_means(a, 2).tolist()
    [[1.0, 2.0], [2.0, 4.0]]
    """
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape[-2] - a.shape[-2] % factor, a.shape[-1] - a.shape[-1] % factor
    r = a[..., :h, :w].reshape(a.shape[:-2] + (h // factor, factor, w // factor, factor))
    return r.mean(axis=tuple(range(r.ndim - 4)) + (-4, -2))


def phase_ratio(a: np.ndarray, factor: int = 4) -> float:
    """The lattice of a map: max / min over the ``factor**2`` sub-pixel phases of its mean.

    1 means no lattice. For a width map, compare with the same ratio of the absolute error
    (the lattice the width *should* have: on binned TEM the error is lower at the centre of each
    bin than at its corners).

    Examples
    --------
    >>> round(phase_ratio(np.tile([[1.0, 2.0], [2.0, 4.0]], (3, 3)), 2), 3)
    4.0
    """
    m = phase_means(a, factor)
    return float(m.max() / m.min()) if m.min() > 0 else float("inf")


def _lattice(width, err, t, seed):
    """Phase ratios of the width, the error, and the untrusted fraction at alpha 0.2."""
    n = len(t["prediction"])
    perm = np.random.default_rng([seed, 1000]).permutation(n)
    cal, test = perm[: n // 2], perm[n // 2:]
    from napari_im2im_uq.calibration import calibrate_trust_mask

    tw = _tiles(width)
    res = calibrate_trust_mask(tw[cal], t["prediction"][cal], t["truth"][cal], alpha=MASK_ALPHA,
                               data_range=(0.0, 1.0))
    untrusted = phase_means(~np.asarray(res.trust_mask(tw[test])))
    return {
        "width_phase_ratio": phase_ratio(width),
        "abs_error_phase_ratio": phase_ratio(err),
        "untrusted_at_alpha_0.2_phase_min_max": [float(untrusted.min()), float(untrusted.max())],
    }


def with_spread_sigma(model, sigma: float):
    """The same SRNet2d weights with ``spread_sigma`` set (0: none) and the halo it needs.

    Examples
    --------
    >>> from napari_im2im_uq.models import load_model
    >>> with_spread_sigma(load_model("tem-sr4x-quantile"), 1.5).halo
    21
    """
    from napari_im2im_uq.models import Im2ImModel
    from napari_im2im_uq.models._srnet import with_spread_sigma as smoothed

    spec = dict(model.spec)
    net = smoothed(model.network, sigma)
    spec.update(kwargs=dict(net.config), halo=net.halo)
    spec.pop("sha256", None)
    return Im2ImModel(net.eval(), spec)


def _crop_to_tiles(a: np.ndarray) -> np.ndarray:
    """Crop the last two axes of (n, H, W) to multiples of the tile side."""
    h, w = (a.shape[-2] // TILE) * TILE, (a.shape[-1] // TILE) * TILE
    return a[..., :h, :w]


def interval_figures(arrays: dict[str, np.ndarray], *, splits: int, seed: int = 0) -> dict:
    """Calibrated width vs constant width, risk and size-stratified risk over random halves.

    ``arrays`` holds ``prediction``, ``lower``, ``upper`` and ``truth`` of shape
    (n, rows, columns) (cropped to whole 64 x 64 tiles); each split calibrates RCPS-HB at
    alpha = delta = 0.1 on a random half of the tiles and measures on the other half.
    """
    from scipy.stats import spearmanr

    a = {k: _crop_to_tiles(np.asarray(v, np.float32)) for k, v in arrays.items()}
    width = a["upper"] - a["lower"]
    err = np.abs(a["prediction"] - a["truth"])
    rng = np.random.default_rng(seed)
    pick = rng.choice(err.size, size=min(err.size, 2_000_000), replace=False)
    rho = float(spearmanr(width.ravel()[pick], err.ravel()[pick]).statistic)
    t = {k: _tiles(v) for k, v in a.items()}
    n = len(t["prediction"])
    rows = []
    for i in range(splits):
        perm = np.random.default_rng([seed, i]).permutation(n)
        rows.append(_interval_split(t, perm[: n // 2], perm[n // 2:]))
    wid = np.array([r["width"] for r in rows])
    cw = np.array([r["constant_width"] for r in rows])
    qr = np.array([r["quartile_risk"] for r in rows])
    ratio = np.nanmax(qr, axis=1) / np.maximum(np.nanmin(qr, axis=1), 1e-12)
    return {
        "tiles": n,
        "spearman_width_abs_error": rho,
        "lam_mean": float(np.mean([r["lam"] for r in rows])),
        "calibrated_width": float(wid.mean()),
        "constant_width": float(cw.mean()),
        "narrower_than_constant": float(1 - wid.mean() / cw.mean()),
        "narrower_than_constant_std_over_splits": float(np.std(1 - wid / cw)),
        "test_risk": float(np.mean([r["risk"] for r in rows])),
        "constant_test_risk": float(np.mean([r["constant_risk"] for r in rows])),
        "risk_above_alpha_fraction": float(np.mean([r["risk"] > ALPHA for r in rows])),
        "quartile_risk": [float(v) for v in qr.mean(axis=0)],
        "quartile_risk_ratio": float(ratio.mean()),
        "quartile_risk_ratio_max": float(ratio.max()),
    }


def measure_head(model, hr: np.ndarray, *, splits: int, curve_splits: int, seed: int = 0):
    """All figures of one model on the held-out slices (see the module docstring)."""

    got = predict_held_out(model, hr)
    a = got["arrays"]
    width = a["upper"] - a["lower"]
    err = np.abs(a["prediction"] - a["truth"])
    intervals = interval_figures(a, splits=splits, seed=seed)
    rho = intervals.pop("spearman_width_abs_error")
    intervals.pop("tiles")
    t = {k: _tiles(v) for k, v in a.items()}
    n = len(t["prediction"])
    tw = _tiles(width)
    blurred = _blurred_error(a["prediction"], a["truth"])
    tb = _tiles(blurred)
    curves = {"alphas": list(CURVE_ALPHAS)}
    for fidelity, oracle_score in (("pointwise", _tiles(err)),
                                   ("blurred", tb)):
        mine, oracle = [], []
        for alpha in CURVE_ALPHAS:
            m_vals, o_vals = [], []
            for i in range(curve_splits):
                perm = np.random.default_rng([seed, 1000 + i]).permutation(n)
                cal, test = perm[: n // 2], perm[n // 2:]
                m_vals.append(_trusted(tw, t["prediction"], t["truth"], cal, test, alpha,
                                       fidelity))
                o_vals.append(_trusted(oracle_score, t["prediction"], t["truth"], cal, test,
                                       alpha, fidelity))
            mine.append(float(np.mean(m_vals)))
            oracle.append(float(np.mean(o_vals)))
        curves[fidelity] = {"width": mine, "oracle": oracle}
    k = CURVE_ALPHAS.index(MASK_ALPHA)
    return {
        "quality": got["quality"],
        "degradation": got["degradation"],
        "lattice": _lattice(width, err, t, seed),
        "spearman_width_abs_error": rho,
        "intervals": intervals,
        "trust_mask": {
            "trusted_at_alpha_0.2_pointwise": curves["pointwise"]["width"][k],
            "oracle_at_alpha_0.2_pointwise": curves["pointwise"]["oracle"][k],
            "curves": curves,
        },
    }


def _plot(results: dict, reference: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, fidelity in zip(axes, ("pointwise", "blurred"), strict=True):
        for label, res, style in (("new", results, "-"), ("today", reference or {}, ":")):
            for head, r in res.get("heads", {}).items():
                c = r["trust_mask"]["curves"]
                ax.plot(c["alphas"], c[fidelity]["width"], style, marker="o", ms=3,
                        label=f"{head} ({label})")
                if head == "quantile":
                    ax.plot(c["alphas"], c[fidelity]["oracle"], style, color="k",
                            label=f"oracle ({label})")
        ax.set_title(f"trust mask, {fidelity} error" + (" (Gaussian 2 px)"
                                                        if fidelity == "blurred" else ""))
        ax.set_xlabel("alpha")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of test pixels trusted")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_informative(folder: Path, sha256: str, informative: dict) -> None:
    """Set ``card.informative`` of the bundle in ``folder`` (re-read fresh) and its README.

    Refuses when the bundle's weights are not the ``sha256`` the figures were measured on.
    """
    from napari_im2im_uq.training._card import model_card_markdown

    text = (folder / "model.json").read_text(encoding="utf-8")
    spec = json.loads(text)
    if spec["sha256"] != sha256:
        raise ValueError(f"the figures were measured on weights {sha256}; {folder} holds "
                         f"{spec['sha256']}")
    spec["card"]["informative"] = informative
    end = "\n" if text.endswith("\n") else ""  # the file's own ending kept
    (folder / "model.json").write_text(json.dumps(spec, indent=2) + end, encoding="utf-8")
    (folder / "README.md").write_text(model_card_markdown(spec), encoding="utf-8")


def lattice_of(model, hr: np.ndarray, *, seed: int = 0) -> dict:
    """The lattice figures of :func:`measure_head` alone, rounded as a card holds them."""
    a = predict_held_out(model, hr)["arrays"]
    t = {k: _tiles(v) for k, v in a.items()}
    got = _lattice(a["upper"] - a["lower"], np.abs(a["prediction"] - a["truth"]), t, seed)
    return _rounded(got)


def _rounded(lattice: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else [round(u, 4) for u in v])
            for k, v in lattice.items()}


def _write_lattice(args, name: str, sha256: str, lattice: dict, argv) -> None:
    from napari_im2im_uq.models._bundle import ZOO_DIR

    folder = (args.zoo or ZOO_DIR) / name
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    informative = dict(spec["card"].get("informative") or {})
    if not informative:
        raise ValueError(f"{folder} has no card.informative yet: run without --lattice-only")
    command = "python benchmarks/bench_zoo_informative.py " + " ".join(argv or sys.argv[1:])
    informative["lattice"] = {**lattice, "command": command}
    write_informative(folder, sha256, informative)


def write_cards(results: dict, zoo: Path, command: str) -> None:
    """Write each head's figures into its bundle's card (``card.informative``) and README."""
    for head, r in results["heads"].items():
        iv, tm = r["intervals"], r["trust_mask"]
        informative = {
            "command": command,
            "held_out": results["held_out"] + f", {TILE} x {TILE} tiles, alpha = delta = "
            f"{ALPHA}, RCPS Hoeffding-Bentkus, {results['splits']} random halves",
            "quality": {k: round(v, 4) for k, v in r["quality"].items()},
            "calibrated_width": round(iv["calibrated_width"], 4),
            "constant_width": round(iv["constant_width"], 4),
            "narrower_than_constant": round(iv["narrower_than_constant"], 4),
            "spearman_width_abs_error": round(r["spearman_width_abs_error"], 4),
            "quartile_risk": [round(v, 4) for v in iv["quartile_risk"]],
            "quartile_risk_ratio": round(iv["quartile_risk_ratio"], 3),
            "trusted_at_alpha_0.2_pointwise": round(tm["trusted_at_alpha_0.2_pointwise"], 4),
            "oracle_trusted_at_alpha_0.2_pointwise":
                round(tm["oracle_at_alpha_0.2_pointwise"], 4),
            "lattice": _rounded(r["lattice"]),
        }
        write_informative(zoo / f"tem-sr4x-{head}", r["sha256"], informative)


def main(argv=None) -> int:
    """Run the benchmark; print a summary, optionally write JSON and a plot."""
    import torch

    from napari_im2im_uq.data import load_em_drosophila
    from napari_im2im_uq.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--zoo", type=Path, default=None,
                        help="folder holding tem-sr4x-<head> bundles (default: the zoo)")
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--curve-splits", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--spread-sigma", type=float, default=None,
                        help="run each bundle's weights with this SRNet2d spread_sigma (output "
                        "pixels; not with --write-cards)")
    parser.add_argument("--write-cards", action="store_true",
                        help="write the figures into each bundle's card and README")
    parser.add_argument("--lattice-only", action="store_true",
                        help="measure the lattice alone (a minute a head); with --write-cards, "
                        "set card.informative.lattice and keep the card's other figures")
    args = parser.parse_args(argv)
    if args.spread_sigma is not None and args.write_cards:
        parser.error("--spread-sigma measures weights under kwargs their bundles do not hold: "
                     "it cannot --write-cards")
    torch.set_num_threads(args.threads)
    hr = load_em_drosophila(stack=1, slices=list(HELD_OUT))["raw"]
    results = {"held_out": "em_drosophila_vnc stack1 slices 14-19", "tile": TILE,
               "alpha": ALPHA, "delta": DELTA, "splits": args.splits,
               "curve_splits": args.curve_splits, "heads": {}}
    for head in args.heads:
        name = f"tem-sr4x-{head}"
        model = load_model(args.zoo / name if args.zoo else name)
        sha256 = model.sha256  # of the weights: the same with or without --spread-sigma
        if args.spread_sigma is not None:
            model = with_spread_sigma(model, args.spread_sigma)
        t0 = time.perf_counter()
        if args.lattice_only:
            lattice = lattice_of(model, hr)
            print(f"{name}: lattice {lattice}", flush=True)
            if args.write_cards:
                _write_lattice(args, name, sha256, lattice, argv)
            continue
        r = measure_head(model, hr, splits=args.splits, curve_splits=args.curve_splits)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        r["sha256"] = sha256
        r["spread_sigma"] = model.network.config.get("spread_sigma", 0.0)
        results["heads"][head] = r
        q, iv, tm = r["quality"], r["intervals"], r["trust_mask"]
        print(f"{name}: PSNR {q['model_psnr_db']:.2f} dB (bicubic {q['bicubic_psnr_db']:.2f}, "
              f"{q['psnr_gain_db']:+.2f}), SSIM {q['model_ssim']:.3f} (bicubic "
              f"{q['bicubic_ssim']:.3f}); width {iv['calibrated_width']:.3f} vs constant "
              f"{iv['constant_width']:.3f} ({100 * iv['narrower_than_constant']:.1f}% "
              f"narrower); Spearman {r['spearman_width_abs_error']:.3f}; quartile risk "
              f"{[round(v, 3) for v in iv['quartile_risk']]} (ratio "
              f"{iv['quartile_risk_ratio']:.2f}); trusted at alpha 0.2 "
              f"{100 * tm['trusted_at_alpha_0.2_pointwise']:.1f}% (oracle "
              f"{100 * tm['oracle_at_alpha_0.2_pointwise']:.1f}%); lattice: width "
              f"{r['lattice']['width_phase_ratio']:.3f}, error "
              f"{r['lattice']['abs_error_phase_ratio']:.3f} [{r['seconds']} s]",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if args.write_cards:
        from napari_im2im_uq.models._bundle import ZOO_DIR

        write_cards(results, args.zoo or ZOO_DIR,
                    "python benchmarks/bench_zoo_informative.py " + " ".join(argv or sys.argv[1:]))
    if args.plot:
        reference = (json.loads(args.reference.read_text(encoding="utf-8"))
                     if args.reference else None)
        _plot(results, reference, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
