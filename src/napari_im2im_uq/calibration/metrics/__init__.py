"""Evaluation metrics of the papers this project implements, on stacks of tiles.

Every function takes arrays of shape ``(n, ...)``: one tile per leading index, any number of pixel
axes after it (rows, columns, planes ...). Options are keyword-only and inputs are never mutated.

``valid``
    An optional boolean array of the same shape as the tiles. Pixels where it is False are
    ignored everywhere: they may hold NaN or inf, and they take no part in means, maxima, ranks
    or strata. A tile without a single valid pixel is refused with a ValueError.

Intervals are closed: a pixel is covered when ``lower <= truth <= upper``, as everywhere in this
project.

Lazy inputs (dask arrays, zarr arrays, anything that can be sliced along the first axis and
converted with ``np.asarray``) are read a batch of whole tiles at a time (a few million pixels per
batch), so the per-tile metrics never hold the whole stack in memory. When several arguments are
dask arrays, each batch is computed with a single ``dask.compute`` call so that a shared graph (for
example lower, point and upper from one model) runs once per batch; dask is imported only in that
case. Two metrics pool pixels across tiles and keep one float per valid pixel:
:func:`size_stratified_risk` (interval sizes, to find the quantile edges) and, up to ``max_pixels``
values, :func:`spearman_size_error`.

Sources: Angelopoulos et al. 2022 (risk histograms, interval size, size-stratified risk, Spearman
correlation, spatial miscoverage, MSE), Kutiel et al. (mask size, masked distortion, the oracle
mask "Opt"), Adame et al. (fidelity error and PSNR inside the trust mask), Mossina et al.
(activation ratio, their Eq. 17).
"""

from __future__ import annotations

#: Number of array elements loaded per batch (over all arguments together); the batching helpers
#: read it from here at every call.
_BATCH_ELEMENTS = 1 << 22

from ._histogram import risk_histogram  # noqa: E402 - after the knob its helpers read
from ._intervals import (  # noqa: E402
    interval_miscoverage,
    interval_size,
    size_stratified_risk,
    spatial_miscoverage,
    spearman_size_error,
)
from ._masks import fidelity_error, mask_size, masked_distortion, oracle_mask_size  # noqa: E402
from ._regression import mse, psnr  # noqa: E402
from ._segmentation import activation_ratio  # noqa: E402

__all__ = [
    "activation_ratio",
    "fidelity_error",
    "interval_miscoverage",
    "interval_size",
    "mask_size",
    "masked_distortion",
    "mse",
    "oracle_mask_size",
    "psnr",
    "risk_histogram",
    "size_stratified_risk",
    "spatial_miscoverage",
    "spearman_size_error",
]

# One public home: the functions say they live in ``calibration.metrics``, not in its private
# family modules (for help(), documentation and pickling by name).
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
