"""The prediction job: a model over a layer or an array, outputs as layer-data tuples."""

from __future__ import annotations

import uuid

import numpy as np

from .. import layers
from .._jobs import run_to_end, steps_callback
from .._validation import check_bool

__all__ = ["MEMORY_LIMIT", "predict", "predict_job"]

#: In-memory prediction up to this many output bytes (all outputs, float32); lazy above.
MEMORY_LIMIT = 1 << 30


def _load_model(model, *, trust_code: bool = False):
    """Return a loaded model: an Im2ImModel as is, a name, folder or package from the one cache.

    ``trust_code`` lets a bioimage.io package's ``pytorch_state_dict`` architecture (its
    author's Python) run; without it such a package is refused with its own message, before
    any of its code runs.
    """
    if hasattr(model, "spec") and hasattr(model, "network"):
        return model
    import os

    if not isinstance(model, str | os.PathLike):
        raise ValueError(
            "model must be the name of a model in the zoo, a bundle folder or an Im2ImModel; "
            f"got {type(model).__name__}"
        )
    from ..models import load_cached

    return load_cached(model, trust_code=trust_code)


def _model_info(model) -> dict:
    """Describe the model as every output layer's metadata (and every record) names it.

    A model trained by ``training.train`` adds its ``training_regions`` (the regions of each
    target plane it trained and validated on), so calibration can refuse tiles inside them.
    """
    info = {
        "name": model.name,
        "sha256": model.sha256,
        "heuristic": model.heuristic,
        "scale_factor": int(model.scale_factor),
        "output_range": model.spec.get("output_range"),
    }
    if model.spec.get("training_regions") is not None:
        import copy

        info["training_regions"] = copy.deepcopy(model.spec["training_regions"])
    return info


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


def predict_job(model, image, *, second_image=None, prediction=None, axes=None, tile_shape=None,
                batch_size=None, device="auto", precision="auto", output="auto", store=None,
                overwrite=False, uncertainty=None, trust_code=False):
    """Predict every output of a model over an image, as a generator (see :func:`predict`).

    Yields ``(done_blocks, total_blocks)``; returns the list of layer-data tuples.
    """
    from ..inference import compute_outputs, make_plan, predict_to_zarr, watch_nonfinite
    from ..models import given_channels

    if output not in ("auto", "memory", "lazy", "zarr"):
        raise ValueError(f"output must be 'auto', 'memory', 'lazy' or 'zarr'; got {output!r}")
    if output == "auto" and store is not None:
        output = "zarr"
    if (output == "zarr") != (store is not None):
        raise ValueError(
            f"store must be given exactly when output is 'zarr'; got output={output!r}, "
            f"store={store!r}"
        )
    overwrite = check_bool(overwrite, "overwrite")
    trust_code = check_bool(trust_code, "trust_code")
    loaded = _load_model(model, trust_code=trust_code)
    data = layers.data_of(image, "image")
    if np.dtype(data.dtype).kind not in "biuf":
        raise ValueError(f"image must be a real numeric array; got dtype {data.dtype}")
    in_name = layers.name_of(image, "image")
    n_given = len(given_channels(loaded.spec))  # the bundle derives the others itself
    if second_image is not None:
        second = layers.data_of(second_image, "second_image")
        if tuple(second.shape) != tuple(data.shape):
            raise ValueError(
                f"second_image must have the shape of image {tuple(data.shape)}; got "
                f"{tuple(second.shape)}"
            )
        import dask.array as da

        stack_axis = data.ndim - 2  # before rows: (C, Y, X) or (Z, C, Y, X)
        data = da.stack([da.asarray(data), da.asarray(second)], axis=stack_axis)
    axes = _infer_axes(data.shape, n_given, axes)
    pred_data = None if prediction is None else layers.data_of(prediction, "prediction")
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
    in_scale, in_translate = layers.geometry(image, len(axes))
    in_scale, in_translate = in_scale[spatial], in_translate[spatial]
    s = int(loaded.scale_factor)
    out_scale = in_scale.copy()
    out_scale[-2:] /= s
    # An input pixel covers s x s output pixels: their centres lie inside it, not on its
    # centre (as in a zarr store's OME translation, inference._zarr._geometry).
    out_translate = in_translate.copy()
    out_translate[-2:] += in_scale[-2:] * (1.0 / s - 1.0) / 2.0
    options = dict(axes=axes, tile_shape=tile_shape, batch_size=batch_size, device=device,
                   precision=precision, prediction=pred_data, uncertainty=uncertainty)
    # NaN / inf in a lazy input: each block counts its own, one warning when the job ends
    # (an array in memory is checked, and warned about, before anything runs).
    units = None  # the preprocessing applied, with its statistics (not kept by a zarr run)
    uq_info = None if uncertainty is None else {"kind": uncertainty if isinstance(
        uncertainty, str) else dict(uncertainty).get("kind")}
    with watch_nonfinite() as nonfinite:
        if output == "zarr":  # planned once, there (a resumed store keeps its tiles)
            arrays = yield from predict_to_zarr(loaded, data, store, overwrite=overwrite,
                                                **options)
            import dask.array as da

            outs = {k: da.from_zarr(v) for k, v in arrays.items()}
        else:
            plan = make_plan(loaded, data, **options)
            outs, units = plan.outputs(), plan.units
            if plan.uncertainty is not None:
                uq_info = plan.uncertainty.describe()
            nbytes = sum(int(np.prod(o.shape)) * 4 for o in outs.values())
            if output == "auto":
                output = "memory" if nbytes <= MEMORY_LIMIT else "lazy"
            if output == "memory":
                outs = yield from compute_outputs(outs)
            else:
                yield 1, 1
    nonfinite.warn(in_name or "image")
    run = uuid.uuid4().hex
    info = _model_info(loaded)
    uq_kind = None if uq_info is None else uq_info["kind"]
    if uq_info is not None:  # the record's "model" states the uncertainty source
        info["uncertainty"] = uq_info
    names = {k: f"{k} ({loaded.name}{'' if uq_kind is None else ', ' + uq_kind})" for k in outs}
    tuples = []
    lo_hi = loaded.spec.get("output_range")
    for key, arr in outs.items():
        kwargs = layers.output_style(key)
        scale, translate = out_scale, out_translate
        if key == "probabilities":
            scale, translate = np.r_[1.0, scale], np.r_[0.0, translate]
        kwargs.update(
            name=names[key],
            scale=tuple(float(v) for v in scale),
            translate=tuple(float(v) for v in translate),
            metadata={layers.META_KEY: {
                "role": "output", "output": key, "model": info, "input_layer": in_name,
                "run": run, "outputs": names, "axes": axes, "storage": output,
                "uncertainty": uq_kind,
                "store": None if store is None else str(store),
                "prediction_layer": None if prediction is None else layers.name_of(prediction, None),
                "units": None if units is None else {k: units[k] for k in (
                    "dtype", "steps", "statistics_from", "observed_range")},
            }},
        )
        if key in ("prediction", "lower", "upper") and lo_hi:
            kwargs["contrast_limits"] = tuple(float(v) for v in lo_hi)
        elif key == "probabilities":
            kwargs["contrast_limits"] = (0.0, 1.0)
        tuples.append((arr, kwargs, "image"))
    return tuples


def predict(model, image, *, progress=None, **kwargs) -> list:
    """Run a model over an image (a layer or an array) and return its outputs as layer tuples.

    Parameters
    ----------
    model : str, path-like or Im2ImModel
        A zoo name (:func:`list_models`), a bundle folder, a bioimage.io package (its folder
        or zip) or a loaded model.
    image : napari Image layer or array-like
        Raw input in data units. A two-input model (QPI: top and bottom oblique images) takes
        a layer with a channel axis first (channels, rows, columns) or ``second_image``; the
        channels a bundle derives (the Tikhonov phase of ``qpi-dpc-quantile``) are computed
        by inference, lazily.
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
    uncertainty : str or dict, optional
        For a point-prediction model: "tta", "mc_dropout", ``{"kind": "ensemble", "models":
        [...]}`` or "constant" (see :func:`napari_im2im_uq.inference.predict`). The outputs
        are then prediction, lower, upper (and std, std_smoothed), named
        "<output> (<model>, <kind>)", with ``metadata["im2im_uq"]["uncertainty"]`` the kind
        and the model's description (hence the record's) stating the source.
    trust_code : bool
        bioimage.io packages only: let ``pytorch_state_dict`` weights run, whose architecture
        is Python code from the package's author. Without it such a package is refused (a
        ``BundleError`` saying so) before any of its code runs; give it only for a package
        whose author you trust. Its card (:func:`model_card`) is read without it.

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
    return run_to_end(predict_job(model, image, **kwargs), callback=steps_callback(progress))

