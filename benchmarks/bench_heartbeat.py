"""Does the viewer stall? The longest main-thread gap during Predict then Calibrate.

A QTimer ticks every 10 ms on napari's main thread while the Predict and Calibrate widgets run
on the sample TEM volume, as a user would drive them; a gap between ticks is a time the viewer
could not repaint or answer a click. A watchdog thread samples the main thread's Python stack
whenever a gap passes 50 ms, so the report says what the main thread was doing.

Each configuration runs in a fresh process (what a first prediction costs depends on what was
imported before):

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python benchmarks/bench_heartbeat.py [--repeat 3] [--warm {none,thread}]

``--warm thread`` lets the Predict dock import torch in a background thread as it opens (the
plugin's behaviour, ``_widgets._common.WARM_UP_MS``) and waits until it is done before
pressing Predict, as a user reading the model card would; ``none`` turns the warm-up off, so
the first prediction imports torch (the behaviour before issue 15). Goal (issue 15): longest
gap under 100 ms.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import threading
import time
import traceback


def one_run(warm: str, colorbar: bool = True) -> dict:
    """Open napari, drive Predict then Calibrate, return the gaps (runs in its own process)."""
    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_im2im_uq._sample_data import sample_tem
    from napari_im2im_uq._widgets import CalibrateWidget, ModelWidget, PredictWidget, _common

    _common.WARM_UP_MS = 0 if warm == "thread" else None  # the Predict dock warms torch
    if not colorbar:  # to measure what drawing the colour bar's text costs
        from napari_im2im_uq import layers

        layers._COLORBAR_ROLES = ()
    viewer = napari.Viewer(show=True)
    for data, kwargs, kind in sample_tem():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    app = QApplication.instance()
    model_w, predict_w, cal_w = ModelWidget(viewer), PredictWidget(viewer), CalibrateWidget(viewer)
    for i, (w, name) in enumerate(((model_w, "Model"), (predict_w, "Predict"),
                                   (cal_w, "Calibrate"))):
        viewer.window.add_dock_widget(w, name=name, tabify=i > 0)
    t_open = time.perf_counter()
    while warm == "thread" and not _torch_ready():  # the user reads the model card meanwhile
        app.processEvents()
        time.sleep(0.01)
    warm_s = time.perf_counter() - t_open
    for _ in range(50):  # let the first paint settle
        app.processEvents()
        time.sleep(0.01)

    main_id = threading.get_ident()
    last = [time.perf_counter()]
    ticks, phase = [], ["idle"]
    stacks = collections.Counter()
    stop = threading.Event()

    def tick():
        now = time.perf_counter()
        ticks.append((now, phase[0]))
        last[0] = now

    def watchdog():
        while not stop.is_set():
            time.sleep(0.02)
            if time.perf_counter() - last[0] > 0.05:
                frame = sys._current_frames().get(main_id)
                if frame is not None:
                    summary = traceback.extract_stack(frame)[-12:]
                    where = " <- ".join(f"{f.name}@{f.filename.split('site-packages/')[-1]}"
                                        f":{f.lineno}" for f in reversed(summary[-6:]))
                    stacks[(phase[0], where)] += 1

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    threading.Thread(target=watchdog, daemon=True).start()

    def wait(widget):
        while widget.runner.running:
            app.processEvents()
            time.sleep(0.002)

    t0 = time.perf_counter()
    phase[0] = "predict"
    predict_w.image.value = viewer.layers["tem input (low-res)"]
    predict_w.start()
    wait(predict_w)
    if "prediction (tem-sr4x-quantile)" not in viewer.layers:
        raise RuntimeError(f"predict failed: {predict_w.message.value} {predict_w.status.value}")
    t1 = time.perf_counter()
    phase[0] = "calibrate"
    cal_w.reset_choices()
    cal_w.prediction.value = viewer.layers["prediction (tem-sr4x-quantile)"]
    cal_w.truth.value = viewer.layers["tem truth (high-res)"]
    cal_w.start()
    wait(cal_w)
    t2 = time.perf_counter()
    phase[0] = "after"
    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)
    timer.stop()
    stop.set()
    times = np.array([t for t, _ in ticks])
    gaps = np.diff(times) * 1000
    phases = [p for _, p in ticks[1:]]
    worst = int(np.argmax(gaps))
    by_phase = {p: float(max((g for g, q in zip(gaps, phases) if q == p), default=0.0))
                for p in ("predict", "calibrate", "after")}
    viewer.close()
    return {"warm": warm, "ticks": len(ticks), "longest_gap_ms": float(gaps.max()),
            "longest_gap_phase": phases[worst], "longest_by_phase_ms": by_phase,
            "p99_gap_ms": float(np.percentile(gaps, 99)),
            "gaps_over_100_ms": int((gaps > 100).sum()),
            "predict_s": t1 - t0, "calibrate_s": t2 - t1, "warm_up_s": warm_s,
            "stall_stacks": [f"{n} x {p}: {w}" for (p, w), n in stacks.most_common(8)]}


def _torch_ready() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and hasattr(torch, "Tensor") and hasattr(torch, "nn")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warm", choices=("none", "thread", "both"), default="both")
    parser.add_argument("--one", choices=("none", "thread"), help=argparse.SUPPRESS)
    parser.add_argument("--no-colorbar", action="store_true",
                        help="do not show the width's colour bar (measures its text rendering)")
    parser.add_argument("--json", help="write the runs to this file")
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one_run(args.one, colorbar=not args.no_colorbar)))
        return 0
    modes = ("none", "thread") if args.warm == "both" else (args.warm,)
    runs = []
    for _ in range(args.repeat):
        for mode in modes:
            proc = subprocess.run([sys.executable, __file__, "--one", mode]
                                  + ["--no-colorbar"] * args.no_colorbar, capture_output=True,
                                  text=True, timeout=900)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            run = json.loads(line[0][7:])
            runs.append(run)
            print(f"warm={mode:6s} longest gap {run['longest_gap_ms']:6.0f} ms "
                  f"({run['longest_gap_phase']}; by phase "
                  + ", ".join(f"{k} {v:.0f}" for k, v in run["longest_by_phase_ms"].items())
                  + f"), p99 {run['p99_gap_ms']:.0f} ms, {run['gaps_over_100_ms']} gaps > 100 ms, "
                  f"predict {run['predict_s']:.1f} s, calibrate {run['calibrate_s']:.1f} s")
            for s in run["stall_stacks"][:4]:
                print(f"    {s}")
    for mode in modes:
        longest = sorted(r["longest_gap_ms"] for r in runs if r["warm"] == mode)
        print(f"warm={mode}: longest gap over {len(longest)} runs: median "
              f"{longest[len(longest) // 2]:.0f} ms, range {longest[0]:.0f}-{longest[-1]:.0f} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(runs, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
