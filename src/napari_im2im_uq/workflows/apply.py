"""Apply a calibration to outputs: the calibrated products as styled layer tuples.

:func:`result_layers` turns a result into layers (each product styled by its role,
:mod:`napari_im2im_uq.layers`); :func:`apply_record` re-applies a saved record to new outputs
of the same model, with the drift check of :mod:`.drift` next to the guarantee.
"""

from __future__ import annotations

import numpy as np

from .. import layers
from .._validation import check_bool
from ..calibration import methods
from .records import as_record, warn_if_other_model

__all__ = ["apply_record", "result_layers"]

def _score(sigma):
    """Return a trust-mask score given as a layer as its array (names and arrays as they are)."""
    if sigma is None or isinstance(sigma, str):
        return sigma
    return layers.data_of(sigma, "sigma")



def result_layers(entry, result, record, outputs, *, show_bounds=False, **options) -> list:
    """Apply a result to whole outputs: layer-data tuples styled by each product's role."""
    arrays = {k: layers.data_of(v, k) for k, v in outputs.items()}
    ref_key = entry.needs[0]
    ref_obj = outputs[ref_key]
    scale = np.asarray(getattr(ref_obj, "scale", np.ones(arrays[ref_key].ndim)), float)
    translate = np.asarray(getattr(ref_obj, "translate", np.zeros(arrays[ref_key].ndim)), float)
    if entry.class_axis:
        scale, translate = scale[1:], translate[1:]
    model = (record.get("model") or {}).get("name", "model")
    meta = {layers.META_KEY: {"role": "calibrated", "record": record}}
    geom = {"scale": tuple(float(v) for v in scale),
            "translate": tuple(float(v) for v in translate)}
    opts = entry.apply_options(record)
    opts.update({k: v for k, v in options.items() if v is not None})
    if "sigma" in opts:
        opts["sigma"] = _score(opts["sigma"])
    out = []
    for product in entry.products(result, arrays, show_bounds=show_bounds, **opts):
        kwargs = {"name": f"{product.name} ({model})",
                  **layers.product_style(product.role, product.data, product.limits),
                  "metadata": {layers.META_KEY: {**meta[layers.META_KEY],
                                                 "product": product.role}}, **geom}
        out.append((product.data, kwargs, product.kind))
    return out



def apply_record(record, outputs, *, show_bounds=False, check_drift=True,
                 drift_layer=False) -> list:
    """Apply a saved calibration record to new outputs of the same model; return layer tuples.

    Parameters
    ----------
    record : dict, path-like or layer
        A record (:func:`load_record`, a calibrated layer's metadata, or a JSON file).
    outputs : dict of str to layer or array
    show_bounds : bool
    check_drift : bool
        When the record holds a ``drift_summary``, run :func:`check_drift` on the outputs (it
        reads them all) and put its verdict next to the record in each layer's metadata
        (``metadata["im2im_uq"]["drift"]``: ``message``, ``drifted``, ``p_value``, ...).
    drift_layer : bool
        Also return the drift map (last) when the check ran.

    Returns
    -------
    list of tuple
    """
    from ..calibration import CalibrationResult

    if not isinstance(outputs, dict):
        raise ValueError(
            "outputs must be a dict of output name to layer or array (api.model_outputs gives "
            f"it for a prediction layer); got {type(outputs).__name__}"
        )
    show_bounds = check_bool(show_bounds, "show_bounds")
    record = as_record(record)  # checked: schema and checksum
    result = CalibrationResult.from_dict(record["calibration"], where="record.calibration")
    warn_if_other_model(record, outputs, stacklevel=3)
    shown = result_layers(methods.get(result.method), result, record, outputs,
                          show_bounds=show_bounds)
    if not (check_drift and isinstance(record.get("drift_summary"), dict)):
        return shown
    from .drift import check_drift as check

    try:
        _, drift_map = check(record, outputs)
    except ValueError as err:  # applying never fails because the check cannot run
        drift_map = None
        compact = {"drifted": None, "message": f"drift check not run: {err}"}
    else:
        compact = drift_map[1]["metadata"][layers.META_KEY]["verdict"]
    out = []
    for data, kwargs, kind in shown:
        meta = dict(kwargs["metadata"][layers.META_KEY], drift=compact)
        out.append((data, {**kwargs, "metadata": {layers.META_KEY: meta}}, kind))
    return out + ([drift_map] if drift_layer and drift_map is not None else [])
