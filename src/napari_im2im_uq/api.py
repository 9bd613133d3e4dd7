"""The scripting surface: the napari console, scripts and the dock widgets all call these.

Functions take napari layers or plain arrays and return layer-data tuples
``(data, kwargs, layer_type)`` (``viewer.add_image(data, **kwargs)`` shows one;
:func:`show` adds or updates a list of them). Nothing here imports napari or Qt: a layer is
anything with ``data``, ``scale``, ``translate``, ``metadata`` and ``name``.

Long jobs are generators (``*_job``) that yield ``(done, total)`` and return their result
(``StopIteration.value``); the widgets run them in napari thread workers with a progress bar
and a cancel button, and the plain functions (:func:`predict`, :func:`calibrate`,
:func:`diagnose`) run them to the end.

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

import datetime
import json
import math
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._jobs import run_to_end
from ._jobs import steps_callback as _steps
from ._warnings import Im2ImUQWarning

__all__ = [
    "Calibration",
    "apply_record",
    "calibrate",
    "calibrate_job",
    "calibration_tiles",
    "diagnose",
    "diagnose_job",
    "list_models",
    "load_record",
    "model_card",
    "model_outputs",
    "plan_tiles",
    "predict",
    "predict_job",
    "save_record",
    "self_check",
    "show",
]

#: Key of the plugin's entry in a layer's ``metadata``.
META_KEY = "im2im_uq"
#: ``format`` field of a saved calibration record.
RECORD_FORMAT = "napari-im2im-uq calibration record"
RECORD_VERSION = 1
METHODS = ("intervals", "trust_mask", "mask", "segmentation")
#: Rules offered per method (first = default).
RULES = {
    "intervals": ("rcps", "crc"),
    "trust_mask": ("crc",),
    "mask": ("conformal", "crc", "paper"),
    "segmentation": ("crc", "rcps"),
}
BOUNDS = ("hoeffding_bentkus", "hoeffding", "wsr")
#: Outputs each method reads, and the models that produce them.
NEEDS = {
    "intervals": ("prediction", "lower", "upper"),
    "trust_mask": ("prediction",),
    "mask": ("mask", "prediction"),
    "segmentation": ("probabilities",),
}
#: In-memory prediction up to this many output bytes (all outputs, float32); lazy above.
MEMORY_LIMIT = 1 << 30
#: The perceptual colour map of interval widths and heat maps, and the overlay colour of
#: untrusted pixels (RGBA).
HEAT_COLORMAP = "inferno"
UNTRUSTED_RGBA = (1.0, 0.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# layers and arrays


def _is_layer(obj) -> bool:
    return not isinstance(obj, np.ndarray) and all(
        hasattr(obj, a) for a in ("data", "metadata", "name", "scale")
    )


def _layer_kind(layer) -> str:
    return type(layer).__name__.lower()


def _data(obj, name: str):
    """Return the array of a layer (level 0 of a multiscale image) or the array itself."""
    if _is_layer(obj):
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


def _geometry(obj, ndim: int):
    """``(scale, translate)`` of a layer (last ``ndim`` axes), or ones and zeros."""
    if _is_layer(obj):
        scale = np.asarray(obj.scale, dtype=float)[-ndim:]
        translate = np.asarray(getattr(obj, "translate", np.zeros(ndim)), dtype=float)[-ndim:]
        return scale, translate
    return np.ones(ndim), np.zeros(ndim)


def _meta(obj) -> dict:
    if _is_layer(obj):
        return dict(obj.metadata.get(META_KEY, {}))
    return {}


def _name(obj, default: str) -> str:
    return str(obj.name) if _is_layer(obj) else default


def show(viewer, layers) -> list:
    """Add layer-data tuples to a viewer, updating the plugin's own layers of the same name.

    A layer of the same name that the plugin made (it has ``metadata["im2im_uq"]``) has its
    data, metadata and geometry replaced; any other layer is never touched (the new one is
    added beside it, napari numbers its name).

    Parameters
    ----------
    viewer : napari.Viewer
    layers : list of tuple
        ``(data, kwargs, layer_type)`` as returned by :func:`predict` or :func:`calibrate`.

    Returns
    -------
    list of napari layers
        The layers added or updated, in order.
    """
    shown = []
    for data, kwargs, kind in layers:
        name = kwargs.get("name")
        existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401
        if (existing is not None and META_KEY in existing.metadata
                and _layer_kind(existing) == kind and existing.ndim == np.ndim(data)):
            existing.data = data
            existing.metadata = dict(kwargs.get("metadata", {}))
            for attr in ("scale", "translate"):
                if attr in kwargs:
                    setattr(existing, attr, kwargs[attr])
            if "contrast_limits" in kwargs:
                existing.contrast_limits = kwargs["contrast_limits"]
            shown.append(existing)
        else:
            shown.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return shown


# ---------------------------------------------------------------------------------------------
# models


def list_models(*, search_paths=()) -> list[str]:
    """Names of the shipped models (and of bundles in ``search_paths``); does not import torch.

    Examples
    --------
    >>> "tem-sr4x-quantile" in list_models()
    True
    """
    from .models import list_models as _list

    return _list(search_paths=search_paths)


def _fmt_quality(held: dict) -> list[str]:
    lines = []
    model, base = held.get("model", {}), held.get("baseline", {})
    for key, label in (("psnr_db", "PSNR (dB)"), ("ssim", "SSIM"), ("rmse", "RMSE"),
                       ("accuracy", "accuracy"), ("f1", "F1"), ("spearman_error", "Spearman")):
        if key in model:
            text = f"{label} {model[key]:.4g}"
            if key in base:
                text += f" (baseline {base[key]:.4g})"
            lines.append(text)
    return lines


def model_card(model) -> dict:
    """Return the card of a model as plain strings: task, heuristic, scale, data, quality.

    Reads ``model.json`` only (torch is not imported).

    Parameters
    ----------
    model : str, path-like or Im2ImModel
        A zoo name, a bundle folder or a loaded model.

    Returns
    -------
    dict of str to str
        Keys "name", "task", "heuristic", "scale", "inputs", "data", "licence", "quality",
        "citation", "sha256".

    Examples
    --------
    >>> card = model_card("tem-sr4x-quantile")
    >>> card["heuristic"], card["scale"]
    ('quantile', '4x (output pixels per input pixel, per axis)')
    """
    if hasattr(model, "spec") and hasattr(model, "sha256"):
        spec = dict(model.spec)
    else:
        from .models import read_spec

        spec = read_spec(model)
    card = spec.get("card", {})
    training = spec.get("training_data", {})
    held = card.get("held_out", {})
    quality = _fmt_quality(held)
    if held.get("held_out"):
        quality.append(f"on {held['held_out']}")
    if held.get("baseline_name"):
        quality.append(f"baseline: {held['baseline_name']}")
    s = int(spec.get("scale_factor", 1))
    return {
        "name": str(spec.get("name", Path(str(spec.get("path", "model"))).name)),
        "task": str(card.get("description", "(no description)")),
        "heuristic": str(spec.get("heuristic", "?")),
        "scale": f"{s}x (output pixels per input pixel, per axis)" if s > 1 else "1x (same grid)",
        "inputs": ", ".join(spec.get("input_channels", [])) or "?",
        "data": str(training.get("dataset", "?"))
        + (f" ({training['units']})" if training.get("units") else ""),
        "licence": str(spec.get("licence", "not stated")),
        "quality": "; ".join(quality) if quality else "not measured",
        "citation": str(spec.get("citation", "")),
        "sha256": str(spec.get("sha256", "")),
    }


_MODEL_CACHE: dict = {}


def _load_model(model):
    """Return a loaded model: an Im2ImModel as is, a name or folder loaded once per process."""
    if hasattr(model, "spec") and hasattr(model, "network"):
        return model
    from .models import load_model, read_spec

    spec = read_spec(model)
    key = (spec["path"], spec.get("sha256"))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(spec["path"])
    return _MODEL_CACHE[key]


def _model_info(model) -> dict:
    return {
        "name": model.name,
        "sha256": model.sha256,
        "heuristic": model.heuristic,
        "scale_factor": int(model.scale_factor),
        "output_range": model.spec.get("output_range"),
    }


# ---------------------------------------------------------------------------------------------
# prediction


def _infer_axes(shape, n_channels: int, axes) -> str:
    if axes is not None:
        return str(axes).upper()
    nd = len(shape)
    if n_channels > 1:
        if nd == 3 and shape[0] == n_channels:
            return "CYX"
        if nd == 4 and shape[1] == n_channels:
            return "ZCYX"
        raise ValueError(
            f"image must have {n_channels} channels (the model's inputs) on its first axis "
            f"(channels, rows, columns) or second (planes, channels, rows, columns); got "
            f"shape {tuple(shape)}. Give axes= or pass the second image as second_image="
        )
    if nd == 2:
        return "YX"
    if nd == 3:
        return "ZYX"
    raise ValueError(
        "image must be 2-D (rows, columns) or 3-D (planes, rows, columns) for a one-channel "
        f"model; got shape {tuple(shape)}. Give axes= for other layouts"
    )


def _qpi_inputs(model, data, axes: str):
    """Append the derived Tikhonov phase channel the QPI model takes (computed per plane)."""
    from .training._recipes import qpi_tikhonov_channel

    arr = np.asarray(data, dtype=np.float32)
    c = axes.index("C")
    arr = np.moveaxis(arr, c, -3)  # (..., C, Y, X)
    flat = arr.reshape((-1,) + arr.shape[-3:])
    extra = np.stack([qpi_tikhonov_channel(p[0], p[1]) for p in flat]).astype(np.float32)
    out = np.concatenate([flat, extra[:, None]], axis=1).reshape(
        arr.shape[:-3] + (arr.shape[-3] + 1,) + arr.shape[-2:])
    return np.moveaxis(out, -3, c)


_OUTPUT_STYLE = {
    "prediction": {"colormap": "gray"},
    "lower": {"colormap": "gray", "visible": False},
    "upper": {"colormap": "gray", "visible": False},
    "std": {"colormap": HEAT_COLORMAP, "visible": False},
    "residual": {"colormap": HEAT_COLORMAP, "visible": False},
    "mask": {"colormap": "viridis", "visible": False},
    "probabilities": {"colormap": "magma", "visible": False},
}


def predict_job(model, image, *, second_image=None, prediction=None, axes=None, tile_shape=None,
                batch_size=None, device="auto", precision="auto", output="auto", store=None,
                overwrite=False):
    """Predict every output of a model over an image, as a generator (see :func:`predict`).

    Yields ``(done_blocks, total_blocks)``; returns the list of layer-data tuples.
    """
    from .inference import predict as _predict
    from .inference import predict_to_zarr

    if output not in ("auto", "memory", "lazy", "zarr"):
        raise ValueError(f"output must be 'auto', 'memory', 'lazy' or 'zarr'; got {output!r}")
    if output == "auto" and store is not None:
        output = "zarr"
    if (output == "zarr") != (store is not None):
        raise ValueError(
            f"store must be given exactly when output is 'zarr'; got output={output!r}, "
            f"store={store!r}"
        )
    loaded = _load_model(model)
    data = _data(image, "image")
    in_name = _name(image, "image")
    n_in = len(loaded.in_channels)
    derived = "phase_tikhonov_r1r2" in loaded.in_channels
    given_channels = n_in - 1 if derived else n_in
    if second_image is not None:
        second = _data(second_image, "second_image")
        if tuple(second.shape) != tuple(data.shape):
            raise ValueError(
                f"second_image must have the shape of image {tuple(data.shape)}; got "
                f"{tuple(second.shape)}"
            )
        import dask.array as da

        stack_axis = data.ndim - 2  # before rows: (C, Y, X) or (Z, C, Y, X)
        data = da.stack([da.asarray(data), da.asarray(second)], axis=stack_axis)
    axes = _infer_axes(data.shape, given_channels, axes)
    if derived:
        data = _qpi_inputs(loaded, data, axes)
    pred_data = None if prediction is None else _data(prediction, "prediction")
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
    in_scale, in_translate = _geometry(image, len(axes))
    in_scale, in_translate = in_scale[spatial], in_translate[spatial]
    s = int(loaded.scale_factor)
    out_scale = in_scale.copy()
    out_scale[-2:] /= s
    outs = _predict(loaded, data, axes=axes, tile_shape=tile_shape, batch_size=batch_size,
                    device=device, precision=precision, prediction=pred_data)
    nbytes = sum(int(np.prod(o.shape)) * 4 for o in outs.values())
    if output == "auto":
        output = "memory" if nbytes <= MEMORY_LIMIT else "lazy"
    if output == "zarr":
        gen = predict_to_zarr(loaded, data, store, axes=axes, tile_shape=tile_shape,
                              batch_size=batch_size, device=device, precision=precision,
                              prediction=pred_data, overwrite=overwrite)
        arrays = yield from gen
        import dask.array as da

        outs = {k: da.from_zarr(v) for k, v in arrays.items()}
    elif output == "memory":
        outs = yield from _compute_blocks(outs)
    else:
        yield 1, 1
    run = uuid.uuid4().hex
    info = _model_info(loaded)
    names = {k: f"{k} ({loaded.name})" for k in outs}
    tuples = []
    lo_hi = loaded.spec.get("output_range")
    for key, arr in outs.items():
        kwargs = dict(_OUTPUT_STYLE.get(key, {}))
        scale, translate = out_scale, in_translate
        if key == "probabilities":
            scale, translate = np.r_[1.0, scale], np.r_[0.0, translate]
        kwargs.update(
            name=names[key],
            scale=tuple(float(v) for v in scale),
            translate=tuple(float(v) for v in translate),
            metadata={META_KEY: {
                "role": "output", "output": key, "model": info, "input_layer": in_name,
                "run": run, "outputs": names, "axes": axes, "storage": output,
                "store": None if store is None else str(store),
                "prediction_layer": None if prediction is None else _name(prediction, None),
            }},
        )
        if key in ("prediction", "lower", "upper") and lo_hi:
            kwargs["contrast_limits"] = tuple(float(v) for v in lo_hi)
        elif key == "probabilities":
            kwargs["contrast_limits"] = (0.0, 1.0)
        tuples.append((arr, kwargs, "image"))
    return tuples


def _compute_blocks(outs: dict):
    """Compute lazy outputs block by block into numpy (one model run per block for all)."""
    import dask

    keys = list(outs)
    ref_key = next((k for k in keys if k != "probabilities"), keys[0])
    ref = outs[ref_key]
    offset = 1 if ref_key == "probabilities" else 0
    grid = ref.numblocks[offset:]
    starts = [np.r_[0, np.cumsum(c)] for c in ref.chunks[offset:]]
    result = {k: np.empty(v.shape, dtype=v.dtype) for k, v in outs.items()}
    total = int(np.prod(grid))
    yield 0, total
    for i, idx in enumerate(np.ndindex(*grid)):
        region = tuple(slice(int(st[j]), int(st[j + 1])) for st, j in zip(starts, idx))
        parts = []
        for k in keys:
            b = (0, *idx) if k == "probabilities" else idx
            parts.append(outs[k].blocks[b])
        values = dask.compute(*parts, scheduler="threads")
        for k, v in zip(keys, values):
            target = (slice(None), *region) if k == "probabilities" else region
            result[k][target] = v
        yield i + 1, total
    return result


def predict(model, image, *, progress=None, **kwargs) -> list:
    """Run a model over an image (a layer or an array) and return its outputs as layer tuples.

    Parameters
    ----------
    model : str, path-like or Im2ImModel
        A zoo name (:func:`list_models`), a bundle folder or a loaded model.
    image : napari Image layer or array-like
        Raw input in data units. A two-input model (QPI: top and bottom oblique images) takes
        a layer with a channel axis first (channels, rows, columns) or ``second_image``; the
        derived Tikhonov channel of ``qpi-dpc-quantile`` is computed here.
    progress : callable, optional
        Called with ``(done_blocks, total_blocks)``.
    second_image : layer or array-like, optional
        The second input image, same shape as ``image``.
    prediction : layer or array-like, optional
        Mask models only: the image-to-image prediction the mask is for.
    axes : str, optional
        Axes of ``image`` (default: "YX", "ZYX", "CYX" or "ZCYX" from its shape and the
        model's channel count).
    tile_shape, batch_size, device, precision
        As for :func:`napari_im2im_uq.inference.predict` (defaults from the model and device).
    output : {"auto", "memory", "lazy", "zarr"}
        "memory" computes the outputs into numpy arrays (with progress), "lazy" returns dask
        arrays that compute what napari shows, "zarr" writes to ``store`` (resumable) and
        returns lazy views of it. "auto": memory up to 1 GiB of outputs, else lazy.
    store : path-like, optional
        The zarr store for ``output="zarr"``.
    overwrite : bool
        Replace an existing store (never a folder that is not a zarr store).

    Returns
    -------
    list of tuple
        One ``(array, kwargs, "image")`` per model output, named "<output> (<model>)", with
        ``scale`` dividing the input's pixel size by the model's scale factor (so outputs
        overlay the input and the ground truth) and ``metadata["im2im_uq"]`` naming the
        model, its sha256, the input layer and the sibling outputs of the same run.

    Examples
    --------
    >>> import numpy as np
    >>> layers = predict("tem-sr4x-quantile", np.zeros((40, 40), np.float32), device="cpu")
    >>> [(kw["name"], data.shape, kw["scale"]) for data, kw, _ in layers][0]
    ('prediction (tem-sr4x-quantile)', (160, 160), (0.25, 0.25))
    """
    return run_to_end(predict_job(model, image, **kwargs), callback=_steps(progress))


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
    meta = _meta(prediction)
    if meta.get("role") != "output":
        raise ValueError(
            "prediction must be an output layer made by the plugin's predict (its metadata "
            f"names the model run); got the layer {_name(prediction, '?')!r}"
        )
    run = meta["run"]
    found = {}
    for ly in layers:
        m = _meta(ly)
        if m.get("role") == "output" and m.get("run") == run:
            found[m["output"]] = ly
    # A mask model's prediction came from another run: the mask's input layer.
    if "mask" in found and "prediction" not in found:
        pname = meta.get("prediction_layer")
        match = [ly for ly in layers if ly.name == pname]
        if match:
            found["prediction"] = match[0]
    return found


# ---------------------------------------------------------------------------------------------
# tiles


def _check_tile_shape(tile_shape) -> tuple[int, int]:
    try:
        th, tw = (int(v) for v in tile_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"tile_shape must be two positive integers (rows, columns); got {tile_shape!r}"
        ) from None
    if th < 1 or tw < 1:
        raise ValueError(f"tile_shape must be two positive integers; got {tile_shape!r}")
    return th, tw


def _rectangles(regions, ndim: int, scale, translate) -> list[tuple]:
    """``[(plane or None, r0, r1, c0, c1)]`` inclusive-exclusive pixel boxes in data coords."""
    if regions is None:
        return []
    if _is_layer(regions):
        shapes = list(regions.data)
        types = list(getattr(regions, "shape_type", ["rectangle"] * len(shapes)))
        r_scale = np.asarray(regions.scale, float)
        r_translate = np.asarray(regions.translate, float)
    else:
        shapes = [np.asarray(r, float) for r in regions]
        types = ["rectangle"] * len(shapes)
        r_scale = r_translate = None
    boxes = []
    for i, (verts, kind) in enumerate(zip(shapes, types)):
        verts = np.asarray(verts, dtype=float)
        if kind != "rectangle":
            raise ValueError(
                f"regions must hold rectangles; shape {i} is a {kind}. Draw rectangles where "
                "ground truth exists"
            )
        if r_scale is not None:  # layer data coords -> world -> the image's data coords
            verts = verts * r_scale[-verts.shape[1]:] + r_translate[-verts.shape[1]:]
        k = verts.shape[1]
        verts = (verts - translate[-k:]) / scale[-k:]
        plane = None
        if k == 3 and ndim == 3:
            plane = int(round(float(verts[:, 0].mean())))
        elif k not in (2, 3):
            raise ValueError(f"regions must be 2-D or 3-D rectangles; shape {i} has {k} axes")
        rows, cols = verts[:, -2], verts[:, -1]
        # pixels whose centre lies inside the rectangle
        r0, r1 = math.ceil(rows.min() - 1e-9), math.floor(rows.max() + 1e-9) + 1
        c0, c1 = math.ceil(cols.min() - 1e-9), math.floor(cols.max() + 1e-9) + 1
        boxes.append((plane, r0, r1, c0, c1))
    return boxes


def calibration_tiles(shape, tile_shape, *, regions=None, scale=None, translate=None):
    """Non-overlapping calibration tiles inside the labeled regions (or the whole image).

    Each rectangle is cut into a grid of whole tiles from its corner (partial tiles at its
    far edges are left out); tiles that overlap a tile already taken from an earlier rectangle
    are skipped, so no pixel is counted twice.

    Parameters
    ----------
    shape : tuple of int
        (rows, columns) or (planes, rows, columns) of the image the tiles are cut from.
    tile_shape : (int, int)
    regions : napari Shapes layer or list of (4, 2) / (4, 3) arrays, optional
        Rectangles where ground truth exists, in world coordinates for a layer (converted
        with ``scale`` and ``translate`` of the image) and in the image's pixel coordinates
        for arrays. A 2-D rectangle on a 3-D image applies to every plane; a 3-D one to its
        plane. A pixel is inside when its centre is.
    scale, translate : sequence of float, optional
        The image layer's geometry (default: pixel coordinates).

    Returns
    -------
    ndarray of int, shape (n, 3)
        (plane, row, column) of each tile's first pixel (plane 0 for a 2-D image).

    Examples
    --------
    >>> calibration_tiles((100, 130), (32, 32)).shape
    (12, 3)
    >>> rect = np.array([[0, 0], [0, 70], [40, 70], [40, 0]], float)
    >>> calibration_tiles((100, 130), (16, 16), regions=[rect]).tolist()
    [[0, 0, 0], [0, 0, 16], [0, 0, 32], [0, 0, 48], [0, 16, 0], [0, 16, 16], [0, 16, 32], [0, 16, 48]]
    """
    th, tw = _check_tile_shape(tile_shape)
    shape = tuple(int(v) for v in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be (rows, columns) or (planes, rows, columns); got {shape}")
    planes = shape[0] if len(shape) == 3 else 1
    rows, cols = shape[-2:]
    ndim = len(shape)
    scale = np.ones(ndim) if scale is None else np.asarray(scale, float)[-ndim:]
    translate = np.zeros(ndim) if translate is None else np.asarray(translate, float)[-ndim:]
    boxes = _rectangles(regions, ndim, scale, translate)
    if regions is None:
        boxes = [(None, 0, rows, 0, cols)]
    taken: dict[int, list] = {}
    out = []
    for plane, r0, r1, c0, c1 in boxes:
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, rows), min(c1, cols)
        for z in range(planes) if plane is None else [plane]:
            if not 0 <= z < planes:
                continue
            for r in range(r0, r1 - th + 1, th):
                for c in range(c0, c1 - tw + 1, tw):
                    if any(r < rr + th and rr < r + th and c < cc + tw and cc < c + tw
                           for rr, cc in taken.get(z, ())):
                        continue
                    taken.setdefault(z, []).append((r, c))
                    out.append((z, r, c))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def plan_tiles(image, *, tile_shape=(64, 64), n_tiles=20, seed=0, name=None):
    """Lay out a random, non-overlapping plan of calibration tiles as a Shapes layer tuple.

    Tiles are drawn uniformly without replacement from the grid of whole tiles of the image
    (every plane of a volume), so the tiles where ground truth is then acquired are an
    exchangeable sample of the grid's tiles: the population a calibration on them speaks
    about, by design, instead of by assumption about a hand-picked region.

    Parameters
    ----------
    image : layer or array-like
        The image on whose grid the tiles lie (the prediction, i.e. the ground truth's grid).
    tile_shape : (int, int)
    n_tiles : int
        Number of tiles (at most the number of grid tiles).
    seed : int
    name : str, optional

    Returns
    -------
    tuple
        ``(rectangles, kwargs, "shapes")`` in world coordinates of ``image``, one rectangle
        per tile whose edges follow its pixels' edges.

    Examples
    --------
    >>> data, kwargs, kind = plan_tiles(np.zeros((128, 128)), tile_shape=(32, 32), n_tiles=3)
    >>> len(data), data[0].shape, kind
    (3, (4, 2), 'shapes')
    """
    th, tw = _check_tile_shape(tile_shape)
    data = _data(image, "image")
    shape = tuple(data.shape[-3:]) if data.ndim >= 3 else tuple(data.shape)
    ndim = len(shape)
    grid = calibration_tiles(shape, (th, tw))
    if isinstance(n_tiles, bool) or not isinstance(n_tiles, int | np.integer) or n_tiles < 1:
        raise ValueError(f"n_tiles must be a positive integer; got {n_tiles!r}")
    if n_tiles > len(grid):
        raise ValueError(
            f"n_tiles must be at most the {len(grid)} whole tiles of {th} x {tw} in an image of "
            f"shape {shape}; got {n_tiles}"
        )
    pick = grid[np.sort(np.random.default_rng(seed).choice(len(grid), n_tiles, replace=False))]
    scale, translate = _geometry(image, ndim)
    rects = []
    for z, r, c in pick:
        rr = np.array([r, r, r + th, r + th], float) - 0.5
        cc = np.array([c, c + tw, c + tw, c], float) - 0.5
        verts = np.stack([rr, cc], axis=1)
        if ndim == 3:
            verts = np.concatenate([np.full((4, 1), float(z)), verts], axis=1)
        rects.append(verts * scale + translate)
    kwargs = {
        "name": name or f"calibration tile plan ({th} x {tw})",
        "shape_type": "rectangle",
        "edge_color": "yellow",
        "face_color": [0.0, 0.0, 0.0, 0.0],
        "edge_width": max(1.0, float(scale[-1]) * th / 32),
        "metadata": {META_KEY: {"role": "tile plan", "tile_shape": [th, tw], "seed": seed,
                                "n_tiles": int(n_tiles), "grid_tiles": len(grid)}},
    }
    return rects, kwargs, "shapes"


# ---------------------------------------------------------------------------------------------
# calibration


def _spatial(arr, key: str):
    """View an output with (planes, rows, columns) (probabilities: (classes, planes, ...))."""
    if key == "probabilities":
        return arr if arr.ndim == 4 else arr[:, None]
    return arr if arr.ndim == 3 else arr[None]


def _cut(arr, origins, th, tw, key):
    a = _spatial(arr, key)
    tiles = []
    for z, r, c in origins:
        if key == "probabilities":
            tiles.append(np.asarray(a[:, z, r:r + th, c:c + tw]))
        else:
            tiles.append(np.asarray(a[z, r:r + th, c:c + tw]))
    return np.stack(tiles)


#: How a trust-mask score is written in a record (and read back).
_SIGMA_LABEL = {"mask": "1 - mask"}
_SCORES = ("std", "residual", "width", "mask")


def _sigma_name(outputs, sigma) -> str:
    """Resolve the trust-mask score: "given" (an array), or one of :data:`_SCORES`."""
    if sigma is not None and not isinstance(sigma, str):
        return "given"
    choice = sigma or next(
        (k for k in _SCORES if k in outputs or (k == "width" and {"lower", "upper"} <= set(outputs))),
        None)
    if choice == "width" and not {"lower", "upper"} <= set(outputs):
        raise ValueError("sigma='width' needs the outputs 'lower' and 'upper'")
    if choice == "width" or (choice in _SCORES and choice in outputs):
        return choice
    raise ValueError(
        "sigma must name an output of the model ('std', 'residual', 'width' or 'mask') or be an "
        f"array; got {sigma!r} with outputs {sorted(outputs)}"
    )


def _sigma_of(arrays: dict, sigma, cut=lambda a, key: a):
    """Return the trust-mask score (``cut`` picks the tiles of each array read; default all)."""
    name = _sigma_name(arrays, sigma)
    if name == "given":
        return cut(_data(sigma, "sigma"), "sigma")
    if name == "width":
        return cut(arrays["upper"], "upper") - cut(arrays["lower"], "lower")
    if name == "mask":
        return 1.0 - cut(arrays["mask"], "mask")
    return cut(arrays[name], name)


def _record_sigma(record):
    """Return the score a record was calibrated with, as ``sigma=`` takes it (None: default)."""
    label = record.get("sigma")
    name = {v: k for k, v in _SIGMA_LABEL.items()}.get(label, label)
    return name if name in _SCORES else None


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` returns: the result, its record and the layers to show."""

    result: object
    record: dict
    layers: list = field(repr=False)
    tiles: np.ndarray = field(repr=False)


def _no_tiles(th, tw, grid_shape, unannotated=False):
    return ValueError(
        f"no whole {th} x {tw} tile fits inside the labeled regions"
        + (" (every tile is unannotated: label 0)" if unannotated else "")
        + f"; make the regions larger than the tile or the tile smaller (image {grid_shape})"
    )


def _collect(outputs, truth, method, tile_shape, regions, sigma):
    """Check inputs, choose tiles, cut them: ``(tiles dict, origins, geometry, info)``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if not isinstance(outputs, dict):
        raise ValueError(
            "outputs must be a dict of output name to layer or array (api.model_outputs gives "
            f"it for a prediction layer); got {type(outputs).__name__}"
        )
    missing = [k for k in NEEDS[method] if k not in outputs]
    if missing:
        hint = {"intervals": "a quantile, residual, gaussian or softmax model",
                "trust_mask": "any regression model", "mask": "the mask model (tem-sr4x-mask)",
                "segmentation": "a segmentation model (tem-membrane-seg)"}[method]
        raise ValueError(
            f"outputs must hold {list(NEEDS[method])} for method {method!r} (from {hint}); "
            f"missing {missing}, got {sorted(outputs)}"
        )
    th, tw = _check_tile_shape(tile_shape)
    key0 = NEEDS[method][0]
    ref_obj = outputs[key0]
    ref = _spatial(_data(ref_obj, key0), key0)
    grid_shape = tuple(ref.shape[-3:])
    arrays = {k: _data(v, k) for k, v in outputs.items()}
    truth_data = _data(truth, "truth")
    ref_shape = grid_shape if _data(ref_obj, key0).ndim - (key0 == "probabilities") == 3 \
        else grid_shape[1:]
    if tuple(truth_data.shape[-2:]) != grid_shape[-2:] or (
            truth_data.ndim == 3 and truth_data.shape[0] != grid_shape[0]):
        raise ValueError(
            f"truth must be on the prediction's grid: shape {ref_shape}; got shape "
            f"{tuple(truth_data.shape)}"
        )
    truth3 = truth_data if truth_data.ndim == 3 else truth_data[None]
    ndim_img = _data(ref_obj, key0).ndim - (1 if key0 == "probabilities" else 0)
    scale, translate = _geometry(ref_obj, ndim_img)
    origins = calibration_tiles(grid_shape if ndim_img == 3 else grid_shape[1:], (th, tw),
                                regions=regions, scale=scale, translate=translate)
    if ndim_img == 2:
        origins[:, 0] = 0
    tiles = {}
    if len(origins) == 0:
        raise _no_tiles(th, tw, grid_shape)
    if method == "segmentation":
        lab = _cut(truth3, origins, th, tw, "labels").astype(np.int64)
        if lab.size and lab.min() < 0:
            raise ValueError(f"truth labels must be >= 0 (0 = not annotated); got {lab.min()}")
        keep = (lab > 0).any(axis=(1, 2))
        origins, lab = origins[keep], lab[keep]
        if len(origins) == 0:
            raise _no_tiles(th, tw, grid_shape, unannotated=True)
        tiles["labels"] = lab - 1  # label k + 1 is class k; 0 (not annotated) becomes -1
        tiles["scores"] = _cut(arrays["probabilities"], origins, th, tw, "probabilities")
        k = tiles["scores"].shape[1]
        if lab.size and lab.max() > k:
            raise ValueError(
                f"truth labels must be 0 (not annotated) or 1..{k} (class k - 1 of the model's "
                f"{k} classes); got the label {int(lab.max())}"
            )
    else:
        tiles["truth"] = _cut(truth3, origins, th, tw, "truth").astype(np.float32)
        tiles["prediction"] = _cut(arrays["prediction"], origins, th, tw, "prediction")
        if method == "intervals":
            tiles["lower"] = _cut(arrays["lower"], origins, th, tw, "lower")
            tiles["upper"] = _cut(arrays["upper"], origins, th, tw, "upper")
        elif method == "trust_mask":
            tiles["sigma"] = _sigma_of(arrays, sigma,
                                       cut=lambda a, key: _cut(a, origins, th, tw, key))
        else:
            tiles["mask_scores"] = _cut(arrays["mask"], origins, th, tw, "mask")
    return tiles, origins, (scale, translate, ndim_img)


def _data_range(outputs, data_range):
    if data_range is not None:
        return tuple(float(v) for v in data_range)
    for v in outputs.values():
        rng = _meta(v).get("model", {}).get("output_range")
        if rng:
            return tuple(float(x) for x in rng)
    return None


def _run_calibration(method, tiles, *, alpha, delta, rule, bound, beta, distance, data_range,
                     seed):
    from . import calibration as cal

    rule = rule or RULES[method][0]
    if rule not in RULES[method]:
        raise ValueError(f"rule must be one of {RULES[method]} for method {method!r}; got {rule!r}")
    if method == "intervals":
        return cal.calibrate_intervals(tiles["prediction"], tiles["lower"], tiles["upper"],
                                       tiles["truth"], alpha=alpha, delta=delta, rule=rule,
                                       bound=bound, seed=seed)
    if method == "trust_mask":
        if data_range is None:
            raise ValueError(
                "data_range must be given for a trust mask (the model declares no output range): "
                "B, the largest possible error, is derived from it"
            )
        return cal.calibrate_trust_mask(tiles["sigma"], tiles["prediction"], tiles["truth"],
                                        alpha=alpha, data_range=data_range)
    if method == "mask":
        return cal.calibrate_mask(tiles["mask_scores"], tiles["prediction"], tiles["truth"],
                                  alpha=alpha, beta=beta, distance=distance, rule=rule,
                                  data_range=data_range)
    return cal.calibrate_segmentation(tiles["scores"], tiles["labels"], alpha=alpha,
                                      ignore_label=-1, rule=rule, delta=delta, bound=bound,
                                      seed=seed)


def _level(result) -> float:
    return float(1 - result.beta) if result.rule in ("conformal", "paper") else float(result.alpha)


def _world_tiles(origins, th, tw, scale, translate, ndim):
    out = []
    for z, r, c in origins:  # pixel edges; a plane spans [z - 0.5, z + 0.5]
        lo = np.array([z - 0.5, r - 0.5, c - 0.5])[-ndim:] * scale + translate
        hi = np.array([z + 0.5, r + th - 0.5, c + tw - 0.5])[-ndim:] * scale + translate
        out.append([float(v) for v in np.r_[lo, hi]])
    return out


def _record(result, outputs, truth, origins, geometry, tile_shape, extra=None):
    from . import __version__

    scale, translate, ndim = geometry
    model = next((_meta(v).get("model") for v in outputs.values() if _meta(v).get("model")), None)
    pred = outputs.get("prediction", next(iter(outputs.values())))
    return {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "calibration": result.to_dict(),
        "guarantee": result.guarantee,
        "model": model,
        "prediction_layer": _name(pred, None),
        "truth_layer": _name(truth, None),
        "tile_shape": list(tile_shape),
        "tiles_world": _world_tiles(origins, *tile_shape, scale, translate, ndim),
        "tiles_note": "each tile as [start..., stop...] world coordinates of its pixel edges "
                      "((planes,) rows, columns)",
        "scale": [float(v) for v in scale],
        "translate": [float(v) for v in translate],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package": f"napari-im2im-uq {__version__}",
        **(extra or {}),
    }


def _result_layers(result, record, outputs, *, sigma=None, show_bounds=False):
    """Apply a result to whole outputs and style the layers."""
    arrays = {k: _data(v, k) for k, v in outputs.items()}
    ref_key = NEEDS[result.method][0]
    ref_obj = outputs[ref_key]
    scale_full = np.asarray(getattr(ref_obj, "scale", np.ones(arrays[ref_key].ndim)), float)
    trans_full = np.asarray(getattr(ref_obj, "translate", np.zeros(arrays[ref_key].ndim)), float)
    if ref_key == "probabilities":
        scale_full, trans_full = scale_full[1:], trans_full[1:]
    model = (record.get("model") or {}).get("name", "model")
    meta = {META_KEY: {"role": "calibrated", "record": record}}
    geom = {"scale": tuple(float(v) for v in scale_full),
            "translate": tuple(float(v) for v in trans_full)}
    out = []
    if result.method == "intervals":
        lo, up = result.intervals(arrays["prediction"], arrays["lower"], arrays["upper"])
        width = (up - lo).astype(np.float32)
        hi = float(np.nanpercentile(np.asarray(width[..., ::4, ::4]), 99)) or 1.0
        out.append((width, {"name": f"interval width ({model})", "colormap": HEAT_COLORMAP,
                            "contrast_limits": (0.0, hi), "blending": "additive",
                            "opacity": 0.7, "metadata": meta, **geom}, "image"))
        if show_bounds:
            for key, arr in (("lower", lo), ("upper", up)):
                out.append((arr.astype(np.float32),
                            {"name": f"calibrated {key} ({model})", "colormap": "gray",
                             "visible": False, "metadata": meta, **geom}, "image"))
    elif result.method == "trust_mask":
        sig = _sigma_of(arrays, sigma if sigma is not None else _record_sigma(record))
        untrusted = (~np.asarray(result.trust_mask(sig), dtype=bool)).astype(np.uint8)
        out.append((untrusted, {"name": f"untrusted ({model})", **untrusted_style(),
                                "metadata": meta, **geom}, "image"))
    elif result.method == "mask":
        m = np.asarray(result.mask(arrays["mask"]), dtype=np.float32)
        out.append((m, {"name": f"calibrated mask ({model})", "colormap": "viridis",
                        "contrast_limits": (0.0, 1.0), "opacity": 0.6, "metadata": meta, **geom},
                    "image"))
    else:
        scores = np.asarray(arrays["probabilities"])  # (K, planes, rows, cols) or (K, rows, cols)
        k = scores.shape[0]
        per_plane = np.moveaxis(scores if scores.ndim == 4 else scores[:, None], 0, 1)
        sets = np.asarray(result.prediction_sets(per_plane))  # planes as tiles: (Z, K, Y, X)
        var = np.asarray(result.varisco(per_plane), dtype=np.float32)
        size = sets.sum(axis=1).astype(np.uint8)
        if scores.ndim == 3:
            size, var = size[0], var[0]
        seg = (scores.argmax(axis=0) + 1).astype(np.uint8)
        out.append((seg, {"name": f"segmentation ({model})", "opacity": 0.4, "metadata": meta,
                          **geom}, "labels"))
        out.append((size, {"name": f"prediction set size ({model})", "colormap": HEAT_COLORMAP,
                           "contrast_limits": (0.0, float(k)), "opacity": 0.6, "metadata": meta,
                           **geom}, "image"))
        out.append((var, {"name": f"varisco ({model})", "colormap": HEAT_COLORMAP,
                          "contrast_limits": (0.0, 1.0), "opacity": 0.7, "visible": False,
                          "metadata": meta, **geom}, "image"))
    return out


def untrusted_style() -> dict:
    """Layer kwargs of the trust-mask overlay: untrusted pixels in magenta, the rest clear."""
    return {
        "colormap": {"colors": [[0.0, 0.0, 0.0, 0.0], list(UNTRUSTED_RGBA)],
                     "name": "im2im-uq untrusted"},
        "contrast_limits": (0.0, 1.0),
        "opacity": 0.5,
        "blending": "translucent",
        "interpolation2d": "nearest",
    }


def calibrate_job(outputs, truth, *, method="intervals", alpha=0.1, delta=0.1, rule=None,
                  bound="hoeffding_bentkus", beta=0.9, tile_shape=(64, 64), regions=None,
                  sigma=None, distance="l1", data_range=None, seed=0, show_bounds=False):
    """Calibrate as a generator (see :func:`calibrate`): yields ``(step, 3)``."""
    yield 0, 3
    tiles, origins, geometry = _collect(outputs, truth, method, tile_shape, regions, sigma)
    yield 1, 3
    rng_ = _data_range(outputs, data_range)
    result = _run_calibration(method, tiles, alpha=alpha, delta=delta, rule=rule, bound=bound,
                              beta=beta, distance=distance, data_range=rng_, seed=seed)
    yield 2, 3
    extra = {}
    if method == "trust_mask":
        name = _sigma_name(outputs, sigma)
        extra["sigma"] = _SIGMA_LABEL.get(name, name)
    truth_data = tiles["truth"] if "truth" in tiles else tiles["labels"] + 1  # labels as given
    extra["truth_range"] = [float(truth_data.min()), float(truth_data.max())]
    record = _record(result, outputs, truth, origins, geometry, _check_tile_shape(tile_shape),
                     extra)
    layers = _result_layers(result, record, outputs, sigma=sigma, show_bounds=show_bounds)
    yield 3, 3
    return Calibration(result=result, record=record, layers=layers, tiles=origins)


def calibrate(outputs, truth, *, progress=None, **kwargs) -> Calibration:
    """Calibrate a model's outputs on ground truth the user chose; return result and layers.

    Parameters
    ----------
    outputs : dict of str to layer or array
        The outputs of one prediction run by name (:func:`model_outputs` gives them for a
        layer): "prediction", "lower", "upper" for intervals; "prediction" and a score for a
        trust mask; "mask" and "prediction" for the mask method; "probabilities" for
        segmentation. (planes, rows, columns) or (rows, columns).
    truth : Image or Labels layer, or array
        Ground truth on the outputs' grid. For segmentation, labels where 0 means "not
        annotated" (ignored) and label k + 1 is the model's class k.
    method : {"intervals", "trust_mask", "mask", "segmentation"}
    alpha, delta, beta : float
        Risk level, RCPS error level, and the mask method's probability of a good tile.
    rule : str, optional
        "rcps" or "crc" (intervals, segmentation), "conformal", "crc" or "paper" (mask);
        default the first.
    bound : {"hoeffding_bentkus", "hoeffding", "wsr"}
        The RCPS bound.
    tile_shape : (int, int)
        Calibration tile in output pixels: the unit the guarantee speaks about.
    regions : Shapes layer or list of rectangles, optional
        Where ground truth exists (default: everywhere).
    sigma : str or array, optional
        Trust mask score: "std", "residual", "width" (upper - lower) or "mask" (1 - mask);
        default the first the model has.
    distance : {"l1", "l2", "ssim"}
        The mask method's distance.
    data_range : (float, float), optional
        Declared range of the data (default: the model's output range); B of the trust mask.
    seed : int
        The WSR order.
    show_bounds : bool
        Also return the calibrated lower and upper bounds (intervals).
    progress : callable, optional
        Called with ``(step, 3)``.

    Returns
    -------
    Calibration
        ``result`` (:class:`~napari_im2im_uq.calibration.CalibrationResult`), ``record`` (a
        JSON-ready dict: the result, the model name and sha256, the tiles in world
        coordinates, the data range), ``layers`` (tuples carrying the record in
        ``metadata["im2im_uq"]["record"]``) and ``tiles`` (their (plane, row, column)).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((128, 128)).astype(np.float32)
    >>> f = truth + 0.05 * rng.standard_normal(truth.shape).astype(np.float32)
    >>> out = {"prediction": f, "lower": f - 0.05, "upper": f + 0.05}
    >>> cal = calibrate(out, truth, method="intervals", alpha=0.2, rule="crc", tile_shape=(16, 16))
    >>> cal.result.n, [kw["name"] for _, kw, _ in cal.layers]
    (64, ['interval width (model)'])
    """
    return run_to_end(calibrate_job(outputs, truth, **kwargs), callback=_steps(progress))


def apply_record(record, outputs, *, show_bounds=False) -> list:
    """Apply a saved calibration record to new outputs of the same model; return layer tuples.

    Parameters
    ----------
    record : dict, path-like or layer
        A record (:func:`load_record`, a calibrated layer's metadata, or a JSON file).
    outputs : dict of str to layer or array
    show_bounds : bool

    Returns
    -------
    list of tuple
    """
    from .calibration import CalibrationResult

    record = _as_record(record)
    result = CalibrationResult.from_dict(record["calibration"])
    model = record.get("model") or {}
    for v in outputs.values():
        other = _meta(v).get("model", {})
        if model.get("sha256") and other.get("sha256") and other["sha256"] != model["sha256"]:
            warnings.warn(
                f"the record was calibrated for model {model.get('name')} "
                f"(sha256 {model['sha256'][:12]}); these outputs come from {other.get('name')} "
                f"(sha256 {other['sha256'][:12]}): the guarantee does not carry over",
                Im2ImUQWarning, stacklevel=2,
            )
            break
    return _result_layers(result, record, outputs, show_bounds=show_bounds)


def self_check(outputs, truth, *, method="intervals", alpha=0.1, delta=0.1, rule=None,
               bound="hoeffding_bentkus", beta=0.9, tile_shape=(64, 64), regions=None, sigma=None,
               distance="l1", data_range=None, seed=0) -> dict:
    """Calibrate on a random half of the labeled tiles and measure the risk on the other half.

    A warning (:class:`~napari_im2im_uq.Im2ImUQWarning`) is issued when the held-out risk is
    above the target level: then the labeled tiles are not a good sample of one population
    (e.g. a region unlike the rest), or the half is too small to say.

    Parameters
    ----------
    outputs, truth
        As for :func:`calibrate`.
    method, alpha, delta, rule, bound, beta, tile_shape, regions, sigma, distance, data_range
        As for :func:`calibrate`.
    seed : int
        Seed of the split (and of the WSR order).

    Returns
    -------
    dict
        "n_calibration", "n_test", "test_risk" (mean held-out loss; for the mask method's
        conformal rule, the fraction of tiles above alpha), "level", "passed", "message",
        and "result" (the half-calibration).
    """
    from .calibration.evaluation import held_out_losses

    tiles, _, _ = _collect(outputs, truth, method, tile_shape, regions, sigma)
    n = len(next(iter(tiles.values())))
    if n < 4:
        raise ValueError(
            f"the labeled regions hold {n} whole tiles; a self-check needs at least 4 (2 to "
            "calibrate, 2 to test): label more or use smaller tiles"
        )
    perm = np.random.default_rng(seed).permutation(n)
    cal_idx, test_idx = perm[: n // 2], perm[n // 2:]
    cal_tiles = {k: v[cal_idx] for k, v in tiles.items()}
    test_tiles = {k: v[test_idx] for k, v in tiles.items()}
    result = _run_calibration(method, cal_tiles, alpha=alpha, delta=delta, rule=rule,
                              bound=bound, beta=beta, distance=distance,
                              data_range=_data_range(outputs, data_range), seed=seed)
    losses = held_out_losses(result, **test_tiles)
    risk = float(np.mean(losses))
    level = _level(result)
    se = float(np.std(losses, ddof=1) / math.sqrt(len(losses))) if len(losses) > 1 else float("nan")
    passed = risk <= level
    what = "fraction of test tiles above alpha" if result.rule in ("conformal", "paper") \
        else "mean held-out loss"
    message = (
        f"Calibrated on {len(cal_idx)} tiles, tested on {len(test_idx)}: {what} = {risk:.4g} "
        f"(standard error {se:.2g}), target <= {level:g}. "
        + ("Consistent with the guarantee." if passed else
           "ABOVE the target: the labeled tiles may not be one population (or the test half "
           "is small); acquire ground truth on a random tile plan.")
    )
    if not passed:
        warnings.warn(message, Im2ImUQWarning, stacklevel=2)
    return {"n_calibration": int(len(cal_idx)), "n_test": int(len(test_idx)), "test_risk": risk,
            "standard_error": se, "level": level, "passed": bool(passed), "message": message,
            "result": result}


# ---------------------------------------------------------------------------------------------
# records


def _as_record(source) -> dict:
    if isinstance(source, dict):
        rec = source
    elif _is_layer(source):
        rec = _meta(source).get("record")
        if rec is None:
            raise ValueError(
                f"the layer {source.name!r} carries no calibration record (calibrate first, or "
                "choose a layer made by Calibrate)"
            )
    elif isinstance(source, str | Path):
        return load_record(source)
    else:
        raise ValueError(
            "record must be a dict, a path to a saved record or a calibrated layer; got "
            f"{type(source).__name__}"
        )
    if rec.get("format") != RECORD_FORMAT:
        raise ValueError(f"record must be a {RECORD_FORMAT!r}; got format {rec.get('format')!r}")
    return rec


def save_record(source, path) -> str:
    """Save a calibration record (from a calibrated layer, a Calibration or a dict) as JSON.

    Never overwrites a file that is not a calibration record.

    Returns
    -------
    str
        The path written.
    """
    if isinstance(source, Calibration):
        source = source.record
    rec = _as_record(source)
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"path must end in .json; got {str(path)!r}")
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            ours = isinstance(old, dict) and old.get("format") == RECORD_FORMAT
        except (ValueError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise FileExistsError(f"{path} exists and is not a calibration record: not overwritten")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, allow_nan=False), encoding="utf-8")
    tmp.replace(path)
    return str(path)


def load_record(path) -> dict:
    """Read a saved calibration record (checked: it must parse back into a result)."""
    from .calibration import CalibrationResult

    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"path must be a readable JSON calibration record; {path}: {err}") from None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise ValueError(f"path must be a {RECORD_FORMAT!r}; {path} is not one")
    CalibrationResult.from_dict(rec["calibration"])
    return rec


def record_layer(record, *, name=None):
    """Return a Shapes layer tuple of a record's calibration tiles, carrying the record."""
    rec = _as_record(record)
    rects = []
    for t in rec.get("tiles_world", []):
        k = len(t) // 2
        lo, hi = np.array(t[:k]), np.array(t[k:])
        r = np.array([[lo[-2], lo[-1]], [lo[-2], hi[-1]], [hi[-2], hi[-1]], [hi[-2], lo[-1]]])
        if k == 3:  # the rectangle lies in its plane's centre
            r = np.concatenate([np.full((4, 1), 0.5 * (lo[0] + hi[0])), r], axis=1)
        rects.append(r)
    cal = rec["calibration"]
    model = (rec.get("model") or {}).get("name", "model")
    kwargs = {
        "name": name or f"calibration record: {cal['method']} ({model})",
        "shape_type": "rectangle",
        "edge_color": "cyan",
        "face_color": [0.0, 0.0, 0.0, 0.0],
        "metadata": {META_KEY: {"role": "record", "record": rec}},
    }
    return rects, kwargs, "shapes"


# ---------------------------------------------------------------------------------------------
# diagnostics


def diagnose_job(record, outputs, truth, *, regions=None, tile_shape=None, n_splits=100, seed=0,
                 leave_out_calibration=True):
    """Diagnostics on held-out ground truth, as a generator (see :func:`diagnose`)."""
    from . import _diagnostics
    from .calibration import CalibrationResult

    rec = _as_record(record)
    result = CalibrationResult.from_dict(rec["calibration"])
    tile_shape = _check_tile_shape(tile_shape or rec.get("tile_shape", result.tile_shape[-2:]))
    tiles, origins, geometry = _collect(outputs, truth, result.method, tile_shape, regions,
                                        _record_sigma(rec))
    seen = _overlap_mask(_world_tiles(origins, *tile_shape, *geometry), rec.get("tiles_world", []))
    left_out = 0
    if leave_out_calibration and seen.any():
        left_out = int(seen.sum())
        if left_out == len(origins):
            raise ValueError(
                f"every one of the {len(origins)} tiles was used to calibrate: there is no "
                "held-out ground truth in these regions (choose other regions, or pass "
                "leave_out_calibration=False to measure on the calibration tiles anyway)"
            )
        tiles = {k: v[~seen] for k, v in tiles.items()}
        origins, seen = origins[~seen], seen[~seen]
    report = yield from _diagnostics.diagnose_tiles(result, tiles, n_splits=n_splits, seed=seed)
    report["tiles"] = origins
    report["calibration_tiles_left_out"] = left_out
    report["tiles_used_to_calibrate"] = used = int(seen.sum())
    if used:
        report["summary"].insert(0, (
            "NOT held out",
            f"{used} of the {len(origins)} tiles overlap the calibration tiles: their risk is "
            "optimistic; choose regions the calibration did not see"))
    elif left_out:
        report["summary"].insert(0, (
            "held out", f"{len(origins)} tiles ({left_out} calibration tiles left out)"))
    return report


def _overlap_mask(tiles, others) -> np.ndarray:
    """Return which boxes of ``tiles`` overlap a box of ``others`` ([start..., stop...])."""
    a = np.asarray(tiles, float).reshape(len(tiles), -1)
    if not len(others) or not len(a):
        return np.zeros(len(a), bool)
    b = np.asarray(others, float)
    if a.shape[1] != b.shape[1]:
        return np.zeros(len(a), bool)
    k = a.shape[1] // 2
    eps = 1e-9
    hit = np.ones((len(a), len(b)), bool)
    for j in range(k):
        hit &= (a[:, None, j] < b[None, :, k + j] - eps) & (b[None, :, j] < a[:, None, k + j] - eps)
    return hit.any(axis=1)


def diagnose(record, outputs, truth, *, progress=None, **kwargs) -> dict:
    """Compute the papers' metrics of a calibration on held-out ground truth.

    Parameters
    ----------
    record : dict, path or calibrated layer
        The calibration to diagnose.
    outputs, truth
        As for :func:`calibrate`: held-out ground truth, NOT the tiles used to calibrate.
    regions : Shapes layer or list of rectangles, optional
    tile_shape : (int, int), optional
        Default: the record's.
    n_splits : int
        Random calibration/test splits of the held-out tiles for the risk histogram.
    seed : int
    leave_out_calibration : bool
        Leave out the tiles that overlap the record's calibration tiles (default), so the
        measurement is on held-out ground truth; with False they are kept and the report says
        how many are not held out.
    progress : callable, optional

    Returns
    -------
    dict
        The report of ``napari_im2im_uq._diagnostics.diagnose_tiles`` plus "tiles".
    """
    return run_to_end(diagnose_job(record, outputs, truth, **kwargs),
                      callback=_steps(progress))
