"""Tiled, lazy inference at any size: dask graphs, devices, resumable OME-Zarr output.

Importing this package imports neither torch nor dask; the names below load on first use.

- :func:`predict` returns lazy dask arrays, one per model output, from one graph.
- :func:`predict_to_zarr` writes them to an OME-Zarr store chunk by chunk, as a generator
  that yields ``(done, total)`` blocks and returns the arrays; it resumes after a cancel or a
  crash. :func:`write_zarr` runs it to the end.
- :func:`output_axes` says the layout of each output.

Border rule: an image is mirrored at its borders by the model's halo (``np.pad`` mode
"symmetric"), run, and cropped; the tiled result equals that untiled result
(:meth:`~napari_im2im_uq.models.Im2ImModel.__call__`).
"""

from __future__ import annotations

from .._lazy import attach

__all__ = ["output_axes", "predict", "predict_to_zarr", "write_zarr"]

_LAZY = {
    "output_axes": "._axes",
    "predict": "._predict",
    "predict_to_zarr": "._zarr",
    "write_zarr": "._zarr",
}


__getattr__, __dir__ = attach(__name__, globals(), _LAZY)
