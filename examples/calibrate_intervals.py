"""Console recipe: calibrate per-pixel intervals and read the guarantee.

Run it as a script or paste it into the napari console. Every number it prints is measured on
tiles the calibration never saw.
"""

import numpy as np

from napari_im2im_uq.calibration import calibrate_intervals, metrics
from napari_im2im_uq.data import tem_calibration_tiles

tiles = tem_calibration_tiles(n_images=2, size=512, tile=32, seed=1)  # 512 tiles of 32 x 32
rng = np.random.default_rng(0)
order = rng.permutation(tiles["truth"].shape[0])
cal, test = order[:256], order[256:]

result = calibrate_intervals(
    tiles["prediction"][cal], tiles["lower"][cal], tiles["upper"][cal], tiles["truth"][cal],
    alpha=0.1, delta=0.1,  # at most 10% of pixels outside, with 90% confidence
)
print(result)
print(result.guarantee)

lower, upper = result.intervals(tiles["prediction"][test], tiles["lower"][test],
                                tiles["upper"][test])
risk = metrics.interval_miscoverage(lower, upper, tiles["truth"][test]).mean()
width = metrics.interval_size(lower, upper).mean()
print(f"held-out miscoverage {risk:.3f} (alpha 0.1), mean interval width {width:.3f}")
strata = metrics.size_stratified_risk(lower, upper, tiles["truth"][test])
print("miscoverage by interval-size quartile:", np.round(strata["risk"], 3))
assert risk <= 0.1
