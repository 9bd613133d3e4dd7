"""Model cards and the list of models, read from ``model.json`` without importing torch."""

from __future__ import annotations

from pathlib import Path

__all__ = ["list_models", "model_card", "model_io"]


def list_models(*, search_paths=()) -> list[str]:
    """Names of the shipped models (and of bundles in ``search_paths``); does not import torch.

    Examples
    --------
    >>> "tem-sr4x-quantile" in list_models()
    True
    """
    from ..models import list_models as _list

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
        "citation", "sha256", "weights" (the weight format: a bundle's safetensors, or the
        format of a bioimage.io package that runs and the others it holds).

    Examples
    --------
    >>> card = model_card("tem-sr4x-quantile")
    >>> card["heuristic"], card["scale"]
    ('quantile', '4x (output pixels per input pixel, per axis)')
    """
    spec = _spec(model)
    card = spec.get("card") or {}
    training = spec.get("training_data") or {}  # null in a bundle saved from memory
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
        "weights": _weights(spec),
    }


def _weights(spec: dict) -> str:
    fmt = spec.get("weight_format")
    if fmt is None:
        return "safetensors (bundle)"
    others = [f for f in spec.get("weight_formats", []) if f != fmt]
    text = f"{fmt} (bioimage.io package)" + (f"; also {', '.join(others)}" if others else "")
    if fmt == "pytorch_state_dict":
        text += ": runs the package's own Python code, only with trust_code=True"
    return text


def model_io(model) -> dict:
    """Return what a model takes and its default tiles, from ``model.json`` alone (no torch).

    Parameters
    ----------
    model : str, path-like or Im2ImModel

    Returns
    -------
    dict
        "name"; "given_channels": the input channels the user gives (the channels the bundle
        derives itself, such as a Tikhonov phase, left out); "needs_prediction": True for a
        mask model, which takes the prediction it rates; "point_only": True for a model with
        one output, the prediction (it offers ``uncertainty=``); "tile_side": the default tile side in
        input pixels per device kind ("cpu", "cuda"; None when the bundle does not say);
        "weight_format": the weights that would run ("safetensors" for a bundle, the format of
        a bioimage.io package); "needs_trust": True when they are a package's
        ``pytorch_state_dict``, whose architecture is the author's Python code (it runs only
        with ``trust_code=True``).

    Examples
    --------
    >>> io = model_io("qpi-dpc-quantile")
    >>> io["given_channels"], io["needs_prediction"]
    (['r1', 'r2'], False)
    """
    from ..inference._tiles import tile_side_from_spec
    from ..models import given_channels

    spec = _spec(model)
    return {
        "name": str(spec.get("name", model)),
        "given_channels": given_channels(spec),
        "needs_prediction": spec.get("heuristic") == "mask",
        "point_only": spec.get("heuristic") == "point",
        "tile_side": {d: tile_side_from_spec(spec, d) for d in ("cpu", "cuda")},
        "weight_format": str(spec.get("weight_format") or "safetensors"),
        "needs_trust": spec.get("weight_format") == "pytorch_state_dict",
    }


def _spec(model) -> dict:
    if hasattr(model, "spec") and hasattr(model, "sha256"):
        return dict(model.spec)
    import os

    if not isinstance(model, str | os.PathLike):
        raise ValueError(
            "model must be the name of a model in the zoo, a bundle folder or an Im2ImModel; "
            f"got {type(model).__name__}"
        )
    from ..models import read_spec

    return read_spec(model)
