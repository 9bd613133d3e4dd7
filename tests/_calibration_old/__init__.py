"""The calibration core as it was before the single-pass rewrite (issue 14), kept as a reference.

A frozen copy of ``calibration/`` intervals, trust mask, mask and segmentation calibrators (and
the modules they read) at commit 0dbda2b (the bounds and the fidelity error, unchanged since,
are the package's own): the tests compare the new single-pass calibrations
with it (lam_hat and risks identical) and ``benchmarks/bench_calibration.py`` times it side by
side with the new one. Never edited: it is what the new code must agree with.
"""
