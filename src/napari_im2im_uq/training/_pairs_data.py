"""The user's training pairs: gathered from layers, arrays or files, their task, scale and units.

:func:`gather_pairs` turns what :func:`~napari_im2im_uq.training.train` was given into planes
(inputs ``(C, h, w)`` in raw units, targets ``(H, W)``); :func:`input_units` and
:func:`target_units` state the units the bundle declares; :func:`mask_pair` builds the
mask network's input from a base model (shared with the ``tem-sr4x-mask`` recipe).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import layers
from .._fingerprints import plane_fingerprints

__all__ = ["TASKS", "Pairs", "gather_pairs", "input_units", "mask_pair", "network_inputs",
           "target_units"]

#: The tasks of :func:`~napari_im2im_uq.training.train`.
TASKS = ("regression", "segmentation", "mask")
#: An integer target with at most this many distinct values is read as labels.
MAX_LABEL_VALUES = 16


@dataclass(frozen=True)
class Pairs:
    """Training planes: ``inputs[i]`` ``(C, h, w)`` raw, ``targets[i]`` ``(h s, w s)``."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    sources: list[str]
    fingerprints: list[str]
    task: str
    scale_factor: int


def _is_path(obj) -> bool:
    return isinstance(obj, str | os.PathLike)


def _items(obj, name: str) -> list[tuple[np.ndarray, str, bool]]:
    """``[(array, source, is_labels)]`` of a layer, an array or a list of them."""
    if isinstance(obj, list | tuple) and obj and all(
            layers.is_layer(o) or hasattr(o, "shape") for o in obj):
        parts = list(obj)
    else:
        parts = [obj]
    out = []
    for i, part in enumerate(parts):
        where = name if len(parts) == 1 else f"{name}[{i}]"
        data = layers.data_of(part, where)
        arr = np.asarray(data)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or arr.size == 0:
            raise ValueError(f"{where} must be a non-empty numeric array; got dtype {arr.dtype} "
                             f"and shape {arr.shape}")
        default = f"array {i}" if len(parts) > 1 else "array"
        out.append((arr, layers.name_of(part, default),
                    layers.is_layer(part) and layers.kind(part) == "labels"))
    return out


def _read_files(input, target) -> tuple[list, list, list[str]]:
    """Return the lists of arrays read from files by :func:`napari_im2im_uq.data.read_pairs`."""
    from .. import data

    reader = getattr(data, "read_pairs", None)
    if reader is None:
        raise ValueError(
            f"input must be a layer, an array or a list of them; got the path {input!r} "
            "(reading files needs napari_im2im_uq.data.read_pairs)"
        )
    got = reader(input, target)
    return list(got.inputs), list(got.targets), [str(s) for s in got.sources]


def infer_task(target_items, *, base_model) -> str:
    """"mask" without a target (and a base model), "segmentation" for labels, else "regression"."""
    if target_items is None:
        if base_model is None:
            raise ValueError("target must be given (the image to learn), unless base_model is "
                             "given to train its mask network; got target=None")
        return "mask"
    labels = all(is_labels or (np.issubdtype(arr.dtype, np.integer)
                               and np.unique(arr).size <= MAX_LABEL_VALUES)
                 for arr, _, is_labels in target_items)
    return "segmentation" if labels else "regression"


def _planes(x: np.ndarray, y: np.ndarray, where: str) -> tuple[list, list]:
    """Split one (input, target) pair into planes ``(C, h, w)`` and ``(H, W)``."""
    if y.ndim not in (2, 3):
        raise ValueError(f"target{where} must be 2-D (Y, X) or 3-D (Z, Y, X); got shape "
                         f"{y.shape}")
    if x.ndim == y.ndim:
        xs = [x[None]] if x.ndim == 2 else [p[None] for p in x]
    elif x.ndim == y.ndim + 1:
        xs = [x] if x.ndim == 3 else list(x)
    else:
        raise ValueError(
            f"input{where} must be (Y, X) or (C, Y, X) for a 2-D target, (Z, Y, X) or "
            f"(Z, C, Y, X) for a 3-D target; got input shape {x.shape} and target shape {y.shape}"
        )
    ys = [y] if y.ndim == 2 else list(y)
    if len(xs) != len(ys):
        raise ValueError(f"input{where} and target{where} must have as many planes; got "
                         f"{len(xs)} and {len(ys)} (shapes {x.shape} and {y.shape})")
    return xs, ys


def _scale(x: np.ndarray, y: np.ndarray, where: str) -> int:
    ratios = [b / a for a, b in zip(x.shape[-2:], y.shape[-2:], strict=True)]
    s = ratios[0]
    if s != ratios[1] or s < 1 or s != int(s):
        raise ValueError(
            f"target{where} rows and columns must be the same whole multiple of input{where}'s "
            f"(the scale factor); got input {x.shape[-2:]} and target {y.shape[-2:]}"
        )
    return int(s)


def gather_pairs(input, target, *, task=None, base_model=None, scale_factor=None) -> Pairs:
    """Planes of the training pairs, with the task and scale factor inferred or checked.

    For the mask task without ``target``, ``input`` is the truth on the base model's output
    grid and the base model's input is its nearest down-sampling ``[::s, ::s]`` (how the zoo's
    super-resolution models were trained).
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None; got {task!r}")
    if _is_path(input) and target is None:  # the mask network's truth, read from files
        from ..data import read_images

        arrays, names = read_images(input, name="input")
        x_items = [(np.asarray(a), str(n), False) for a, n in zip(arrays, names, strict=True)]
        y_items = None
    elif _is_path(input) or _is_path(target):
        if not (_is_path(input) and _is_path(target)):
            raise ValueError("input and target must both be paths (files or folders) or "
                             f"neither; got {type(input).__name__} and {type(target).__name__}")
        inputs, targets, file_sources = _read_files(input, target)
        x_items = [(np.asarray(a), s, False) for a, s in zip(inputs, file_sources, strict=True)]
        y_items = [(np.asarray(a), s, False) for a, s in zip(targets, file_sources, strict=True)]
    else:
        x_items = _items(input, "input")
        y_items = None if target is None else _items(target, "target")
    inferred = infer_task(y_items, base_model=base_model)
    task = task or inferred
    if task == "mask" and base_model is None:
        raise ValueError("task 'mask' needs base_model (the model whose errors the mask learns);"
                         " got base_model=None")
    if task != "mask" and y_items is None:
        raise ValueError(f"target must be given for task {task!r}; got target=None")
    if y_items is None:  # mask: the input is the truth; the base model sees it down-sampled
        s = int(base_model.scale_factor)
        if s == 1:
            raise ValueError(
                "target must be given for the mask network of a model with scale_factor 1 (the "
                "input is then the model's input and the target the truth); got target=None")
        y_items = x_items
        x_items = [(arr[..., ::s, ::s], src, False) for arr, src, _ in y_items]
    if len(x_items) != len(y_items):
        raise ValueError(f"input and target must hold as many images; got {len(x_items)} and "
                         f"{len(y_items)}")
    inputs, targets, sources, prints = [], [], [], []
    scales = set()
    for i, ((x, _, _), (y, ysrc, _)) in enumerate(zip(x_items, y_items, strict=True)):
        where = "" if len(x_items) == 1 else f"[{i}]"
        xs, ys = _planes(x, y, where)
        scales.add(_scale(xs[0], ys[0], where))
        src = ysrc
        inputs += xs
        targets += ys
        prints += plane_fingerprints(y)
        sources += [src] if y.ndim == 2 else [f"{src}, plane {z}" for z in range(y.shape[0])]
    if len(scales) != 1:
        raise ValueError(f"every pair must have the same scale factor; got {sorted(scales)}")
    s = scales.pop()
    if scale_factor is not None and scale_factor != s:
        raise ValueError(f"scale_factor must match the shapes (target / input = {s}); got "
                         f"{scale_factor!r}")
    channels = {x.shape[0] for x in inputs}
    if len(channels) != 1:
        raise ValueError(f"input must have the same channels in every image; got {sorted(channels)}")
    for i, y in enumerate(targets):
        if task == "segmentation":
            if not (np.issubdtype(y.dtype, np.integer) and y.min() >= 0):
                raise ValueError(
                    f"target (plane {i}) must be integer labels >= 0 for segmentation (0 = not "
                    f"annotated, 1..K the classes); got dtype {y.dtype} and minimum {y.min()}")
        elif y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError(f"target (plane {i}, {sources[i]}) must be finite; it holds NaN or "
                             "infinite values")
        if y.dtype == bool:
            raise ValueError(f"target must be numeric (float values, or integer labels with 0 = "
                             f"not annotated); got dtype bool ({sources[i]})")
    return Pairs(inputs, targets, sources, prints, task, s)


# -- units ------------------------------------------------------------------------------------
def network_inputs(spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Raw ``(C, h, w)`` input -> what the network reads: preprocessing then normalisation.

    The same maps as :class:`~napari_im2im_uq.models.Im2ImModel` applies before its network.
    """
    from ..models._units import apply, resolve

    x4 = x[None]
    out = x4.astype(np.float32, copy=True)
    if spec.get("preprocessing"):
        units = resolve({k: v for k, v in spec.items() if k != "input_range"}, x4)
        out = apply(x4, units["ops"], channel_axis=1)
    norm = spec.get("normalization") or {"kind": "none"}
    n = out.shape[1]

    def per_channel(values):
        values = values if isinstance(values, list) else [values]
        return np.asarray(values * (n if len(values) == 1 else 1), np.float32).reshape(1, n, 1, 1)

    if norm["kind"] == "minmax":
        lo, hi = per_channel(norm["min"]), per_channel(norm["max"])
        out = (out - lo) / (hi - lo)
    elif norm["kind"] == "meanstd":
        out = (out - per_channel(norm["mean"])) / per_channel(norm["std"])
    return out[0].astype(np.float32, copy=False)


def _region_values(arrays, boxes_per_image, scale: int) -> list[np.ndarray]:
    """Values of each channel inside the boxes (target boxes; divided by ``scale`` for inputs)."""
    parts = []
    for arr, boxes in zip(arrays, boxes_per_image, strict=True):
        for r0, c0, r1, c1 in boxes:
            parts.append(arr[..., r0 // scale:r1 // scale, c0 // scale:c1 // scale]
                         .reshape(arr.shape[0] if arr.ndim == 3 else 1, -1))
    return parts


def input_units(inputs: list[np.ndarray], train_boxes, scale: int) -> dict[str, Any]:
    """Return the spec fields of the inputs: preprocessing, normalization, input_range.

    ``preprocessing``: integer dtypes by their range; ``normalization``: mean and std per
    channel of the train regions; ``input_range``: their range after preprocessing.
    """
    from ..models._units import apply, resolve

    spec: dict[str, Any] = {}
    if any(np.issubdtype(x.dtype, np.integer) for x in inputs):
        spec["preprocessing"] = [{"id": "scale_dtype_range"}]
    mapped = []
    for x in inputs:
        if "preprocessing" in spec:
            ops = resolve(spec, x[None])["ops"]
            mapped.append(apply(x, ops, channel_axis=0))
        else:
            mapped.append(x.astype(np.float32, copy=False))
    values = np.concatenate(_region_values(mapped, train_boxes, scale), axis=1).astype(np.float64)
    mean, std = values.mean(axis=1), values.std(axis=1)
    std = np.where(std > 0, std, 1.0)
    spec["normalization"] = {"kind": "meanstd", "mean": [round(float(v), 8) for v in mean],
                             "std": [round(float(v), 8) for v in std]}
    spec["input_range"] = [float(values.min()), float(values.max())]
    if spec["input_range"][1] <= spec["input_range"][0]:
        spec["input_range"][1] = spec["input_range"][0] + 1.0
    return spec


def target_units(targets: list[np.ndarray], train_boxes) -> dict[str, Any]:
    """``output_range``: the training targets' [min, max] (outputs come back in their units)."""
    values = np.concatenate([v.ravel() for v in _region_values(
        [t[None] for t in targets], train_boxes, 1)]).astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise ValueError(f"target must vary inside the training regions; every value there is "
                         f"{lo}")
    return {"output_range": [lo, hi]}


def mask_pair(base_model, x: np.ndarray, y: np.ndarray | None = None):
    """Return the mask network's input for one image (and the normalised truth).

    The base model's normalised input up-sampled to the output grid (bilinear), with its
    normalised prediction as the last channel (what ``Im2ImModel.predict_tensor`` feeds a mask
    network).

    Parameters
    ----------
    base_model : Im2ImModel
        The image-to-image model whose errors the mask learns.
    x : numpy.ndarray
        ``(h, w)`` or ``(C, h, w)`` input in raw units.
    y : numpy.ndarray, optional
        ``(h s, w s)`` truth in data units.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray or None)
        float32 ``(C + 1, h s, w s)`` network input and the normalised truth ``(h s, w s)``.
    """
    import torch
    import torch.nn.functional as F

    x3 = x[None] if x.ndim == 2 else x
    prediction = base_model(x3)["prediction"][0]
    spec = base_model.spec
    pre = network_inputs({k: spec.get(k) for k in ("preprocessing",) if spec.get(k)}, x3)
    xt = base_model.normalize_input(torch.from_numpy(np.ascontiguousarray(pre))[None])
    s = base_model.scale_factor
    up = F.interpolate(xt, scale_factor=s, mode="bilinear", align_corners=False)[0] if s > 1 \
        else xt[0]
    pn = base_model.normalize_target(torch.from_numpy(prediction))
    net_in = np.concatenate([up.numpy(), pn.numpy()[None]]).astype(np.float32)
    target = None if y is None else base_model.normalize_target(
        torch.from_numpy(np.ascontiguousarray(y))).numpy()
    return net_in, target
