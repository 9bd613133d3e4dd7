"""bioimage.io model packages in and out, read and written with the field's own library.

A package is a folder holding its RDF (``rdf.yaml`` or ``bioimageio.yaml``) or the zip of one.
It is read and validated by ``bioimageio.spec`` (:mod:`._bioimageio_rdf`; never by a
hand-written YAML reader), with no download: a package that refers to a remote file is
refused, and the files it holds are checked against the SHA-256 the RDF states. Weights:
TorchScript and ONNX (onnxruntime) load directly; ``pytorch_state_dict`` needs the
architecture's Python source, code from the package's author, and is refused unless
``trust_code=True``.

Axes, halo, scale, tiling constraints (the minimum shape and step of the input) and pre/post-
processing come from the RDF. Input preprocessing becomes the model's ``preprocessing``
(applied to the whole image before tiling, so per-sample statistics are those of the image and
the tiled result equals the untiled one); output postprocessing runs pixel by pixel.

:func:`load_model` and :func:`load_cached` (the package's public ones) take bundles and
packages alike. :func:`export_bioimageio` writes a model of this package (or a point-only
U-Net) as a package the validator accepts, with test tensors, the card, licence and citation,
and, when given, the calibration record in ``config["napari-im2im-uq"]["record"]``; loading
the package restores it (``spec["record"]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ._bioimageio_rdf import (
    WEIGHT_FORMATS,
    _architecture,
    _load_descr,
    _read_file,
    _spec_lib,
    is_package,
    read_package_spec,
)
from ._errors import BundleError

__all__ = ["export_bioimageio", "load_cached", "load_model", "load_package"]


def load_model(name_or_path, *, device="cpu", search_paths=(), trust_code: bool = False):
    """Load a model bundle, or a bioimage.io package, safely.

    A bundle (zoo name or folder) is read by the bundle loader (json and safetensors only);
    a package (a folder with ``rdf.yaml``/``bioimageio.yaml``, or its zip) by
    :func:`load_package`, held in the model cache (a model on another ``device`` is a copy).

    Parameters
    ----------
    name_or_path : str or path-like
        A bundle folder, the name of a bundle in the zoo or in ``search_paths``, or a package.
    device : str or torch.device
        Where to put the network.
    search_paths : iterable of path-like
        Extra folders searched for named bundles.
    trust_code : bool
        Packages only: allow ``pytorch_state_dict`` weights, whose architecture is Python code
        from the package's author (refused without it, before any of it runs).

    Returns
    -------
    Im2ImModel

    Examples
    --------
    >>> load_model("tem-sr4x-quantile").output_names
    ('prediction', 'lower', 'upper')
    """
    if is_package(name_or_path):
        import torch

        model = load_package(name_or_path, trust_code=trust_code)
        if torch.device(device) != model.device:  # the cached model is never moved
            model = model._copy().to(device)
        return model
    from ._bundle import load_model as load_bundle

    return load_bundle(name_or_path, device=device, search_paths=search_paths)


def load_cached(name_or_path, *, search_paths=(), trust_code: bool = False):
    """Load a bundle or a package once per process, on the CPU in float32.

    As :func:`napari_im2im_uq.models._cache.load_cached` for bundles; a package is held under
    its path and the SHA-256 of its weights (``trust_code`` as for :func:`load_model`).

    Examples
    --------
    >>> load_cached("tem-sr4x-quantile") is load_cached("tem-sr4x-quantile")
    True
    """
    if is_package(name_or_path):
        return load_package(name_or_path, trust_code=trust_code)
    from ._cache import load_cached as cached_bundle

    return cached_bundle(name_or_path, search_paths=search_paths)


def load_package(path, *, trust_code: bool = False, weight_format: str | None = None):
    """Load a bioimage.io package as a model the tiled inference runs (a ``BioimageioModel``).

    The model is held in the process's model cache (keyed by the package and its weights), so
    a package loaded twice is read once and workers get it by its path.

    Parameters
    ----------
    path : str or path-like
        A folder with ``rdf.yaml`` / ``bioimageio.yaml``, or the zip of a package.
    trust_code : bool
        Allow ``pytorch_state_dict`` weights, whose architecture is Python code from the
        package's author. Without it such a package is refused before anything of it runs.
    weight_format : str, optional
        One of the package's weight formats (default: TorchScript, then ONNX, then the state
        dict).

    Returns
    -------
    BioimageioModel

    Examples
    --------
    >>> load_package("no-such-package.zip")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_im2im_uq.models._errors.BundleError: ...
    """
    if not isinstance(trust_code, bool):
        raise ValueError(f"trust_code must be True or False; got {trust_code!r}")
    descr = _load_descr(path) if is_package(path) else None
    spec = read_package_spec(path, descr=descr, trust_code=trust_code, weight_format=weight_format)
    fmt = spec["weight_format"]
    entry = getattr(descr.weights, fmt)
    architecture = None
    if fmt == "pytorch_state_dict":
        builder, kwargs = _architecture(entry, path, trust_code)
        architecture = (builder, kwargs, bool(getattr(entry, "strict", True)))
    from . import _cache

    # The package's path, its weights and what its RDF says: an edited RDF is read again.
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    key = (_cache.bundle_identity(spec["path"], f"{fmt}:{spec['weights_sha256']}:{digest}"),
           *_cache.CPU_KEY)

    def load():
        from ._bioimageio_model import BioimageioModel, load_runner

        data = _read_file(entry, f"{fmt} weights", path)
        return BioimageioModel(load_runner(fmt, data, architecture), spec)

    return _cache.get_or_load(key, load, source=spec["path"])


# -- export -------------------------------------------------------------------------------


def _as_model(model):
    """Return (Im2ImModel or None, network) for a zoo name, bundle, model or point-only U-Net."""
    from ._model import Im2ImModel
    from ._unet import UNet2d

    if isinstance(model, str | os.PathLike):
        model = load_cached(model)
    if type(model).__name__ == "BioimageioModel":
        raise ValueError("model is already a bioimage.io package (copy its folder or zip); "
                         "export takes a zoo name, a bundle folder, an Im2ImModel or a U-Net")
    if isinstance(model, UNet2d):
        if model.config["out_channels"] != 1:
            raise ValueError("a network given on its own must be a point-only U-Net (one output "
                             f"channel); got out_channels={model.config['out_channels']}")
        return None, model
    if not isinstance(model, Im2ImModel):
        raise ValueError("model must be a zoo name, a bundle folder, an Im2ImModel or a point-"
                         f"only UNet2d; got {type(model).__name__}")
    return model, model.network


def _export_spec(model, network) -> dict:
    if model is None:
        return {"heuristic": "point", "name": "point-unet", "input_channels": ["input"],
                "scale_factor": network.scale_factor, "halo": network.halo,
                "normalization": {"kind": "none"}, "output_range": None, "licence": None,
                "citation": None, "card": {}, "sha256": None}
    return model.spec


def export_bioimageio(model, path, *, record: dict | None = None,
                      weight_format: str = "torchscript") -> Path:
    """Write ``model`` as a bioimage.io model package (the implementation; see the api's).

    ``record``: an already checked calibration record (dict) or None. The package is written
    to a temporary place next to ``path`` and moved there complete; an existing ``path`` is
    refused.
    """
    from ._bioimageio_write import write_package

    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}; got {weight_format!r}")
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"path must be a folder or a .zip file to create; got "
                         f"{type(path).__name__}")
    target = Path(path)
    if target.exists():
        raise ValueError(f"path must not exist (nothing is overwritten); got {str(target)!r}, "
                         "which exists")
    if not target.parent.is_dir():
        raise ValueError(f"path must be in an existing folder; got {str(target)!r}")
    if record is not None and not isinstance(record, dict):
        raise ValueError(f"record must be a calibration record (dict) or None; got "
                         f"{type(record).__name__}")
    _spec_lib()
    im2im, network = _as_model(model)
    spec = _export_spec(im2im, network)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        try:
            staged = write_package(im2im, network, spec, Path(tmp) / target.name,
                                   record=record, weight_format=weight_format)
        except ValueError as err:  # pydantic's ValidationError: bioimageio.spec refused a field
            if isinstance(err, BundleError):
                raise
            raise BundleError(f"bioimageio.spec refuses the package of {spec.get('name')!r}: "
                              f"{err}") from None
        _load_descr(staged)  # the field's validator accepts what was written
        shutil.move(str(staged), str(target))
    return target
