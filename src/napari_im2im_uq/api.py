"""The scripting surface: the napari console, scripts and the dock widgets all call these.

Functions take napari layers or plain arrays and return layer-data tuples
``(data, kwargs, layer_type)`` (``viewer.add_image(data, **kwargs)`` shows one;
:func:`show` adds or updates a list of them). Nothing here imports napari or Qt: a layer is
anything with ``data``, ``scale``, ``translate``, ``metadata`` and ``name``.

Long jobs are generators (``*_job``) that yield ``(done, total)`` and return their result
(``StopIteration.value``); the widgets run them in napari thread workers with a progress bar
and a cancel button, and the plain functions (:func:`predict`, :func:`calibrate`,
:func:`diagnose`) run them to the end. :func:`train` (a model trained or fine-tuned on your own
pairs, with a recorded spatial split) is a job generator too: it yields phase dicts and
returns a :class:`~napari_im2im_uq.training.TrainResult`; :func:`held_back_shapes` gives its
held-back regions as Shapes rectangles to calibrate on.

This module only re-exports: the work lives in :mod:`napari_im2im_uq.workflows` (one module
per job), :mod:`napari_im2im_uq.layers` (layer access, metadata, styles) and the method
registry :mod:`napari_im2im_uq.calibration.methods`. The names are resolved on first use, so
importing ``api`` stays cheap (no scipy, dask or torch until a job runs).

The napari console in a few lines::

    from napari_im2im_uq import api
    layers = api.predict("tem-sr4x-quantile", viewer.layers["tem input (low-res)"])
    api.show(viewer, layers)
    outputs = api.model_outputs(viewer.layers, "prediction (tem-sr4x-quantile)")
    cal = api.calibrate(outputs, viewer.layers["tem truth (high-res)"], method="intervals",
                        alpha=0.1, delta=0.1)
    api.show(viewer, cal.layers)
    print(cal.result.guarantee)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .layers import (
    HEAT_COLORMAP,
    META_KEY,
    UNTRUSTED_RGBA,
    model_outputs,
    show,
    untrusted_style,
)

__all__ = [
    "BOUNDS",
    "HEAT_COLORMAP",
    "META_KEY",
    "UNTRUSTED_RGBA",
    "Calibration",
    "RecordError",
    "TrainResult",
    "apply_record",
    "calibrate",
    "calibrate_job",
    "calibration_tiles",
    "check_drift",
    "check_drift_job",
    "diagnose",
    "diagnose_job",
    "export_bioimageio",
    "held_back_shapes",
    "list_models",
    "load_model",
    "load_record",
    "method",
    "method_names",
    "model_card",
    "model_io",
    "model_outputs",
    "plan_tiles",
    "plot_diagnostics",
    "predict",
    "predict_job",
    "record_layer",
    "record_of",
    "save_record",
    "self_check",
    "show",
    "train",
    "untrusted_style",
]

if TYPE_CHECKING:  # the names resolved by __getattr__, for linters and type checkers
    from .training import TrainResult, held_back_shapes, train
    from .workflows.apply import apply_record
    from .workflows.calibrate import Calibration, calibrate, calibrate_job, self_check
    from .workflows.diagnose import diagnose, diagnose_job
    from .workflows.drift import check_drift, check_drift_job
    from .workflows.export import export_bioimageio, load_model, record_of
    from .workflows.models import list_models, model_card, model_io
    from .workflows.predict import predict, predict_job
    from .workflows.records import (
        RecordError,
        load_record,
        record_layer,
        save_record,
    )
    from .workflows.tiles import calibration_tiles, plan_tiles

#: The concentration bounds of RCPS (first = default).
BOUNDS = ("hoeffding_bentkus", "hoeffding", "wsr")

#: Public name -> the workflow module that defines it (imported on first use).
_HOMES = {
    "Calibration": "calibrate", "apply_record": "apply", "calibrate": "calibrate",
    "calibrate_job": "calibrate", "self_check": "calibrate",
    "diagnose": "diagnose", "diagnose_job": "diagnose",
    "check_drift": "drift", "check_drift_job": "drift",
    "export_bioimageio": "export", "load_model": "export", "record_of": "export",
    "list_models": "models", "model_card": "models", "model_io": "models",
    "predict": "predict", "predict_job": "predict",
    "load_record": "records", "record_layer": "records", "save_record": "records",
    "RECORD_FORMAT": "records", "RECORD_VERSION": "records", "MEMORY_LIMIT": "predict",
    "RecordError": "records", "MAX_RECORD_BYTES": "records",
    "calibration_tiles": "tiles", "plan_tiles": "tiles",
}
#: Public names of the training job (imported from :mod:`napari_im2im_uq.training` on use).
_TRAINING = ("TrainResult", "held_back_shapes", "train")


def _workflow(module: str):
    return importlib.import_module(f"{__package__}.workflows.{module}")


def method(name: str):
    """Return the registry entry of a calibration method (what it needs, its rules, ...).

    Examples
    --------
    >>> method("intervals").needs
    ('prediction', 'lower', 'upper')
    """
    from .calibration.methods import get

    return get(name)


def method_names() -> tuple[str, ...]:
    """Names of the calibration methods, in the order the widgets offer them.

    Examples
    --------
    >>> method_names()
    ('intervals', 'trust_mask', 'mask', 'segmentation')
    """
    from .calibration.methods import names

    return names()


def plot_diagnostics(report: dict, figure, **kwargs) -> list:
    """Draw a :func:`diagnose` report on a matplotlib ``Figure``; return the axes."""
    from ._diagnostics import plot_diagnostics as plot

    return plot(report, figure, **kwargs)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(_workflow(_HOMES[name]), name)
    if name in _TRAINING:
        return getattr(importlib.import_module(f"{__package__}.training"), name)
    if name == "METHODS":
        return method_names()
    if name == "RULES":
        return {m: method(m).rules for m in method_names()}
    if name == "NEEDS":
        return {m: method(m).needs for m in method_names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES) | set(_TRAINING) | {"METHODS", "RULES", "NEEDS"})
