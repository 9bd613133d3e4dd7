"""``napari-im2im-uq demo``: the sample TEM volume, a shipped model, calibration, in napari.

By default it opens napari with the synthetic TEM sample, runs ``tem-sr4x-quantile`` over the
low-resolution input, calibrates per-pixel intervals (RCPS) and a trust mask on the sample's
high-resolution truth, and shows prediction, interval width and the untrusted-pixel overlay
with the four dock widgets. ``--headless`` runs the same pipeline, saves a screenshot and the
calibration records, and exits (it still needs a display for the OpenGL canvas: run it under
``xvfb-run`` on a server). ``--report`` prints held-out risks of every method instead (no
napari, no model):

The data of ``--report`` are synthetic EM tissue, degraded 4x and up-sampled back by a cubic spline (the
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
    from ._validation import int_flag, level_flag  # bad values exit 2 naming the flag

    p = subparsers.add_parser(
        "demo",
        help="calibrate every method on generated TEM tiles and report held-out risk",
        description=__doc__,
    )
    p.add_argument("--alpha", type=level_flag(), default=0.1, help="risk level for intervals and sets")
    p.add_argument("--delta", type=level_flag(), default=0.1, help="RCPS error level")
    p.add_argument("--tile", type=int_flag(minimum=4, maximum=512, multiple_of=4), default=None,
                   help="calibration tile side in pixels (default 64 in napari, 32 with --report)")
    p.add_argument("--images", type=int_flag(maximum=100), default=2,
                   help="synthetic 512 x 512 images to cut")
    p.add_argument("--seed", type=int_flag(minimum=0), default=0,
                   help="seed of the generated data and split")
    p.add_argument("--json", metavar="PATH", help="--report: also write the records as JSON")
    p.add_argument("--report", action="store_true",
                   help="no napari: calibrate every method on generated tiles, print held-out risks")
    p.add_argument("--headless", action="store_true",
                   help="run the napari pipeline without waiting for the user, save a screenshot "
                        "and the records, and exit")
    p.add_argument("--screenshot", metavar="PNG", default="im2im-uq-demo.png",
                   help="--headless: where to save the screenshot (default %(default)s)")
    p.add_argument("--record", metavar="JSON", default="im2im-uq-demo-record.json",
                   help="--headless: where to save the calibration records (default %(default)s)")
    p.add_argument("--trust-alpha", type=level_flag(), default=0.25,
                   help="trust-mask level: the tolerated largest error among trusted pixels")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the napari demo (or the text report with ``--report``); returns the exit status."""
    if args.report:
        return run_report(args)
    return run_napari(args)


def build(viewer, *, alpha=0.1, delta=0.1, trust_alpha=0.25, tile=64, progress=print):
    """Fill a viewer: sample TEM, prediction, intervals and trust mask; return the calibrations."""
    from . import api
    from ._sample_data import sample_tem

    for data, kwargs, kind in sample_tem():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    progress("predicting with tem-sr4x-quantile ...")
    api.show(viewer, api.predict("tem-sr4x-quantile", viewer.layers["tem input (low-res)"]))
    outputs = api.model_outputs(viewer.layers, "prediction (tem-sr4x-quantile)")
    truth = viewer.layers["tem truth (high-res)"]
    cals = {}
    for method, level in (("intervals", alpha), ("trust_mask", trust_alpha)):
        progress(f"calibrating {method} on the sample's truth ...")
        cal = api.calibrate(outputs, truth, method=method, alpha=level, delta=delta,
                            tile_shape=(tile, tile))
        api.show(viewer, cal.layers)
        cals[method] = cal
        progress(f"  lam_hat = {cal.result.lam:.6g}: {cal.result.guarantee}")
    for layer in viewer.layers:
        layer.visible = layer.name in ("tem truth (high-res)", "prediction (tem-sr4x-quantile)",
                                       "interval width (tem-sr4x-quantile)",
                                       "untrusted (tem-sr4x-quantile)")
    viewer.layers["prediction (tem-sr4x-quantile)"].visible = False
    return cals


def run_napari(args) -> int:
    """Open napari with the demo pipeline (``--headless``: screenshot and records, then exit)."""
    import napari

    from ._widgets import CalibrateWidget, DiagnosticsWidget, ModelWidget, PredictWidget

    t0 = time.perf_counter()
    viewer = napari.Viewer(title="napari-im2im-uq demo", show=True)
    cals = build(viewer, alpha=args.alpha, delta=args.delta, trust_alpha=args.trust_alpha,
                 tile=args.tile or 64,
                 progress=lambda m: print(m, file=sys.stderr))
    widgets = {}
    for i, (cls, name) in enumerate(((ModelWidget, "Model"), (PredictWidget, "Predict"),
                                     (CalibrateWidget, "Calibrate"),
                                     (DiagnosticsWidget, "Diagnostics"))):
        widgets[name] = cls(viewer)
        viewer.window.add_dock_widget(widgets[name], name=name, tabify=i > 1)
    calw = widgets["Calibrate"]
    calw.reset_choices()
    calw.prediction.value = viewer.layers["prediction (tem-sr4x-quantile)"]
    calw.truth.value = viewer.layers["tem truth (high-res)"]
    calw.show_result(cals["intervals"])
    calw.native.parentWidget().raise_()
    viewer.window.resize(1700, 1000)
    viewer.reset_view()
    records = {m: c.record for m, c in cals.items()}
    if not args.headless:
        print(f"ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        napari.run()
        return 0
    viewer.screenshot(args.screenshot, canvas_only=False, flash=False)
    with open(args.record, "w") as fh:
        json.dump(records, fh, indent=1)
    viewer.close()
    print(f"screenshot: {args.screenshot}\nrecords: {args.record}\n"
          f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def run_report(args) -> int:
    """Calibrate every method on generated tiles and print held-out risks (no napari)."""
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
    tile = args.tile or 32
    data = tem_calibration_tiles(n_images=args.images, size=512, tile=tile, seed=args.seed)
    n = data["truth"].shape[0]
    perm = np.random.default_rng(args.seed).permutation(n)
    cal, test = perm[: n // 2], perm[n // 2 :]
    c = {k: v[cal] for k, v in data.items()}
    t = {k: v[test] for k, v in data.items()}
    print(f"Generated {n} TEM tiles of {tile} x {tile} (synthetic tissue, 4x nearest "
          f"down-sampling, cubic up-sampling as the predictor); {cal.size} calibrate, "
          f"{test.size} test.\n")
    runs = [
        ("intervals, RCPS (Hoeffding-Bentkus)",
         lambda: calibrate_intervals(c["prediction"], c["lower"], c["upper"], c["truth"],
                                     alpha=args.alpha, delta=args.delta),
         lambda r: held_out_losses(r, prediction=t["prediction"], lower=t["lower"],
                                   upper=t["upper"], truth=t["truth"]), None),
        ("intervals, CRC",
         lambda: calibrate_intervals(c["prediction"], c["lower"], c["upper"], c["truth"],
                                     alpha=args.alpha, rule="crc"),
         lambda r: held_out_losses(r, prediction=t["prediction"], lower=t["lower"],
                                   upper=t["upper"], truth=t["truth"]), None),
        ("trust mask, CRC (pointwise error)",
         lambda: calibrate_trust_mask(c["sigma"], c["prediction"], c["truth"], alpha=0.25,
                                      data_range=(0, 1)),
         lambda r: held_out_losses(r, sigma=t["sigma"], prediction=t["prediction"],
                                   truth=t["truth"]),
         lambda r: f"trusted fraction of the test pixels = {r.trust_mask(t['sigma']).mean():.3f}"),
        ("continuous mask, conformal (L1)",
         lambda: calibrate_mask(c["mask_scores"], c["prediction"], c["truth"], alpha=0.02,
                                beta=0.9),
         lambda r: held_out_losses(r, mask_scores=t["mask_scores"], prediction=t["prediction"],
                                   truth=t["truth"]), None),
        ("membrane sets, CRC (miscoverage)",
         lambda: calibrate_segmentation(c["probabilities"], c["labels"], alpha=args.alpha),
         lambda r: held_out_losses(r, scores=t["probabilities"], labels=t["labels"]), None),
    ]
    records = {}
    for title, calibrate, evaluate, extra in runs:
        res = calibrate()
        risk = float(np.mean(evaluate(res)))
        level = res.alpha if res.rule != "conformal" else 1 - res.beta
        what = ("fraction of test tiles above alpha" if res.rule == "conformal"
                else "mean test loss")
        print(f"== {title}")
        print(f"   lam_hat = {res.lam:.6g}   calibration risk = {res.empirical_risk:.4g}   "
              f"held-out {what} = {risk:.4g} (target <= {level:g})")
        if extra is not None:
            print(f"   {extra(res)}")
        print(f"   {res.guarantee}\n")
        records[title] = {"result": res.to_dict(), "held_out_risk": risk}
    print(f"done in {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
        print(f"calibration records written to {args.json}", file=sys.stderr)
    return 0
