"""The plots of a diagnostics report, drawn on a ``matplotlib.figure.Figure`` (no Qt, no napari).

The numbers come from :mod:`napari_im2im_uq.calibration.diagnostics` (``diagnose_tiles``, a
generator, and ``diagnostics_report``).

:func:`plot_diagnostics` draws the risk histogram, then the plot *kinds*
the method's registry entry declares (``methods.get(method).plots``); the drawing functions
below are keyed by plot kind, never by method. matplotlib is imported only when drawing.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping

import numpy as np

from ._validation import check_int
from .calibration import methods
from .calibration.methods._report import fmt

__all__ = ["PLOTS", "plot_diagnostics"]


def _risk_histogram(ax, report):
    splits = report["splits"]
    risks = np.asarray(splits["risk"], dtype=np.float64)
    level = report["level"]
    held = report["held_out"]["mean"]
    lo = min(risks.min(), level, held)
    hi = max(risks.max(), level, held)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1e-3) * 0.1
    bins = int(np.clip(round(math.sqrt(risks.size)) * 2, 5, 30))
    ax.hist(risks, bins=bins, range=(lo - pad, hi + pad), color="tab:blue", alpha=0.75,
            label=f"{splits['n_splits']} re-calibrated splits")
    ax.axvline(level, color="tab:red", linestyle="--", linewidth=1.5,
               label=f"target {fmt(level)}")
    ax.axvline(held, color="black", linestyle=":", linewidth=2.5,
               label=f"this record, held out: {fmt(held)}")
    counts_tiles = splits.get("fraction_above") is not None  # a conformal rule: tiles above alpha
    ax.set_xlabel("fraction of test tiles above alpha" if counts_tiles
                  else "test risk (mean loss)")
    ax.set_ylabel("number of splits")
    ax.set_title(f"Re-calibrated on random halves of the held-out tiles: the spread of the\n"
                 f"guarantee, not a test of this record ({splits['violation_rate']:.0%} of "
                 f"{splits['n_splits']} splits above target)", fontsize="small")
    ax.legend(fontsize="small")


def _held_out_title(figure, report) -> str:
    """Set the figure title: the held-out risk of the record, red when above the target."""
    held = report["held_out"]
    se = held.get("standard_error", float("nan"))
    counts_tiles = report["splits"].get("fraction_above") is not None
    what = "held-out tiles above alpha" if counts_tiles else "held-out risk"
    if held["meets_target"]:
        verdict, color = "meets the target", "black"
    elif held.get("within_error", False):
        verdict, color = "ABOVE the target (within its Monte-Carlo error)", "tab:red"
    else:
        verdict, color = "ABOVE the target: the guarantee does not hold here", "tab:red"
    title = (f"This record, {what}: {fmt(held['mean'])} +/- {fmt(se)} "
             f"(target <= {fmt(report['level'])}): {verdict}")
    width = max(30, int(figure.get_figwidth() * 10))  # characters a line holds (narrow dock)
    figure.suptitle(textwrap.fill(title, width), color=color, fontsize="medium",
                    fontweight="bold")
    return title


def _size_stratified_risk(figure, ax, report):
    m = report["metrics"]
    strata = m["size_stratified_risk"]
    risk = np.asarray(strata["risk"], dtype=np.float64)
    names = ["smallest", "2nd", "3rd", "largest"] if risk.size == 4 else \
        [str(i + 1) for i in range(risk.size)]
    ax.bar(np.arange(risk.size), np.nan_to_num(risk), color="tab:orange",
           tick_label=names)
    ax.axhline(report["alpha"], color="tab:red", linestyle="--", label=f"alpha {report['alpha']:g}")
    ax.set_xlabel("interval size quartile")
    ax.set_ylabel("fraction of pixels not covered")
    ax.set_title("Size-stratified risk")
    ax.legend(fontsize="small")


def _spatial_miscoverage(figure, ax, report):
    m = report["metrics"]
    im = ax.imshow(m["spatial_miscoverage"], cmap="magma", vmin=0.0, interpolation="nearest")
    figure.colorbar(im, ax=ax, label="fraction of tiles not covered")
    ax.set_title("Spatial miscoverage within a tile")
    ax.set_xlabel("column")
    ax.set_ylabel("row")


def _trusted_fraction(figure, ax, report):
    m = report["metrics"]
    ax.hist(m["mask_size"], bins=20, range=(0.0, 1.0), color="tab:green", alpha=0.8)
    ax.set_xlabel("trusted fraction of the tile")
    ax.set_ylabel("number of tiles")
    ax.set_title(f"Mask size: {m['mean_mask_size']:.1%} trusted on average")


def _psnr_inside_vs_whole(figure, ax, report):
    m = report["metrics"]
    if m["psnr_inside"] is None:
        ax.text(0.5, 0.5, "PSNR needs prediction and truth", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    inside = np.asarray(m["psnr_inside"], dtype=np.float64)
    whole = np.asarray(m["psnr_whole"], dtype=np.float64)
    keep = np.isfinite(inside) & np.isfinite(whole)
    ax.scatter(whole[keep], inside[keep], s=12, color="tab:green", alpha=0.7, label="tiles")
    if keep.any():
        lo = float(min(whole[keep].min(), inside[keep].min()))
        hi = float(max(whole[keep].max(), inside[keep].max()))
        ax.plot([lo, hi], [lo, hi], color="gray", linewidth=1, label="equal")
    if m["psnr_floor"] is not None:
        ax.axhline(m["psnr_floor"], color="tab:red", linestyle="--",
                   label=f"error <= alpha: {m['psnr_floor']:.1f} dB")
    ax.set_xlabel("PSNR of the whole tile (dB)")
    ax.set_ylabel("PSNR inside the trust mask (dB)")
    dropped = int((~keep).sum())
    extra = f" ({dropped} tiles empty or perfect, not shown)" if dropped else ""
    ax.set_title("PSNR inside vs whole" + extra)
    ax.legend(fontsize="small")


def _mask_size(figure, ax, report):
    m = report["metrics"]
    ax.hist(m["mask_size"], bins=20, range=(0.0, 1.0), color="tab:purple", alpha=0.8,
            label="calibrated mask")
    if m["oracle_mask_size"] is not None:
        ax.hist(m["oracle_mask_size"], bins=20, range=(0.0, 1.0), histtype="step",
                color="black", label="oracle mask")
    ax.set_xlabel("mask size (mean of the mask over the tile)")
    ax.set_ylabel("number of tiles")
    ax.set_title(f"Mask size: {m['mean_mask_size']:.1%} kept on average")
    ax.legend(fontsize="small")


def _set_sizes(figure, ax, report):
    m = report["metrics"]
    sizes = m["set_size_counts"]
    count = np.asarray(sizes["count"], dtype=np.float64)
    ax.bar(sizes["size"], count / max(count.sum(), 1.0), color="tab:cyan",
           tick_label=[str(s) for s in sizes["size"]])
    ax.set_xlabel("classes in a pixel's prediction set")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(f"Set sizes: activation ratio {fmt(m['mean_activation_ratio'])}")


#: The drawing function of each plot kind a registry entry may declare in ``plots``:
#: ``draw(figure, ax, report)``.
PLOTS = {
    "size_stratified_risk": _size_stratified_risk,
    "spatial_miscoverage": _spatial_miscoverage,
    "trusted_fraction": _trusted_fraction,
    "psnr_inside_vs_whole": _psnr_inside_vs_whole,
    "mask_size": _mask_size,
    "set_sizes": _set_sizes,
}


def plot_diagnostics(report: dict, figure, *, ncols: int = 1) -> list:
    """Draw a diagnostics report on a matplotlib figure.

    The figure is cleared first and given matplotlib's constrained layout. Its title is the one
    figure that tests the record: the held-out risk with its Monte-Carlo standard error and
    whether it meets the target (in red when it does not). Plots: a histogram of the split
    test risks (each split re-calibrates on half the held-out tiles: the spread of the
    guarantee, not a test of this record, as its title says) with the target level (dashed)
    and the held-out risk (dotted); for
    intervals also the size-stratified risk (quartile bars) and the spatial miscoverage map
    (with a colorbar); for trust masks the trusted-fraction histogram and the per-tile PSNR
    inside the mask against the whole tile; for Kutiel's mask the mask-size histogram (and the
    oracle's); for segmentation the distribution of prediction-set sizes.

    Parameters
    ----------
    report : dict
        From :func:`diagnostics_report` or :func:`diagnose_tiles` (or ``api.diagnose``).
    figure : matplotlib.figure.Figure
        The figure to draw on (for example the one of a Qt canvas).
    ncols : int, default 1
        Columns of the grid of plots (1: stacked vertically, for a narrow dock widget).

    Returns
    -------
    list of matplotlib.axes.Axes
        The plot axes, the risk histogram first (colorbars are extra axes of the figure and are
        not listed): 3 for intervals, 3 for trust masks, 2 for masks and for segmentation.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from napari_im2im_uq.calibration import calibrate_intervals
    >>> from napari_im2im_uq.calibration.diagnostics import diagnostics_report
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(60, 4, 4)); f = np.zeros_like(y)
    >>> res = calibrate_intervals(f[:30], f[:30] - 1, f[:30] + 1, y[:30], alpha=0.2, rule="crc")
    >>> report = diagnostics_report(res, {"prediction": f[30:], "lower": f[30:] - 1,
    ...                                   "upper": f[30:] + 1, "truth": y[30:]}, n_splits=4)
    >>> len(plot_diagnostics(report, Figure()))
    3
    """
    import matplotlib  # noqa: F401  (the figure's own package; no pyplot)

    if not isinstance(report, Mapping) or "method" not in report or "splits" not in report:
        raise ValueError("report must be the dict returned by diagnose() or diagnose_tiles(); "
                         f"got {type(report)}")
    ncols = check_int(ncols, "ncols", minimum=1)
    if report["method"] not in methods.names():
        raise ValueError(f"report['method'] must be 'intervals', 'trust_mask', 'mask' or "
                         f"'segmentation'; got {report['method']!r}")
    kinds = methods.get(report["method"]).plots
    n_axes = 1 + len(kinds)
    figure.clear()
    figure.set_layout_engine("constrained")
    ncols = min(ncols, n_axes)
    nrows = math.ceil(n_axes / ncols)
    axes = [figure.add_subplot(nrows, ncols, i + 1) for i in range(n_axes)]
    _held_out_title(figure, report)
    _risk_histogram(axes[0], report)
    for kind, ax in zip(kinds, axes[1:]):
        PLOTS[kind](figure, ax, report)
    return axes
