"""bioimage.io model packages: load one, export a model (with its calibration record) as one.

A package (a folder with ``rdf.yaml``/``bioimageio.yaml``, or its zip) is read and validated
by bioimageio.spec and runs like any model of the zoo (:func:`load_model`, ``predict``, the
Model widget, ``--model``). :func:`export_bioimageio` writes a model as a package the field's
tools accept; a calibration record given to it travels in the RDF's
``config["napari-im2im-uq"]["record"]`` and :func:`record_of` gives it back after loading.
Needs the optional extra ``pip install 'napari-im2im-uq[bioimageio]'``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["export_bioimageio", "load_model", "record_of"]


def load_model(model, *, trust_code: bool = False):
    """Load a zoo model, a bundle folder or a bioimage.io package (once per process).

    Parameters
    ----------
    model : str or path-like
        A zoo name, a bundle folder, or a bioimage.io package (folder or zip).
    trust_code : bool
        Allow a package's ``pytorch_state_dict`` weights, whose architecture is Python code
        from the package's author. Without it such a package is refused and nothing of it runs.

    Returns
    -------
    Im2ImModel
        The cached model (read-only; ``predict`` moves a copy when it runs elsewhere).

    Examples
    --------
    >>> load_model("tem-sr4x-quantile").heuristic
    'quantile'
    """
    if not isinstance(model, str | os.PathLike):
        raise ValueError("model must be a zoo name, a bundle folder or a bioimage.io package "
                         f"(folder or zip); got {type(model).__name__}")
    if not isinstance(trust_code, bool):
        raise ValueError(f"trust_code must be True or False; got {trust_code!r}")
    from ..models import load_cached

    return load_cached(model, trust_code=trust_code)


def record_of(model) -> dict | None:
    """Return the calibration record a bioimage.io package carried, checked; else None.

    Parameters
    ----------
    model : Im2ImModel, str or path-like
        A loaded model, or a package (its RDF is read; no weights are loaded).

    Returns
    -------
    dict or None
        The record (schema and checksum checked, as :func:`load_record` does), ready for
        ``apply_record``; None when the model carries none.

    Examples
    --------
    >>> record_of("tem-sr4x-quantile") is None
    True
    """
    from ..models import read_spec
    from .records import check_record

    if hasattr(model, "spec") and hasattr(model, "sha256"):
        spec = model.spec
    elif isinstance(model, str | os.PathLike):
        spec = read_spec(model)
    else:
        raise ValueError("model must be a loaded model, a zoo name, a bundle folder or a "
                         f"bioimage.io package; got {type(model).__name__}")
    rec = spec.get("record")
    if rec is None:
        return None
    return check_record(rec, origin=f"the package {spec.get('path', spec.get('name'))}")


def export_bioimageio(model, path, *, record=None, weight_format: str = "torchscript") -> str:
    """Write ``model`` as a bioimage.io model package that bioimageio.spec validates.

    The package holds the weights (``weight_format``), test tensors (an input and each output),
    the card (``README.md``: task, outputs, units, licence, citation), the licence and
    citation in the RDF, the model's pre/post-processing in bioimage.io's vocabulary, and, when
    given, the calibration record in ``config["napari-im2im-uq"]["record"]``: a calibrated
    model travels with its guarantee, and :func:`record_of` returns it after loading.

    Parameters
    ----------
    model : str, path-like, Im2ImModel or UNet2d
        A zoo name, a bundle folder, a loaded model, or a point-only U-Net
        (``build_network(...)`` with one output channel: its output is "prediction").
    path : str or path-like
        The package to create: a folder, or a zip when it ends in ".zip". It must not exist
        (nothing is overwritten); it appears complete or not at all.
    record : dict, path-like or calibrated layer, optional
        A calibration record of this model (``Calibration.record``, a saved record, or a
        layer Calibrate made). Checked (schema, checksum) and refused when it was made for
        another model (by sha256).
    weight_format : {"torchscript", "onnx", "pytorch_state_dict"}
        How the weights are stored. ``pytorch_state_dict`` names this package's network class
        as its architecture, so loading it asks for ``trust_code=True`` like any other.

    Returns
    -------
    str
        The package's path.

    Examples
    --------
    >>> export_bioimageio("tem-sr4x-quantile", "sr4x.zip", record=cal.record)  # doctest: +SKIP
    'sr4x.zip'
    """
    from ..models import export_bioimageio as _export
    from ..models import load_cached
    from .records import as_record

    rec = None
    if record is not None:
        rec = as_record(record)
        if isinstance(model, str | os.PathLike):
            model = load_cached(model)
        made_for = (rec.get("model") or {}).get("sha256")
        ours = getattr(model, "sha256", None)
        if made_for and made_for != ours:
            raise ValueError(
                f"record must be a calibration of this model: it was made for "
                f"{(rec.get('model') or {}).get('name')} (sha256 {made_for[:12]}...), the model "
                f"is {getattr(model, 'name', '?')} (sha256 {str(ours)[:12]}...); a guarantee "
                "does not carry over to another model")
    return str(Path(_export(model, path, record=rec, weight_format=weight_format)))
