"""Console recipe: a trust mask with a fidelity guarantee, and membrane segmentation sets."""

import numpy as np

from napari_im2im_uq.calibration import (
    CalibrationResult,
    calibrate_segmentation,
    calibrate_trust_mask,
    metrics,
)
from napari_im2im_uq.data import tem_calibration_tiles

tiles = tem_calibration_tiles(n_images=2, size=512, tile=32, seed=2)
cal, test = np.arange(0, 512, 2), np.arange(1, 512, 2)  # interleaved halves

# Trust the pixels whose heuristic width is small enough that, on average, the worst absolute
# error among trusted pixels of a new tile is at most 0.25 (images are in [0, 1]).
trust = calibrate_trust_mask(tiles["sigma"][cal], tiles["prediction"][cal], tiles["truth"][cal],
                             alpha=0.25, data_range=(0, 1))
mask = trust.trust_mask(tiles["sigma"][test])
error = np.abs(tiles["truth"][test] - tiles["prediction"][test])
print(trust.guarantee)
print(f"trusted {mask.mean():.1%} of held-out pixels; mean worst trusted error "
      f"{metrics.fidelity_error(mask, error).mean():.3f}")
print(f"if 10 calibration tiles had leaked into training: bound {trust.leakage_bound(10):.3f}")

# The calibration record survives a round trip through JSON (what a layer's metadata keeps).
assert CalibrationResult.from_json(trust.to_json()) == trust

sets = calibrate_segmentation(tiles["probabilities"][cal], tiles["labels"][cal], alpha=0.05)
heat = sets.varisco(tiles["probabilities"][test][0])
print(sets.guarantee)
print(f"lam = {sets.lam:.3f}; ambiguous pixels in the first test tile: {np.mean(heat > 0.5):.1%}")
