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
from ._chunks import read_chunks
from .records import as_record, warn_if_other_model

__all__ = ["apply_record", "product_arrays", "result_layers"]

def _score(sigma):
    """Return a trust-mask score given as a layer as its array (names and arrays as they are)."""
    if sigma is None or isinstance(sigma, str):
        return sigma
    return layers.data_of(sigma, "sigma")



def _options(entry, record, options):
    opts = entry.apply_options(record)
    opts.update({k: v for k, v in options.items() if v is not None})
    if "sigma" in opts:
        opts["sigma"] = _score(opts["sigma"])
    return opts


def product_arrays(record: dict, arrays: dict, *, show_bounds: bool = False,
                   names: bool = False) -> list:
    """Return the calibrated products of a checked record on arrays, unstyled, in layer order.

    The arithmetic of :func:`apply_record` without the layers, the checks or the drift test:
    what a block task of ``napari-im2im-uq apply`` runs on one block of the outputs (every
    product is computed pixel by pixel, so a block of the result is the result on the block).

    Parameters
    ----------
    record : dict
        A record already checked (:func:`~napari_im2im_uq.workflows.records.as_record`).
    arrays : dict of str to array
        The outputs by name (numpy or dask).
    show_bounds : bool
    names : bool
        Return ``(name, array)`` pairs (the product's name, e.g. "interval width").

    Returns
    -------
    list of array
        One array per product, in the order of :func:`apply_record`'s layers.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq import api
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((64, 64))
    >>> out = {"prediction": truth, "lower": truth - 0.1, "upper": truth + 0.1}
    >>> rec = api.calibrate(out, truth, method="intervals", alpha=0.2, rule="crc",
    ...                     tile_shape=(16, 16)).record
    >>> [a.shape for a in product_arrays(rec, out, show_bounds=True)]
    [(64, 64), (64, 64), (64, 64)]
    """
    from ..calibration import CalibrationResult

    result = CalibrationResult.from_dict(record["calibration"], where="record.calibration")
    entry = methods.get(result.method)
    made = entry.products(result, arrays, show_bounds=show_bounds,
                          **_options(entry, record, {}))
    return [(p.name, p.data) if names else p.data for p in made]


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
    opts = _options(entry, record, options)
    made = entry.products(result, arrays, show_bounds=show_bounds, **opts)
    pyramid = _pyramid(outputs, opts)
    coarse = [entry.products(result, level, show_bounds=show_bounds, **opts)
              for level in pyramid[1:]]
    out = []
    for i, product in enumerate(made):
        data = [product.data, *(c[i].data for c in coarse)] if coarse else product.data
        shown = data[-1] if coarse else data  # the style reads the coarsest level
        kwargs = {"name": f"{product.name} ({model})",
                  **layers.product_style(product.role, shown, product.limits,
                                         read_chunks=read_chunks),
                  "metadata": {layers.META_KEY: {**meta[layers.META_KEY],
                                                 "product": product.role}}, **geom,
                  **({"multiscale": True} if coarse else {})}
        out.append((data, kwargs, product.kind))
    return out


def _pyramid(outputs: dict, opts: dict) -> list:
    """Return the outputs level by level when every one is a multiscale layer (else ``[]``).

    A prediction opened from a store (the reader) is a pyramid; its calibrated products are
    then pyramids too, each level the products of that level of the outputs (pixel by pixel,
    lazily), so napari reads only the level and region it shows. A score given as an array
    (``sigma``) has one level: no pyramid then.
    """
    if opts.get("sigma") is not None and not isinstance(opts["sigma"], str):
        return []
    if not outputs or not all(layers.is_layer(v) and getattr(v, "multiscale", False)
                              for v in outputs.values()):
        return []
    counts = {len(v.data) for v in outputs.values()}
    if len(counts) != 1:
        return []
    return [{k: v.data[i] for k, v in outputs.items()} for i in range(counts.pop())]



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
        When the record holds a ``drift_summary``, run :func:`check_drift` on the outputs
        (every tile of in-memory outputs; of lazy ones, a seeded random sample of at most
        ``drift.MAX_TILES`` tiles, each chunk under them read once) and put its verdict next to
        the record in each layer's metadata (``metadata["im2im_uq"]["drift"]``: ``message``,
        ``drifted``, ``p_value``, ...).
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
