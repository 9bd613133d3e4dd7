"""Duck-typed access to napari layers, the plugin's one metadata schema, styles and ``show``.

A *layer* is anything with ``data``, ``scale``, ``metadata`` and ``name`` (a napari layer, or a
stand-in in a script); a plain array is accepted wherever a layer is. Nothing here imports
napari or Qt: the widgets, the workflows and the console all go through these functions.

The plugin's metadata lives under ``layer.metadata["im2im_uq"]`` (:data:`META_KEY`) with a
``role``: "output" (a prediction run: ``output``, ``model``, ``run``, ``outputs``, ``axes``,
``storage``, ``input_layer``), "calibrated" (a result layer: ``record``, and ``drift`` when a
drift check ran on what was applied), "record" (a loaded record's tiles: ``record``), "tile
plan" (``tile_shape``, ``seed``, ``n_tiles``) or "drift" (a drift map: ``verdict``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "HEAT_COLORMAP",
    "META_KEY",
    "UNTRUSTED_RGBA",
    "DRIFT_RGBA",
    "data_of",
    "drift_style",
    "geometry",
    "is_layer",
    "kind",
    "meta",
    "model_outputs",
    "name_of",
    "output_style",
    "product_style",
    "show",
    "untrusted_style",
]

#: Key of the plugin's entry in a layer's ``metadata``.
META_KEY = "im2im_uq"
#: The perceptual colour map of interval widths and heat maps, and the overlay colour of
#: untrusted pixels (RGBA).
HEAT_COLORMAP = "inferno"
UNTRUSTED_RGBA = (1.0, 0.0, 1.0, 1.0)

_OUTPUT_STYLE = {
    "prediction": {"colormap": "gray"},
    "lower": {"colormap": "gray", "visible": False},
    "upper": {"colormap": "gray", "visible": False},
    "std": {"colormap": HEAT_COLORMAP, "visible": False},
    "residual": {"colormap": HEAT_COLORMAP, "visible": False},
    "mask": {"colormap": "viridis", "visible": False},
    "probabilities": {"colormap": "magma", "visible": False},
}


def output_style(output: str) -> dict:
    """Return the layer kwargs of a model output ("prediction", "lower", "std", ...)."""
    return dict(_OUTPUT_STYLE.get(output, {}))


def is_layer(obj) -> bool:
    """Return whether ``obj`` is a layer (has data, metadata, name and scale), not an array."""
    return not isinstance(obj, np.ndarray) and all(
        hasattr(obj, a) for a in ("data", "metadata", "name", "scale")
    )


def kind(layer) -> str:
    """Return the napari type of a layer: "image", "labels", "shapes", ..."""
    return type(layer).__name__.lower()


def data_of(obj, name: str):
    """Return the array of a layer (level 0 of a multiscale image) or the array itself."""
    if is_layer(obj):
        data = obj.data
        if getattr(obj, "multiscale", False):
            data = data[0]
        return data
    if obj is None:
        raise ValueError(f"{name} must be a layer or an array; got None")
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return obj
    try:
        arr = np.asarray(obj)
    except Exception:  # noqa: BLE001
        arr = None
    if arr is None or arr.dtype == object:
        raise ValueError(f"{name} must be a layer or an array; got {type(obj).__name__}")
    return arr


def geometry(obj, ndim: int):
    """``(scale, translate)`` of a layer (last ``ndim`` axes), or ones and zeros."""
    if is_layer(obj):
        scale = np.asarray(obj.scale, dtype=float)[-ndim:]
        translate = np.asarray(getattr(obj, "translate", np.zeros(ndim)), dtype=float)[-ndim:]
        return scale, translate
    return np.ones(ndim), np.zeros(ndim)


def meta(obj) -> dict:
    """Return the plugin's metadata of a layer (a copy; empty for arrays and other layers)."""
    if is_layer(obj):
        return dict(obj.metadata.get(META_KEY, {}))
    return {}


def name_of(obj, default: str) -> str:
    """Return the name of a layer, or ``default`` for an array."""
    return str(obj.name) if is_layer(obj) else default


def show(viewer, layers) -> list:
    """Add layer-data tuples to a viewer, updating the plugin's own layers of the same name.

    A layer of the same name that the plugin made (it has ``metadata["im2im_uq"]``) has its
    data, metadata and geometry replaced; any other layer is never touched (the new one is
    added beside it, napari numbers its name).

    Parameters
    ----------
    viewer : napari.Viewer
    layers : list of tuple
        ``(data, kwargs, layer_type)`` as returned by ``api.predict`` or ``api.calibrate``.

    Returns
    -------
    list of napari layers
        The layers added or updated, in order.
    """
    shown = []
    for data, kwargs, layer_type in layers:
        name = kwargs.get("name")
        existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401
        if (existing is not None and META_KEY in existing.metadata
                and kind(existing) == layer_type and existing.ndim == np.ndim(data)):
            existing.data = data
            existing.metadata = dict(kwargs.get("metadata", {}))
            for attr in ("scale", "translate"):
                if attr in kwargs:
                    setattr(existing, attr, kwargs[attr])
            if "contrast_limits" in kwargs:
                existing.contrast_limits = kwargs["contrast_limits"]
            shown.append(existing)
        else:
            shown.append(getattr(viewer, f"add_{layer_type}")(data, **kwargs))
    return shown


def model_outputs(layers, prediction) -> dict:
    """Return the layers of one prediction run, by output name ("prediction", "lower", ...).

    Parameters
    ----------
    layers : napari LayerList or iterable of layers
    prediction : layer or str
        Any output layer of the run (or its name).

    Returns
    -------
    dict of str to layer
    """
    layers = list(layers)
    if isinstance(prediction, str):
        match = [ly for ly in layers if ly.name == prediction]
        if not match:
            raise ValueError(
                f"prediction must name a layer; got {prediction!r}, layers are "
                f"{[ly.name for ly in layers]}"
            )
        prediction = match[0]
    info = meta(prediction)
    if info.get("role") != "output":
        raise ValueError(
            "prediction must be an output layer made by the plugin's predict (its metadata "
            f"names the model run); got the layer {name_of(prediction, '?')!r}"
        )
    run = info["run"]
    found = {}
    for ly in layers:
        m = meta(ly)
        if m.get("role") == "output" and m.get("run") == run:
            found[m["output"]] = ly
    # A mask model's prediction came from another run: the mask's input layer.
    if "mask" in found and "prediction" not in found:
        pname = info.get("prediction_layer")
        match = [ly for ly in layers if ly.name == pname]
        if match:
            found["prediction"] = match[0]
    return found


def untrusted_style() -> dict:
    """Return the layer kwargs of the trust-mask overlay: untrusted pixels magenta, rest clear."""
    return {
        "colormap": {"colors": [[0.0, 0.0, 0.0, 0.0], list(UNTRUSTED_RGBA)],
                     "name": "im2im-uq untrusted"},
        "contrast_limits": (0.0, 1.0),
        "opacity": 0.5,
        "blending": "translucent",
        "interpolation2d": "nearest",
    }


#: The overlay colour of tiles whose region drifts from the calibration tiles (RGBA).
DRIFT_RGBA = (1.0, 0.55, 0.0, 1.0)


def drift_style() -> dict:
    """Return the layer kwargs of a drift map: drifting regions orange, the rest clear."""
    return {
        "colormap": {"colors": [[0.0, 0.0, 0.0, 0.0], list(DRIFT_RGBA)],
                     "name": "im2im-uq drift"},
        "contrast_limits": (0.0, 1.0),
        "opacity": 0.4,
        "blending": "translucent",
        "interpolation2d": "nearest",
    }



def product_style(role: str, data, limits=None) -> dict:
    """Return the layer kwargs of a calibrated product by its role (``methods.Product``).

    Roles: "width" (interval width: heat map over the prediction, contrast ``limits``, by
    default up to the 99th percentile), "bound" (a calibrated bound, hidden), "untrusted"
    (the trust-mask overlay), "mask" (a continuous mask in [0, 1]), "segmentation" (labels),
    "set_size" (heat map from 0 to ``limits``), "varisco" (heat map in [0, 1], hidden).
    """
    if role == "width":
        if limits is None:
            hi = float(np.nanpercentile(np.asarray(data[..., ::4, ::4]), 99))
            limits = (0.0, hi or 1.0)
        return {"colormap": HEAT_COLORMAP, "contrast_limits": tuple(float(v) for v in limits),
                "blending": "additive", "opacity": 0.7}
    if role == "bound":
        return {"colormap": "gray", "visible": False}
    if role == "untrusted":
        return untrusted_style()
    if role == "mask":
        return {"colormap": "viridis", "contrast_limits": (0.0, 1.0), "opacity": 0.6}
    if role == "segmentation":
        return {"opacity": 0.4}
    if role == "set_size":
        return {"colormap": HEAT_COLORMAP, "contrast_limits": tuple(float(v) for v in limits),
                "opacity": 0.6}
    if role == "varisco":
        return {"colormap": HEAT_COLORMAP, "contrast_limits": (0.0, 1.0), "opacity": 0.7,
                "visible": False}
    raise ValueError(f"role must be a product role of calibration.methods; got {role!r}")
