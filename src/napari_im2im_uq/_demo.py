"""``napari-im2im-uq demo``: calibrate every method on generated TEM data and check it held out.

The data are synthetic EM tissue, degraded 4x and up-sampled back by a cubic spline (the
classical baseline of the super-resolution experiment), with a gradient-based heuristic width, a
mask score and a membrane classifier (:func:`napari_im2im_uq.data.tem_calibration_tiles`). Half
of the tiles calibrate, the other half measure the risk the guarantee speaks about.
"""

from __future__ import annotations

import json
import sys
import time


def register(subparsers) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="calibrate every method on generated TEM tiles and report held-out risk",
        description=__doc__,
    )
    p.add_argument("--alpha", type=float, default=0.1, help="risk level for intervals and sets")
    p.add_argument("--delta", type=float, default=0.1, help="RCPS error level")
    p.add_argument("--tile", type=int, default=32, help="calibration tile side (pixels)")
    p.add_argument("--images", type=int, default=2, help="synthetic 512 x 512 images to cut")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data and split")
    p.add_argument("--json", metavar="PATH", help="also write the calibration records as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the demo and print a report; returns the exit status."""
    import numpy as np

    from .calibration import (
        calibrate_intervals,
        calibrate_mask,
        calibrate_segmentation,
        calibrate_trust_mask,
    )
    from .calibration.evaluation import held_out_losses
    from .data import tem_calibration_tiles

    t0 = time.perf_counter()
    data = tem_calibration_tiles(n_images=args.images, size=512, tile=args.tile, seed=args.seed)
    n = data["truth"].shape[0]
    perm = np.random.default_rng(args.seed).permutation(n)
    cal, test = perm[: n // 2], perm[n // 2 :]
    c = {k: v[cal] for k, v in data.items()}
    t = {k: v[test] for k, v in data.items()}
    print(f"Generated {n} TEM tiles of {args.tile} x {args.tile} (synthetic tissue, 4x nearest "
          f"down-sampling, cubic up-sampling as the predictor); {cal.size} calibrate, "
          f"{test.size} test.\n")
    runs = [
        ("intervals, RCPS (Hoeffding-Bentkus)",
         lambda: calibrate_intervals(c["prediction"], c["lower"], c["upper"], c["truth"],
                                     alpha=args.alpha, delta=args.delta),
         lambda r: held_out_losses(r, prediction=t["prediction"], lower=t["lower"],
                                   upper=t["upper"], truth=t["truth"])),
        ("intervals, CRC",
         lambda: calibrate_intervals(c["prediction"], c["lower"], c["upper"], c["truth"],
                                     alpha=args.alpha, rule="crc"),
         lambda r: held_out_losses(r, prediction=t["prediction"], lower=t["lower"],
                                   upper=t["upper"], truth=t["truth"])),
        ("trust mask, CRC (pointwise error)",
         lambda: calibrate_trust_mask(c["sigma"], c["prediction"], c["truth"], alpha=0.25,
                                      data_range=(0, 1)),
         lambda r: held_out_losses(r, sigma=t["sigma"], prediction=t["prediction"],
                                   truth=t["truth"])),
        ("continuous mask, conformal (L1)",
         lambda: calibrate_mask(c["mask_scores"], c["prediction"], c["truth"], alpha=0.02,
                                beta=0.9),
         lambda r: held_out_losses(r, mask_scores=t["mask_scores"], prediction=t["prediction"],
                                   truth=t["truth"])),
        ("membrane sets, CRC (miscoverage)",
         lambda: calibrate_segmentation(c["probabilities"], c["labels"], alpha=args.alpha),
         lambda r: held_out_losses(r, scores=t["probabilities"], labels=t["labels"])),
    ]
    records = {}
    for title, calibrate, evaluate in runs:
        res = calibrate()
        risk = float(np.mean(evaluate(res)))
        level = res.alpha if res.rule != "conformal" else 1 - res.beta
        what = ("fraction of test tiles above alpha" if res.rule == "conformal"
                else "mean test loss")
        print(f"== {title}")
        print(f"   lam_hat = {res.lam:.6g}   calibration risk = {res.empirical_risk:.4g}   "
              f"held-out {what} = {risk:.4g} (target <= {level:g})")
        if res.method == "trust_mask":
            print(f"   trusted fraction of the test pixels = {res.trust_mask(t['sigma']).mean():.3f}")
        print(f"   {res.guarantee}\n")
        records[title] = {"result": res.to_dict(), "held_out_risk": risk}
    print(f"done in {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
        print(f"calibration records written to {args.json}", file=sys.stderr)
    return 0
