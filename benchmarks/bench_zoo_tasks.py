"""Are the zoo's QPI and segmentation models good, and their uncertainty informative? (issue 11)

Each model runs through the plugin's tiled inference as a user would (:func:`napari_im2im_uq.
api.predict` on the whole image, its lazy outputs computed by dask), then is measured on data
it never saw.

QPI (``qpi-dpc-quantile``): the whole 2000 x 2000 field of qpi_dpc_cells (r1, r2; the bundle
derives the Tikhonov channel itself), measured on columns 1000-1999 (all rows):

- quality: PSNR (peak = the bundle's ``output_range`` span, 5 rad, as the card) and SSIM
  (Gaussian window, sigma 1.5) against the two-image Tikhonov phase with its gain and offset
  fitted on the training columns 0-999;
- calibrated intervals: RCPS with the Hoeffding-Bentkus bound, alpha = delta = 0.1, on the
  64 x 64 tiles of rows 0-1983, columns 1000-1959 (31 x 15 = 465 tiles), ``--splits`` random
  halves (the helpers of ``bench_zoo_informative.py``): mean calibrated width on the test
  half against intervals of constant width around the same prediction, calibrated the same
  way; ``narrower`` = 1 - learned / constant (ratio of the means over splits); the test risk;
  the size-stratified risk (test pixels in quartiles of the width; ratio of the largest to
  the smallest quartile risk, mean over splits);
- Spearman correlation between the raw width (upper - lower) and the absolute error over
  all held-out pixels.

Segmentation (``tem-membrane-seg``): VNC stack1 slices 14-19 (1024 x 1024, never used for
training):

- quality: membrane F1 and pixel accuracy of the argmax, pooled over all pixels, against the
  card's baseline (its threshold of the Gaussian-smoothed raw image);
- LAC prediction sets (Mossina et al.) at alpha 0.05 calibrated by the plugin's segmentation
  method (``calibration.methods.get("segmentation")``, loss "miscoverage") with the rule the
  Calibrate dock starts with (conformal risk control, "crc") and with RCPS
  (Hoeffding-Bentkus, delta 0.1), on 64 x 64 tiles (6 x 256 = 1536), ``--splits`` random
  halves: the activation ratio (mean set size, Eq. 17) on the test half (mean over splits,
  its spread over splits and over tiles), the test coverage and risk (mean tile miscoverage).

Usage::

    python benchmarks/bench_zoo_tasks.py [--tasks qpi seg] [--zoo DIR] [--splits 100]
        [--threads 1] [--cache DIR] [--json OUT] [--write-cards]

``--cache DIR`` keeps each model's held-out outputs in ``DIR/<model>-<sha256[:12]>.npz`` so a
rerun of the statistics skips inference; ``--write-cards`` writes each model's figures into
its bundle's card (``card.informative`` in model.json, and README.md). Needs ../shared/data
(qpi_dpc_cells, em_drosophila_vnc).

Measured (2026-12-02, 2 CPU cores shared with four other jobs, load 8-12, ``--splits 100
--threads 1 --cache /tmp/b6/h4cache``; inference 1-2 minutes a model, the statistics about
1 minute (QPI) and 2.5 minutes (segmentation, two rules)):

- the zoo before issue 11's retraining (qpi-dpc-quantile sha256 1e928fffde0e..., U-Net depth
  3, 2000 steps; tem-membrane-seg baa4568f20f2..., 350 steps):

  - QPI: PSNR 26.94 dB vs Tikhonov 26.73 (+0.21; target +2), SSIM 0.535 vs 0.556 (target:
    above); calibrated width 0.711 rad vs constant 0.949: 25.1% narrower (sd 3.5% over
    splits; target 40%), test risk 0.061; Spearman(width, |error|) 0.398; quartile risks
    0.006 / 0.017 / 0.055 / 0.167 (ratio 33: the widest quartile's pixels fall outside 28
    times as often as the narrowest's: the error grows faster than the width);
  - segmentation: F1 0.792 vs 0.701 (+0.092; target +0.05), pixel accuracy 0.921 vs 0.869;
    LAC sets at alpha 0.05, CRC (the Calibrate dock's default rule): activation ratio 1.069
    (sd 0.003 over splits, range 1.060-1.075; 95th percentile over tiles 1.17), coverage
    0.951, risk 0.049; RCPS-HB (delta 0.1): ratio 1.112 (sd 0.003), coverage 0.965, risk
    0.035. Target ratio < 1.1: met with CRC, not with RCPS.

- the retrained zoo (commits 142c395, 6485f53: qpi-dpc-quantile b0d8bc9cf6fb..., U-Net depth 4,
  1800 steps, validation on columns 800-999; tem-membrane-seg 52d3ed96e391..., 1500 steps,
  validation on slice 13); these figures are in the cards (``--write-cards``):

  - QPI: PSNR 26.74 dB vs Tikhonov 26.73 (+0.01; target +2), SSIM 0.557 vs 0.556 (above, by
    0.001); calibrated width 0.880 rad vs constant 0.964: 8.8% narrower (sd 5.2% over splits;
    target 40%; the previous model's 25.1% is lost), test risk 0.061; Spearman 0.223 (was
    0.398); quartile risks 0.055 / 0.062 / 0.026 / 0.102 (ratio 4.0, was 33);
  - segmentation: F1 0.874 vs 0.701 (+0.173), pixel accuracy 0.953 vs 0.869; LAC sets at alpha
    0.05, CRC: activation ratio 1.0001 (sd 0.0003, range 1.000-1.002, tile p95 1.0002),
    coverage 0.953, risk 0.047: the top-1 class alone already covers 95.3% of the pixels, so
    the calibrated lam is 0.045 and nearly every set is a singleton; RCPS-HB (delta 0.1):
    ratio 1.027 (sd 0.002, tile p95 1.065), coverage 0.965, risk 0.035. Target < 1.1: met
    with both rules.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from bench_zoo_informative import (  # noqa: E402
    ALPHA,
    DELTA,
    TILE,
    _tiles,
    interval_figures,
    write_informative,
)

QPI = "qpi-dpc-quantile"
SEG = "tem-membrane-seg"
QPI_COLS = (1000, 2000)
SEG_SLICES = tuple(range(14, 20))
SEG_ALPHA = 0.05
SEG_RULES = ("crc", "rcps")


def set_figures(scores: np.ndarray, labels: np.ndarray, *, splits: int, alpha: float = SEG_ALPHA,
                rule: str = "crc", seed: int = 0) -> dict:
    """Activation ratio, coverage and risk of calibrated LAC sets over random halves.

    ``scores`` (n, K, rows, columns) probabilities and ``labels`` (n, rows, columns) class
    indices, one tile per leading index. Each split calibrates the plugin's segmentation
    method (loss "miscoverage"; ``rule`` "crc" as the Calibrate dock starts, or "rcps" with
    Hoeffding-Bentkus, delta 0.1) on a random half and measures on the other half.
    """
    from napari_im2im_uq.calibration import methods
    from napari_im2im_uq.calibration.metrics import activation_ratio

    entry = methods.get("segmentation")
    n = len(scores)
    lams, ratios, tile_ratios, coverages, risks = [], [], [], [], []
    for i in range(splits):
        perm = np.random.default_rng([seed, 2000 + i]).permutation(n)
        cal, test = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        res = entry.calibrate({"scores": scores[cal], "labels": labels[cal]}, alpha=alpha,
                              rule=rule, delta=DELTA)
        test_tiles = {"scores": scores[test], "labels": labels[test]}
        sets = np.asarray(res.prediction_sets(test_tiles["scores"]))
        per_tile = activation_ratio(sets)
        covered = np.take_along_axis(sets, test_tiles["labels"][:, None].astype(np.int64),
                                     axis=1)[:, 0]
        lams.append(float(res.lam))
        ratios.append(float(per_tile.mean()))
        tile_ratios.append(per_tile)
        coverages.append(float(covered.mean()))
        risks.append(float(np.mean(entry.held_out_losses(res, test_tiles))))
    ratios_a, tiles_a = np.array(ratios), np.concatenate(tile_ratios)
    return {
        "rule": rule,
        "alpha": alpha,
        "delta": DELTA if rule == "rcps" else None,
        "lam_mean": float(np.mean(lams)),
        "activation_ratio": float(ratios_a.mean()),
        "activation_ratio_std_over_splits": float(ratios_a.std()),
        "activation_ratio_range_over_splits": [float(ratios_a.min()), float(ratios_a.max())],
        "activation_ratio_tile_p95": float(np.quantile(tiles_a, 0.95)),
        "test_coverage": float(np.mean(coverages)),
        "test_risk": float(np.mean(risks)),
        "risk_above_alpha_fraction": float(np.mean(np.array(risks) > alpha)),
    }


def _predict(model, image, *, axes: str) -> dict[str, np.ndarray]:
    """The model's outputs over ``image`` through the plugin's tiled inference, by output.

    The lazy outputs (what napari shows of a large image) computed together by dask: with the
    retrained qpi-dpc-quantile (halo 107: 3 x 3 blocks on the 2000 x 2000 field, two waves
    of the executor) ``output="memory"`` raises a TypeError in ``inference._executor``; the
    previous bundle (2 x 2 blocks) and the lazy path do not.
    """
    import dask

    from napari_im2im_uq import api

    layers = api.predict(model, image, axes=axes, output="lazy")
    arrays = dask.compute(*(d for d, _, _ in layers))
    return {kw["metadata"]["im2im_uq"]["output"]: np.asarray(a)
            for a, (_, kw, _) in zip(arrays, layers, strict=True)}


def _cached(cache: Path | None, model, compute) -> dict[str, np.ndarray]:
    path = None if cache is None else cache / f"{model.spec['name']}-{model.sha256[:12]}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = compute()
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def measure_qpi(model, *, splits: int, cache: Path | None = None) -> dict:
    """All QPI figures of one model (see the module docstring)."""
    from napari_im2im_uq.data import load_qpi_dpc
    from napari_im2im_uq.training._card import _baseline_figures, _regression_figures
    from napari_im2im_uq.training._recipes_qpi import _qpi_baseline_fit, _qpi_two_image_tikhonov

    qpi = load_qpi_dpc()
    c0, c1 = QPI_COLS

    def compute():
        out = _predict(model, np.stack([qpi["r1"], qpi["r2"]]), axes="CYX")
        return {k: out[k][:, c0:c1] for k in ("prediction", "lower", "upper")}

    held = _cached(cache, model, compute)
    truth = qpi["phase"][:, c0:c1]
    fit = _qpi_baseline_fit(qpi)
    base = (_qpi_two_image_tikhonov(qpi) * fit["baseline_gain"] + fit["baseline_offset"])
    lo, hi = model.spec["output_range"]
    peak = float(hi - lo)
    m = _regression_figures(held, truth, peak)
    b = _baseline_figures(base[:, c0:c1], truth, peak)
    quality = {"model_psnr_db": m["psnr_db"], "baseline_psnr_db": b["psnr_db"],
               "model_ssim": m["ssim"], "baseline_ssim": b["ssim"],
               "model_rmse": m["rmse"], "baseline_rmse": b["rmse"]}
    quality["psnr_gain_db"] = quality["model_psnr_db"] - quality["baseline_psnr_db"]
    quality["ssim_gain"] = quality["model_ssim"] - quality["baseline_ssim"]
    arrays = {k: v[None] for k, v in held.items()}
    arrays["truth"] = truth[None]
    return {
        "held_out": "qpi_dpc_cells columns 1000-1999, all rows (tiles: rows 0-1983, columns "
        "1000-1959)",
        "baseline": "two-image Tikhonov phase, gain "
        f"{fit['baseline_gain']} and offset {fit['baseline_offset']} fitted on columns 0-999",
        "peak": peak,
        "quality": quality,
        "intervals": interval_figures(arrays, splits=splits),
    }


def measure_seg(model, *, splits: int, cache: Path | None = None) -> dict:
    """All segmentation figures of one model (see the module docstring)."""
    from napari_im2im_uq.data import load_em_drosophila
    from napari_im2im_uq.training._recipes_tem import _f1_accuracy, _smooth

    em = load_em_drosophila(stack=1, slices=list(SEG_SLICES), what=("raw", "membranes"))
    raw, truth = em["raw"], em["membranes"].astype(bool)

    def compute():
        prob = _predict(model, raw, axes="ZYX")["probabilities"]  # (K, Z, Y, X)
        return {"probabilities": np.moveaxis(prob, 0, 1).astype(np.float32)}

    prob = _cached(cache, model, compute)["probabilities"]  # (Z, K, Y, X)
    threshold = float(model.spec["card"]["baseline_parameters"]["threshold"])
    base = np.stack([_smooth(r) < threshold for r in raw])
    m = _f1_accuracy(prob.argmax(axis=1) == 1, truth)
    b = _f1_accuracy(base, truth)
    quality = {"model_f1_membrane": m["f1_membrane"], "baseline_f1_membrane": b["f1_membrane"],
               "model_pixel_accuracy": m["pixel_accuracy"],
               "baseline_pixel_accuracy": b["pixel_accuracy"]}
    quality["f1_gain"] = quality["model_f1_membrane"] - quality["baseline_f1_membrane"]
    z, k, h, w = prob.shape
    scores = prob.reshape(z, k, h // TILE, TILE, w // TILE, TILE).transpose(0, 2, 4, 1, 3, 5)
    scores = np.ascontiguousarray(scores.reshape(-1, k, TILE, TILE))
    labels = _tiles(truth.astype(np.int64))
    return {
        "held_out": "em_drosophila_vnc stack1 slices 14-19, 1024 x 1024",
        "baseline": f"threshold {threshold} of the Gaussian-smoothed raw image (the card's)",
        "quality": quality,
        "sets": {rule: set_figures(scores, labels, splits=splits, rule=rule)
                 for rule in SEG_RULES},
        "tiles": int(len(labels)),
    }


def _round(d, digits=4):
    if isinstance(d, dict):
        return {k: _round(v, digits) for k, v in d.items()}
    if isinstance(d, list):
        return [_round(v, digits) for v in d]
    return round(d, digits) if isinstance(d, float) else d


def card_informative(task: str, r: dict, *, splits: int, command: str) -> dict:
    """The ``card.informative`` entry of one model's figures."""
    if task == "qpi":
        iv = r["intervals"]
        return _round({
            "command": command,
            "held_out": r["held_out"] + f", {TILE} x {TILE} tiles, alpha = delta = {ALPHA}, "
            f"RCPS Hoeffding-Bentkus, {splits} random halves",
            "baseline": r["baseline"],
            "quality": r["quality"],
            "calibrated_width": iv["calibrated_width"],
            "constant_width": iv["constant_width"],
            "narrower_than_constant": iv["narrower_than_constant"],
            "test_risk": iv["test_risk"],
            "spearman_width_abs_error": iv["spearman_width_abs_error"],
            "quartile_risk": iv["quartile_risk"],
            "quartile_risk_ratio": iv["quartile_risk_ratio"],
        })
    return _round({
        "command": command,
        "held_out": r["held_out"] + f", {TILE} x {TILE} tiles, {splits} random halves",
        "baseline": r["baseline"],
        "quality": r["quality"],
        "prediction_sets": {
            rule: {k: v for k, v in s.items() if k != "rule"} for rule, s in r["sets"].items()
        },
        "set_calibration": "the plugin's segmentation method (LAC sets, loss miscoverage); "
        "crc: the Calibrate dock's default rule; rcps: Hoeffding-Bentkus",
    })


def _summary(task: str, name: str, r: dict) -> str:
    q = r["quality"]
    if task == "qpi":
        iv = r["intervals"]
        return (f"{name}: PSNR {q['model_psnr_db']:.2f} dB (Tikhonov {q['baseline_psnr_db']:.2f}, "
                f"{q['psnr_gain_db']:+.2f}), SSIM {q['model_ssim']:.3f} (Tikhonov "
                f"{q['baseline_ssim']:.3f}); width {iv['calibrated_width']:.4f} vs constant "
                f"{iv['constant_width']:.4f} ({100 * iv['narrower_than_constant']:.1f}% "
                f"narrower, sd {100 * iv['narrower_than_constant_std_over_splits']:.1f}); "
                f"risk {iv['test_risk']:.4f}; Spearman {iv['spearman_width_abs_error']:.3f}; "
                f"quartile risk {[round(v, 3) for v in iv['quartile_risk']]} (ratio "
                f"{iv['quartile_risk_ratio']:.2f})")
    sets = "; ".join(
        f"{rule}: activation ratio {s['activation_ratio']:.4f} (sd "
        f"{s['activation_ratio_std_over_splits']:.4f}, tile p95 "
        f"{s['activation_ratio_tile_p95']:.3f}), coverage {s['test_coverage']:.4f}, risk "
        f"{s['test_risk']:.4f}, lam {s['lam_mean']:.4f}"
        for rule, s in r["sets"].items())
    return (f"{name}: F1 {q['model_f1_membrane']:.4f} (baseline {q['baseline_f1_membrane']:.4f}, "
            f"{q['f1_gain']:+.4f}), accuracy {q['model_pixel_accuracy']:.4f} (baseline "
            f"{q['baseline_pixel_accuracy']:.4f}); LAC sets at alpha {SEG_ALPHA}: {sets}")


def main(argv=None) -> int:
    """Run the benchmark; print a summary, optionally write JSON and the cards."""
    import torch

    from napari_im2im_uq.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["qpi", "seg"], choices=("qpi", "seg"))
    parser.add_argument("--zoo", type=Path, default=None,
                        help=f"folder holding {QPI} and {SEG} (default: the zoo)")
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--write-cards", action="store_true",
                        help="write the figures into each bundle's card and README")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {"tile": TILE, "splits": args.splits, "models": {}}
    command = "python benchmarks/bench_zoo_tasks.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    for task in args.tasks:
        name = QPI if task == "qpi" else SEG
        model = load_model(args.zoo / name if args.zoo else name)
        t0 = time.perf_counter()
        measure = measure_qpi if task == "qpi" else measure_seg
        r = measure(model, splits=args.splits, cache=args.cache)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        r["sha256"] = model.sha256
        results["models"][name] = r
        print(_summary(task, name, r) + f" [{r['seconds']} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if args.write_cards:
        from napari_im2im_uq.models._bundle import ZOO_DIR

        zoo = args.zoo or ZOO_DIR
        for task in args.tasks:
            name = QPI if task == "qpi" else SEG
            r = results["models"][name]
            write_informative(zoo / name, r["sha256"],
                              card_informative(task, r, splits=args.splits, command=command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
