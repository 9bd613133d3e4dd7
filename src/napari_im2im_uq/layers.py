"""Duck-typed access to napari layers, the plugin's one metadata schema, styles and ``show``.

A *layer* is anything with ``data``, ``scale``, ``metadata`` and ``name`` (a napari layer, or a
stand-in in a script); a plain array is accepted wherever a layer is. Nothing here imports
napari or Qt: the widgets, the workflows and the console all go through these functions.

The plugin's metadata lives under ``layer.metadata["im2im_uq"]`` (:data:`META_KEY`) with a
``role``: "output" (a prediction run: ``output``, ``model``, ``run``, ``outputs``, ``axes``,
``storage``, ``input_layer``), "calibrated" (a result layer: ``record``, ``product`` (its role,
e.g. "width" or "untrusted", see :func:`product_style`), and ``drift`` when a
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
    "label_axes",
    "legend",
    "meta",
    "model_outputs",
    "name_of",
    "output_style",
    "product_style",
    "robust_limits",
    "show",
    "show_colorbar",
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


def show(viewer, layers, *, colorbar=True) -> list:
    """Add layer-data tuples to a viewer, updating the plugin's own layers of the same name.

    A layer of the same name that the plugin made (it has ``metadata["im2im_uq"]``) has its
    data, metadata and geometry replaced; any other layer is never touched (the new one is
    added beside it, napari numbers its name).

    Parameters
    ----------
    viewer : napari.Viewer
    layers : list of tuple
        ``(data, kwargs, layer_type)`` as returned by ``api.predict`` or ``api.calibrate``.
    colorbar : bool
        Show the colour bar of the layers whose values are in the prediction's units (interval
        widths, set sizes); False leaves that to :func:`show_colorbar` (the dock widgets do it
        in a later event-loop turn: drawing its text is a repaint of its own).

    Returns
    -------
    list of napari layers
        The layers added or updated, in order.

    Examples
    --------
    >>> class Viewer:  # a stand-in; napari's Viewer in the plugin
    ...     layers, dims = {}, None
    ...     def add_image(self, data, **kwargs):
    ...         return type("Image", (), {"data": data, **kwargs})()
    >>> [ly.name for ly in show(Viewer(), [(np.zeros((4, 4)), {"name": "a"}, "image")])]
    ['a']
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
            limits = kwargs.get("contrast_limits")
            if limits is None and layer_type == "image":
                limits = robust_limits(data)  # the new data's, not the replaced data's
            if limits is not None:
                if hasattr(existing, "contrast_limits_range"):
                    lo, hi = existing.contrast_limits_range
                    existing.contrast_limits_range = (min(lo, limits[0]), max(hi, limits[1]))
                existing.contrast_limits = limits
            shown.append(existing)
        else:
            shown.append(getattr(viewer, f"add_{layer_type}")(data, **kwargs))
        if colorbar:
            show_colorbar(shown[-1])
    label_axes(viewer)
    return shown


def show_colorbar(layer) -> bool:
    """Show the colour bar of a layer whose values are in the prediction's units; say if shown.

    Interval widths and set sizes have one (napari >= 0.5); other layers are left as they are.

    Examples
    --------
    >>> class Layer:
    ...     metadata = {}
    >>> show_colorbar(Layer())
    False
    """
    if meta(layer).get("product") not in _COLORBAR_ROLES:
        return False
    bar = getattr(layer, "colorbar", None)  # napari >= 0.5
    if bar is None:
        return False
    bar.visible = True
    return True


#: Product roles whose layer shows a colour bar (their values are in the prediction's units).
_COLORBAR_ROLES = ("width", "set_size")
#: The axis labels of 3-D and 2-D data (rows/columns/planes, never x/y).
AXIS_LABELS = ("plane", "row", "column")


def label_axes(viewer) -> None:
    """Name the viewer's axes "plane", "row", "column" where they still have napari's numbers."""
    dims = getattr(viewer, "dims", None)
    if dims is None or not 2 <= dims.ndim <= 3:
        return
    labels = tuple(str(v) for v in dims.axis_labels)
    if all(v.lstrip("-").isdigit() for v in labels):
        dims.axis_labels = AXIS_LABELS[-dims.ndim:]


def robust_limits(data, *, percentiles=(1.0, 99.0), n_samples=200_000, seed=0):
    """Contrast limits from the data: robust percentiles of a random sample of the pixels.

    A random sample (not a strided one, which would fall on one phase of a lattice such as a
    nearest-neighbour up-sampling) of at most ``n_samples`` finite pixels. Returns None for
    lazy data (nothing is computed) and for data without finite values.

    Examples
    --------
    >>> robust_limits(np.arange(101.0))
    (1.0, 99.0)
    """
    if not isinstance(data, np.ndarray) or data.size == 0 or data.dtype.kind not in "biuf":
        return None
    flat = data.reshape(-1)
    if flat.size > n_samples:
        flat = flat[np.random.default_rng(seed).integers(0, flat.size, n_samples)]
    flat = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    if flat.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(flat, percentiles))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


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
        "opacity": 0.3,  # the truth stays readable under it (a speckle of untrusted pixels too)
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



def legend(layer) -> str | None:
    """Return one sentence that says what a calibrated layer shows, or None for other layers.

    Written from the layer's product role and its calibration record (level, tile, rule).

    Examples
    --------
    >>> class Layer:
    ...     name, data, scale = "untrusted (m)", np.zeros((2, 2)), (1, 1)
    ...     metadata = {META_KEY: {"role": "calibrated", "product": "untrusted", "record": {
    ...         "tile_shape": [64, 64], "calibration": {"alpha": 0.25, "rule": "crc"}}}}
    >>> legend(Layer())[:60]
    'magenta: pixels where the largest error in a 64 x 64 tile ma'
    """
    info = meta(layer)
    role = info.get("product")
    record = info.get("record") or {}
    cal = record.get("calibration") or {}
    if info.get("role") != "calibrated" or role is None:
        return None
    tile = " x ".join(str(v) for v in (record.get("tile_shape") or cal.get("tile_shape") or [])[-2:])
    tile = f"a {tile} tile" if tile else "a tile"
    alpha = cal.get("alpha")
    if cal.get("rule") == "rcps" and cal.get("delta") is not None:
        how = f"with probability {1 - float(cal['delta']):.0%} over the calibration draw"
    else:
        how = "on average over tiles"
    if role == "untrusted" and alpha is not None:
        return (f"magenta: pixels where the largest error in {tile} may exceed {alpha:g} (on the "
                f"other pixels it is at most {alpha:g}, {how}).")
    if role == "width" and alpha is not None:
        return (f"{name_of(layer, 'interval width')} (inferno, colour bar in the prediction's "
                f"units): the width upper - lower of each pixel's calibrated interval, wider "
                f"where the model is less sure; at most {alpha:.0%} of the pixels of {tile} fall "
                f"outside their interval ({how}).")
    words = {"mask": "the calibrated mask (1 = kept) the guarantee below speaks about",
             "segmentation": "the most likely class of each pixel",
             "set_size": "how many classes each pixel's calibrated set holds (1 = sure)",
             "varisco": "how often each pixel's set holds more than one class",
             "bound": "a calibrated interval bound, in the prediction's units"}
    if role in words:
        return f"{name_of(layer, role)}: {words[role]}."
    return None


#: How many chunks of a lazy product the contrast limits are taken from.
SAMPLE_CHUNKS = 4


def _is_lazy(data) -> bool:
    return hasattr(data, "dask") and hasattr(data, "blocks")


def _product_limits(data, *, n_chunks=SAMPLE_CHUNKS, seed=0, read_chunks=None):
    """Robust limits of in-memory data, or of ``n_chunks`` random chunks of a dask array.

    The chunks are computed alone: ``read_chunks(data, indices)`` when given (the workflows
    pass one that builds only those chunks' tasks), else the graph culled to them and run
    without dask's graph optimisation (which walks every chunk of the graph first).
    """
    if not _is_lazy(data):
        return robust_limits(data)
    rng = np.random.default_rng(seed)
    grid = data.numblocks
    total = int(np.prod(grid))
    picks = rng.choice(total, size=min(n_chunks, total), replace=False)
    indices = [tuple(int(v) for v in np.unravel_index(int(i), grid)) for i in sorted(picks)]
    sample = (read_chunks or _culled_chunks)(data, indices)
    return robust_limits(np.concatenate([np.asarray(b).reshape(-1) for b in sample]))


def _culled_chunks(data, indices) -> list:
    """Chunks ``indices`` of a dask array: its graph culled to them, run unoptimised."""
    import dask

    keys = [(data.name, *idx) for idx in indices]
    graph = data.__dask_graph__().cull(set(keys))
    return list(dask.base.get_scheduler(collections=[data])(graph, keys))


def product_style(role: str, data, limits=None, *, read_chunks=None) -> dict:
    """Return the layer kwargs of a calibrated product by its role (``methods.Product``).

    Roles: "width" (interval width: a translucent heat map over the prediction, contrast
    limits the 1st and 99th percentiles of the data, ``limits`` for lazy data), "bound" (a
    calibrated bound, hidden), "untrusted" (the trust-mask overlay), "mask" (a continuous mask
    in [0, 1]), "segmentation" (labels), "set_size" (heat map from 0 to ``limits``), "varisco"
    (heat map in [0, 1], hidden).

    Lazy (dask) data is never computed whole: its contrast limits come from at most
    ``SAMPLE_CHUNKS`` chunks drawn at random (:func:`_product_limits`), computed by
    ``read_chunks(data, indices) -> list of arrays`` when given (the chunks' tasks only,
    however many chunks the graph has; see ``workflows._chunks``), else by the graph culled to
    them.

    Examples
    --------
    >>> product_style("width", np.linspace(0.0, 1.0, 101))["contrast_limits"]
    (0.01, 0.99)
    """
    if role == "width":
        limits = _product_limits(data, read_chunks=read_chunks) or limits or (0.0, 1.0)
        return {"colormap": HEAT_COLORMAP, "contrast_limits": tuple(float(v) for v in limits),
                "blending": "translucent", "opacity": 0.3}
    if role == "bound":
        lazy = (_product_limits(data, read_chunks=read_chunks) if _is_lazy(data)
                else None)  # napari would read it all
        return {"colormap": "gray", "visible": False,
                **({"contrast_limits": lazy} if lazy else {})}
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
