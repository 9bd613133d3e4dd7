"""napari-im2im-uq demo: the sample TEM volume, a shipped model and its calibration, in napari.

By default it opens napari with the synthetic TEM sample (its low-resolution input binned 4 x 4
with the noise of a short exposure, as a microscope with a coarser pixel records it), runs the
shipped model tem-sr4x-quantile (trained on that degradation) over the input, calibrates
per-pixel intervals (RCPS) and a trust mask on the sample's high-resolution truth, and shows the
prediction, the interval width and the untrusted pixels with the four dock widgets.

--headless runs the same pipeline, saves a screenshot and the calibration records, and exits.
napari still needs a display for its OpenGL canvas: on a server run it under a virtual display,
xvfb-run -a napari-im2im-uq demo --headless.

--report needs neither napari nor a model: it calibrates every method on generated TEM tiles
(synthetic tissue, down-sampled 4x by nearest neighbour and up-sampled back by a cubic spline,
the classical baseline, with a gradient-based heuristic width, a mask score and a membrane
classifier), measures the risk on held-out tiles, and repeats random calibration/test splits to
test each guarantee the way it is stated: on average over calibration draws, or with
probability 1 - delta over them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def register(subparsers) -> None:
    """Add the ``demo`` sub-command."""
    from ._validation import int_flag, level_flag  # bad values exit 2 naming the flag

    p = subparsers.add_parser(
        "demo",
        help="open napari with the sample TEM, a shipped model and its calibration "
             "(--report: a text report without napari)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument("--splits", type=int_flag(minimum=2, maximum=100_000), default=100,
                   help="--report: random calibration/test splits that test each guarantee "
                        "(default %(default)s)")
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
    problem = display_problem()
    if problem is not None:
        print(f"napari-im2im-uq demo: {problem}. Two ways out: run it under a virtual display, "
              f"xvfb-run -a napari-im2im-uq demo {'--headless ' if args.headless else ''}..., or "
              "print the text report without napari, napari-im2im-uq demo --report.",
              file=sys.stderr)
        return 2
    return run_napari(args)


def display_problem() -> str | None:
    """Return why napari cannot open a window here (no display, Qt cannot connect), or None.

    Checked before Qt starts, because Qt aborts the process (signal 6, a core dump) when it
    cannot connect to a display. On Linux: no ``DISPLAY``/``WAYLAND_DISPLAY`` (unless
    ``QT_QPA_PLATFORM`` names a platform without one, such as offscreen), then a throw-away
    process that creates the Qt application.
    """
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    windowless = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")
    if sys.platform.startswith("linux") and not platform.startswith(windowless):
        wants_x = platform.startswith("xcb")
        if not os.environ.get("DISPLAY") and (wants_x or not os.environ.get("WAYLAND_DISPLAY")):
            return "no display to open napari on (DISPLAY is not set)"
    import subprocess

    probe = ("from qtpy.QtWidgets import QApplication; import sys; "
             "app = QApplication(sys.argv[:1]); print(app.platformName())")
    def no_core_file():  # the probe may abort: that is the answer, not a crash to keep
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    try:
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=120, preexec_fn=no_core_file if os.name == "posix" else None)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"Qt could not start ({err})"
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        why = next((ln for ln in lines if "display" in ln.lower() or "platform" in ln.lower()),
                   lines[-1] if lines else f"exit status {proc.returncode}")
        return f"Qt cannot connect to a display ({why})"
    return None


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


DOCKS = ("Model", "Predict", "Calibrate", "Diagnostics")


def open_demo(viewer, *, alpha=0.1, delta=0.1, trust_alpha=0.25, tile=64, progress=print):
    """Fill a viewer with the demo and dock the four widgets, tabified with *Model* in front.

    Returns ``(calibrations, widgets)``: the calibrations by method and the widgets by name.
    """
    from ._widgets import CalibrateWidget, DiagnosticsWidget, ModelWidget, PredictWidget
    from ._widgets._common import bring_to_front

    cals = build(viewer, alpha=alpha, delta=delta, trust_alpha=trust_alpha, tile=tile,
                 progress=progress)
    widgets = {}
    for i, (cls, name) in enumerate(zip((ModelWidget, PredictWidget, CalibrateWidget,
                                         DiagnosticsWidget), DOCKS)):
        widgets[name] = cls(viewer)
        viewer.window.add_dock_widget(widgets[name], name=name, area="right", tabify=i > 0)
    calw = widgets["Calibrate"]
    calw.reset_choices()
    calw.prediction.value = viewer.layers["prediction (tem-sr4x-quantile)"]
    calw.truth.value = viewer.layers["tem truth (high-res)"]
    calw.show_result(cals["trust_mask"])  # the legend explains both layers on the canvas
    calw.show_result(cals["intervals"])
    bring_to_front(widgets["Model"])
    viewer.window.resize(1600, 1000)
    viewer.reset_view()
    return cals, widgets


def run_napari(args) -> int:
    """Open napari with the demo pipeline (``--headless``: screenshot and records, then exit)."""
    import napari

    t0 = time.perf_counter()
    viewer = napari.Viewer(title="napari-im2im-uq demo", show=True)
    cals, _ = open_demo(viewer, alpha=args.alpha, delta=args.delta,
                        trust_alpha=args.trust_alpha, tile=args.tile or 64,
                        progress=lambda m: print(m, file=sys.stderr))
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
    """Calibrate every method on generated tiles and print held-out risks (no napari).

    Each figure is followed by the kind of its guarantee and a test of that guarantee over
    ``args.splits`` random calibration/test splits: the mean held-out risk against the target
    within its Monte-Carlo error (guarantees on average over calibration draws), or the
    fraction of splits above the target against delta (guarantees with probability 1 - delta).
    """
    import numpy as np

    from .calibration import (
        calibrate_intervals,
        calibrate_mask,
        calibrate_segmentation,
        calibrate_trust_mask,
    )
    from .calibration.evaluation import held_out_losses, risk_over_splits
    from .data import tem_calibration_tiles

    t0 = time.perf_counter()
    tile = args.tile or 32
    data = tem_calibration_tiles(n_images=args.images, size=512, tile=tile, seed=args.seed)
    n = data["truth"].shape[0]
    perm = np.random.default_rng(args.seed).permutation(n)
    cal, test = perm[: n // 2], perm[n // 2 :]
    print(f"Generated {n} TEM tiles of {tile} x {tile} (synthetic tissue, 4x nearest "
          f"down-sampling, cubic up-sampling as the predictor); {cal.size} calibrate, "
          f"{test.size} test. Each guarantee is then tested over {args.splits} random "
          "calibration/test splits, the way it is stated.\n")

    def at(i, *keys):
        return [data[k][i] for k in keys]

    runs = [
        ("intervals, RCPS (Hoeffding-Bentkus)",
         lambda i: calibrate_intervals(*at(i, "prediction", "lower", "upper", "truth"),
                                       alpha=args.alpha, delta=args.delta),
         lambda r, i: held_out_losses(r, **dict(zip(
             ("prediction", "lower", "upper", "truth"),
             at(i, "prediction", "lower", "upper", "truth")))), None),
        ("intervals, CRC",
         lambda i: calibrate_intervals(*at(i, "prediction", "lower", "upper", "truth"),
                                       alpha=args.alpha, rule="crc"),
         lambda r, i: held_out_losses(r, **dict(zip(
             ("prediction", "lower", "upper", "truth"),
             at(i, "prediction", "lower", "upper", "truth")))), None),
        ("trust mask, CRC (pointwise error)",
         lambda i: calibrate_trust_mask(*at(i, "sigma", "prediction", "truth"), alpha=0.25,
                                        data_range=(0, 1)),
         lambda r, i: held_out_losses(r, **dict(zip(("sigma", "prediction", "truth"),
                                                    at(i, "sigma", "prediction", "truth")))),
         lambda r: f"trusted fraction of the test pixels = "
                   f"{r.trust_mask(data['sigma'][test]).mean():.3f}"),
        ("continuous mask, conformal (L1)",
         lambda i: calibrate_mask(*at(i, "mask_scores", "prediction", "truth"), alpha=0.02,
                                  beta=0.9),
         lambda r, i: held_out_losses(r, **dict(zip(("mask_scores", "prediction", "truth"),
                                                    at(i, "mask_scores", "prediction", "truth")))),
         None),
        ("membrane sets, CRC (miscoverage)",
         lambda i: calibrate_segmentation(*at(i, "probabilities", "labels"), alpha=args.alpha),
         lambda r, i: held_out_losses(r, scores=data["probabilities"][i],
                                      labels=data["labels"][i]), None),
    ]
    records = {}
    for title, calibrate, evaluate, extra in runs:
        res = calibrate(cal)
        risk = float(np.mean(evaluate(res, test)))
        splits = risk_over_splits(calibrate, evaluate, n, n_cal=cal.size, n_splits=args.splits,
                                  seed=args.seed + 1)
        kind, verdict = guarantee_test(res, splits["risk"])
        level = res.alpha if res.rule != "conformal" else 1 - res.beta
        what = ("fraction of test tiles above alpha" if res.rule == "conformal"
                else "mean test loss")
        print(f"== {title}")
        print(f"   lam_hat = {res.lam:.6g}   calibration risk = {res.empirical_risk:.4g}   "
              f"held-out {what} = {risk:.4g} (one split; target {level:g} {kind['short']})")
        if extra is not None:
            print(f"   {extra(res)}")
        print(f"   kind of guarantee: {kind['words']}")
        print(f"   test over {args.splits} splits: {verdict['message']}")
        print(f"   {res.guarantee}\n")
        records[title] = {"result": res.to_dict(), "held_out_risk": risk,
                          "guarantee_kind": kind["kind"], "splits": verdict}
    print(f"done in {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
        print(f"calibration records written to {args.json}", file=sys.stderr)
    return 0


#: How far above its target a Monte-Carlo estimate may be before it counts against a guarantee.
WITHIN_ERRORS = 2.0


def guarantee_test(result, risks) -> tuple[dict, dict]:
    """Test a guarantee the way it is stated, from held-out risks over random splits.

    A high-probability guarantee (RCPS: the risk of new tiles is at most alpha with
    probability at least 1 - delta over the calibration draw) is tested by the fraction of
    splits above alpha against delta; every other rule guarantees the risk on average over
    calibration draws, tested by the mean over splits against the target, within
    ``WITHIN_ERRORS`` Monte-Carlo standard errors. A single split above the target is not a
    failure of an average guarantee.

    Returns ``(kind, verdict)``: ``kind`` has ``kind`` ("high probability" or "expectation"),
    ``words`` and ``short``; ``verdict`` has the figure, its standard error, the allowed
    value, ``holds`` and ``message``.
    """
    import numpy as np

    risks = np.asarray(risks, dtype=np.float64)
    s = risks.size
    if result.rule == "rcps":
        delta = float(result.delta)
        kind = {"kind": "high probability",
                "short": f"with probability >= {1 - delta:.0%}",
                "words": (f"high probability: with probability at least {1 - delta:.0%} over the "
                          f"calibration draw, the risk of new tiles is at most {result.alpha:g}; "
                          f"up to {delta:.0%} of calibration draws may miss it")}
        rate = float((risks > result.alpha).mean())
        se = float(np.sqrt(delta * (1 - delta) / s))
        figure = (f"{rate:.0%} of splits above {result.alpha:g} (allowed: delta = {delta:.0%}, "
                  f"Monte-Carlo standard error {se:.1%})")
        value, allowed = rate, delta
    else:
        tiles = result.rule == "conformal"  # the loss of a tile is 1 when it is above alpha
        level = 1 - result.beta if tiles else result.alpha
        risk = f"fraction of new tiles above {result.alpha:g}" if tiles else "risk"
        kind = {"kind": "expectation", "short": "on average over calibration draws",
                "words": (f"expectation: on average over calibration draws and new tiles the "
                          f"{risk} is at most {level:g}; one draw may land above it")}
        value = float(risks.mean())
        se = float(risks.std(ddof=1) / np.sqrt(s))
        figure = (f"mean held-out {risk} {value:.4g} +/- {se:.2g} (Monte-Carlo standard error "
                  f"over splits), target <= {level:g}")
        allowed = level
    if value <= allowed:
        word, holds = "meets the guarantee", True
    elif value <= allowed + WITHIN_ERRORS * se:
        word, holds = "above by less than its Monte-Carlo error: consistent with the guarantee", True
    else:
        word, holds = "ABOVE beyond its Monte-Carlo error: the guarantee fails here", False
    return kind, {"value": value, "standard_error": se, "allowed": allowed, "holds": holds,
                  "n_splits": int(s), "message": f"{figure}: {word}"}
