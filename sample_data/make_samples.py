"""Regenerate and inspect the plugin's sample data sets (synthetic TEM, synthetic QPI, real cell).

The samples are never stored in the repository: napari builds them on the fly from
``napari_im2im_uq._sample_data`` (File > Open Sample > im2im UQ). This script calls the same
functions, prints what they contain (shapes, ranges, label fractions, timing and, for QPI, how
well the classical Tikhonov DPC baseline recovers the phase), and optionally saves them as
``.npz`` files in a folder of your choice or shows them in napari.

    python sample_data/make_samples.py                   # summary of all samples
    python sample_data/make_samples.py tem --seed 3      # another synthetic volume
    python sample_data/make_samples.py --out /tmp/samples  # also write <name>.npz there
    python sample_data/make_samples.py qpi --show        # open them in napari
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_im2im_uq import _sample_data
from napari_im2im_uq.data import dpc_tikhonov

SAMPLES = {
    "tem": _sample_data.sample_tem,
    "qpi": _sample_data.sample_qpi,
    "cells": _sample_data.sample_cells_phase,
}


def build(which, seed):
    func = SAMPLES[which]
    start = time.perf_counter()
    layers = func() if which == "cells" else func(seed=seed)
    return layers, time.perf_counter() - start


def describe(which, layers, seconds):
    print(f"== {which}: {len(layers)} layers in {seconds:.2f} s")
    for data, kwargs, kind in layers:
        meta = kwargs.get("metadata", {}).get("im2im_uq", {})
        line = (
            f"  {kwargs['name']!r:26} {kind:6} {data.dtype!s:7} {data.shape!s:16} "
            f"[{float(data.min()):.3f}, {float(data.max()):.3f}] role={meta.get('role')}"
        )
        if "scale" in kwargs:
            line += f" scale={kwargs['scale']}"
        print(line)
        if kind == "labels":
            fractions = np.bincount(data.ravel(), minlength=3) / data.size
            names = meta.get("classes", {})
            print("    " + ", ".join(f"{names.get(k, k)} {f:.1%}" for k, f in enumerate(fractions)))
    if which == "qpi":
        images, truth = layers[0][0], layers[1][0]
        channels = layers[0][1]["metadata"]["im2im_uq"]["channels"]
        estimate = dpc_tikhonov(images, directions=channels)
        r = np.corrcoef(estimate.ravel(), truth.ravel())[0, 1]
        print(f"  Tikhonov two-image DPC baseline: correlation with the true phase {r:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", help=f"samples among {sorted(SAMPLES)} (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic samples")
    parser.add_argument("--out", type=Path, help="folder to write <sample>.npz files into")
    parser.add_argument("--show", action="store_true", help="open the samples in napari")
    args = parser.parse_args(argv)
    which = args.which or list(SAMPLES)
    unknown = [w for w in which if w not in SAMPLES]
    if unknown:
        parser.error(f"unknown sample(s) {unknown}; choose among {sorted(SAMPLES)}")
    built = {}
    for name in which:
        layers, seconds = build(name, args.seed)
        describe(name, layers, seconds)
        built[name] = layers
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, layers in built.items():
            arrays = {kw["name"].replace(" ", "_"): data for data, kw, _ in layers}
            path = args.out / f"{name}.npz"
            np.savez_compressed(path, **arrays)
            print(f"wrote {path}")
    if args.show:
        import napari

        viewer = napari.Viewer()
        for layers in built.values():
            for data, kwargs, kind in layers:
                getattr(viewer, f"add_{kind}")(data, **kwargs)
        napari.run()


if __name__ == "__main__":
    main()
