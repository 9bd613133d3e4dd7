"""Tiled, lazy inference at any size: dask graphs, devices, resumable OME-Zarr output.

Importing this package imports neither torch nor dask; the names below load on first use.

- :func:`predict` returns lazy dask arrays, one per model output, from one graph.
- :func:`predict_to_zarr` writes them to an OME-Zarr store chunk by chunk, as a generator
  that yields ``(done, total)`` blocks and returns the arrays; it resumes after a cancel or a
  crash. :func:`write_zarr` runs it to the end.
- :func:`make_plan` plans a prediction once (a :class:`Plan`): its ``outputs()`` are what
  :func:`predict` returns and :func:`plan_to_zarr` writes the same graph.
- :func:`compute_outputs` computes lazy outputs into numpy block by block (a generator of
  ``(done, total)``); it and the zarr writer run on the one executor (threads here, or a
  ``dask.distributed`` scheduler), cancelled by closing the generator.
- :func:`output_axes` says the layout of each output.
- NaN or infinity in the input is reported as an ``Im2ImUQWarning`` with the count and the
  planes: before anything runs for an array in memory, else by the task that reads each block
  (collected into one warning by a job that runs inside :func:`watch_nonfinite`).
- A model whose bundle declares derived input channels gets them computed here
  (:func:`napari_im2im_uq.models.add_derived_channels`): pass only the given channels.

Border rule: an image is mirrored at its borders by the model's halo (``np.pad`` mode
"symmetric"), run, and cropped; the tiled result equals that untiled result
(:meth:`~napari_im2im_uq.models.Im2ImModel.__call__`).
"""

from __future__ import annotations

from .._lazy import attach

__all__ = [
    "Plan",
    "compute_outputs",
    "make_plan",
    "output_axes",
    "plan_to_zarr",
    "predict",
    "predict_to_zarr",
    "run_graph",
    "watch_nonfinite",
    "write_zarr",
]

_LAZY = {
    "Plan": "._predict",
    "compute_outputs": "._executor",
    "make_plan": "._predict",
    "plan_to_zarr": "._zarr",
    "run_graph": "._executor",
    "output_axes": "._axes",
    "predict": "._predict",
    "predict_to_zarr": "._zarr",
    "write_zarr": "._zarr",
    "watch_nonfinite": "._predict",
}


__getattr__, __dir__ = attach(__name__, globals(), _LAZY)
