"""The jobs a user runs, one module each; ``api`` re-exports their public functions.

- ``predict``: a model over a layer or an array -> output layer tuples (memory, lazy, zarr).
- ``calibrate``: outputs + ground truth -> result, record, layers; apply a record; self-check.
- ``diagnose``: a calibration on held-out ground truth -> the papers' metrics.
- ``tiles``: regions -> calibration tiles, random tile plans, cutting tiles.
- ``records``: the calibration record (JSON) a reviewer reads and a result layer carries.
- ``models``: model cards and the list of models (``model.json`` only, no torch).

Long jobs are generators that yield ``(done, total)`` and return their result. Nothing here
imports napari or Qt; layers are reached through :mod:`napari_im2im_uq.layers`.
"""
