"""Derived input channels: channels a bundle computes from the ones the user gives.

A bundle declares them in ``model.json``; each names a transform of this module's registry,
the given channels it reads and the transform's parameters::

    "input_channels": ["r1", "r2", "phase_tikhonov_r1r2"],
    "derived_channels": {
        "phase_tikhonov_r1r2": {"transform": "dpc_tikhonov", "from": ["r1", "r2"],
                                "directions": ["top", "bottom"]}
    }

The user gives the other channels (:func:`given_channels`); :func:`add_derived_channels`
appends the derived ones lazily, in the order of ``input_channels``. Inference does this
itself, so callers of :func:`~napari_im2im_uq.inference.predict` pass only the given channels.

numpy and dask only (the transforms import ``napari_im2im_uq.data`` when they run); reading a
spec here never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._errors import BundleError

__all__ = [
    "TRANSFORMS",
    "add_derived_channels",
    "check_derived",
    "derived_channels",
    "given_channels",
    "qpi_tikhonov_channel",
]


def qpi_tikhonov_channel(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Third input channel of ``qpi-dpc-quantile``: the two-image Tikhonov DPC phase.

    ``napari_im2im_uq.data.dpc_tikhonov(np.stack([r1, r2]), directions=("top", "bottom"))``
    with its defaults (the ``qpi_dpc_cells`` optics, ``reg=1e-2``), computed over the whole
    field of view (it is a global, FFT-based inversion) before tiles are cut.

    Examples
    --------
    >>> import numpy as np
    >>> qpi_tikhonov_channel(np.full((64, 64), 0.5), np.full((64, 64), 0.5)).shape
    (64, 64)
    """
    from ..data import dpc_tikhonov

    return dpc_tikhonov(np.stack([r1, r2]), directions=("top", "bottom"))


def _dpc_tikhonov(planes: np.ndarray, **params) -> np.ndarray:
    from ..data import dpc_tikhonov

    if "na_illumination" in params:
        params["na_illumination"] = tuple(params["na_illumination"])
    if "directions" in params:
        params["directions"] = tuple(params["directions"])
    return dpc_tikhonov(planes, **params)


def _check_dpc(name: str, entry: dict) -> None:
    directions = entry.get("directions", ["top", "bottom"])
    if not isinstance(directions, list) or len(directions) != len(entry["from"]):
        raise BundleError(
            f"derived_channels[{name!r}]['directions'] must list one direction per channel in "
            f"'from' ({len(entry['from'])}); got {directions!r}"
        )
    reg = entry.get("reg", 1e-2)
    if isinstance(reg, bool) or not isinstance(reg, int | float) or not math.isfinite(reg) or reg <= 0:
        raise BundleError(f"derived_channels[{name!r}]['reg'] must be a number > 0; got {reg!r}")


@dataclass(frozen=True)
class Transform:
    """A derived-channel transform of the registry.

    ``compute(planes, **params)`` maps ``(len(from), rows, columns)`` to ``(rows, columns)``;
    ``params`` are the parameters a bundle may set; ``check(name, entry)`` refuses bad values
    with a :class:`BundleError`.
    """

    compute: object
    params: tuple[str, ...]
    check: object


#: The registry: transform name -> :class:`Transform`. All are whole-plane transforms.
TRANSFORMS = {
    "dpc_tikhonov": Transform(
        compute=_dpc_tikhonov,
        params=("directions", "wavelength", "na_objective", "na_illumination", "pixel_size",
                "illumination", "led_pitch", "reg"),
        check=_check_dpc,
    ),
}


def derived_channels(spec: dict) -> dict:
    """Return the ``derived_channels`` of a spec (``{}`` when it declares none)."""
    return dict(spec.get("derived_channels") or {})


def given_channels(spec: dict) -> list[str]:
    """Return the names of the input channels the user gives: ``input_channels`` less the derived ones.

    Examples
    --------
    >>> from napari_im2im_uq.models import given_channels, read_spec
    >>> given_channels(read_spec("qpi-dpc-quantile"))
    ['r1', 'r2']
    """
    derived = derived_channels(spec)
    return [c for c in spec["input_channels"] if c not in derived]


def check_derived(spec: dict) -> None:
    """Check a spec's ``derived_channels``; raise :class:`BundleError` naming the problem."""
    if "derived_channels" not in spec:
        return
    derived = spec["derived_channels"]
    channels = spec["input_channels"]
    if not isinstance(derived, dict):
        raise BundleError(f"derived_channels must be a JSON object; got {derived!r}")
    given = [c for c in channels if c not in derived]
    if derived and not given:
        raise BundleError("derived_channels must leave at least one input channel to be given")
    for name, entry in derived.items():
        if name not in channels:
            raise BundleError(
                f"derived_channels names {name!r}, which is not in input_channels {channels}"
            )
        if not isinstance(entry, dict) or entry.get("transform") not in TRANSFORMS:
            raise BundleError(
                f"derived_channels[{name!r}] must be an object whose 'transform' is one of "
                f"{sorted(TRANSFORMS)}; got {entry!r}"
            )
        sources = entry.get("from")
        if not isinstance(sources, list) or not sources or any(s not in given for s in sources):
            raise BundleError(
                f"derived_channels[{name!r}]['from'] must list given input channels (of "
                f"{given}); got {sources!r}"
            )
        transform = TRANSFORMS[entry["transform"]]
        unknown = sorted(set(entry) - {"transform", "from", *transform.params})
        if unknown:
            raise BundleError(
                f"derived_channels[{name!r}] has unknown parameters {unknown} for transform "
                f"{entry['transform']!r}; known: {list(transform.params)}"
            )
        transform.check(name, entry)


def _plane_kernel(block: np.ndarray, *, transform: Transform, index: list[int], params: dict):
    """``(planes, given, rows, columns)`` -> ``(planes, 1, rows, columns)`` float32."""
    out = np.empty((block.shape[0], 1, *block.shape[2:]), dtype=np.float32)
    for z in range(block.shape[0]):
        out[z, 0] = transform.compute(block[z, index], **dict(params))
    return out


def add_derived_channels(spec: dict, data, axes: str):
    """Append the channels a spec derives to ``data``, lazily; return ``(array, axes)``.

    ``data`` holds the given channels (:func:`given_channels`, in that order) along the C of
    ``axes`` (C may be left out when one channel is given). The result is a dask array with
    every channel of ``input_channels`` in order, float32 (the given channels are cast to
    float32 first, as the transforms were applied in training), with the same axes (C added
    before Y when it was missing). Without derived channels ``(data, axes)`` come back as
    they are.

    The registered transforms are global: a Tikhonov deconvolution is an FFT over the whole
    field of view, so a pixel depends on every pixel of its plane and the transform cannot be
    cut into blocks with a halo. It stays lazy per whole plane instead: rows and columns are
    rechunked to their full extent, planes one per chunk, and ``map_blocks`` runs the
    transform plane by plane when a block of the prediction asks for it. A plane is thus
    computed in full once per task that needs it, and the tiles of the prediction are cut
    from it afterwards.

    Parameters
    ----------
    spec : dict
        A model's spec (``model.spec`` or :func:`read_spec`).
    data : array-like
        numpy, dask or zarr array of the given channels; never modified.
    axes : str
        As for :func:`~napari_im2im_uq.inference.predict`.

    Returns
    -------
    (dask.array.Array, str)

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.models import add_derived_channels, read_spec
    >>> spec = read_spec("qpi-dpc-quantile")
    >>> images = np.full((2, 2, 64, 64), 0.5, dtype=np.float32)  # Z, C (r1, r2), Y, X
    >>> arr, axes = add_derived_channels(spec, images, "ZCYX")
    >>> arr.shape, axes
    ((2, 3, 64, 64), 'ZCYX')
    """
    derived = derived_channels(spec)
    if not derived:
        return data, axes
    import dask.array as da

    given = given_channels(spec)
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    if "C" not in axes:
        position = axes.index("Y")
        arr = da.expand_dims(arr, position)
        axes = axes[:position] + "C" + axes[position:]
    if arr.shape[axes.index("C")] != len(given):
        raise ValueError(
            f"image must have the {len(given)} given channels {given} on its C axis (the model "
            f"derives {sorted(derived)} itself); got {arr.shape[axes.index('C')]}"
        )
    # (lead..., C, Y, X) with every other axis flattened into planes.
    order = [i for i, a in enumerate(axes) if a not in "CYX"] + [axes.index(a) for a in "CYX"]
    moved = arr.transpose(order).astype(np.float32)
    lead = moved.shape[:-3]
    planes = moved.reshape((-1, *moved.shape[-3:])) if lead else moved[None]
    planes = planes.rechunk((1, -1, -1, -1))
    by_name = {}
    for name in spec["input_channels"]:
        if name in derived:
            entry = derived[name]
            params = {k: v for k, v in entry.items() if k not in ("transform", "from")}
            by_name[name] = planes.map_blocks(
                _plane_kernel,
                transform=TRANSFORMS[entry["transform"]],
                index=[given.index(s) for s in entry["from"]],
                params=params,
                chunks=(1, 1, *planes.shape[-2:]),
                dtype=np.float32,
                meta=np.empty((0, 0, 0, 0), dtype=np.float32),
            )
        else:
            i = given.index(name)
            by_name[name] = planes[:, i : i + 1]
    full = da.concatenate([by_name[n] for n in spec["input_channels"]], axis=1)
    full = full.reshape((*lead, *full.shape[1:])) if lead else full[0]
    inverse = np.argsort(order)
    return full.transpose(list(inverse)), axes
