"""Quality figures and model cards of the zoo recipes: PSNR, SSIM, the card's README."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["model_card_markdown"]


def _psnr(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((pred.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float(10 * math.log10(data_range**2 / mse)) if mse > 0 else float("inf")


def _ssim(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            ref.astype(np.float64), pred.astype(np.float64), data_range=data_range,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
    )



def _regression_figures(out: dict[str, np.ndarray], ref: np.ndarray, data_range: float):
    pred = out["prediction"]
    figures = {
        "psnr_db": _psnr(pred, ref, data_range),
        "ssim": _ssim(pred, ref, data_range),
        "rmse": float(np.sqrt(np.mean((pred.astype(np.float64) - ref) ** 2))),
    }
    if "lower" in out:
        inside = (out["lower"] <= ref) & (ref <= out["upper"])
        figures["raw_interval_coverage"] = float(np.mean(inside))
        figures["mean_interval_width"] = float(np.mean(out["upper"] - out["lower"]))
    return figures


def _baseline_figures(pred: np.ndarray, ref: np.ndarray, data_range: float):
    return {
        "psnr_db": _psnr(pred, ref, data_range),
        "ssim": _ssim(pred, ref, data_range),
        "rmse": float(np.sqrt(np.mean((pred.astype(np.float64) - ref) ** 2))),
    }


def _mean_figures(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _rounded(d):
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    if isinstance(d, float):
        return round(d, 5)
    return d


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel(), b.ravel()).statistic)


#: Absolute tolerance of the re-measured subset figures (same weights, same code: only
#: floating-point differences between machines and thread counts remain).
_SUBSET_TOLERANCE = {"psnr_db": 0.02, "default": 0.002}


def _table(held: dict[str, Any]) -> list[str]:
    keys = [k for k in held["model"] if k in held["baseline"]]
    only = [k for k in held["model"] if k not in held["baseline"]]
    lines = ["| figure | model | baseline |", "| --- | --- | --- |"]
    lines += [f"| {k} | {held['model'][k]:.4g} | {held['baseline'][k]:.4g} |" for k in keys]
    lines += [f"| {k} | {held['model'][k]:.4g} | - |" for k in only]
    return lines


def _units_lines(spec: dict[str, Any]) -> list[str]:
    """Return the card's lines on units: the declared pre/post-processing (models._units)."""
    lines = []
    pre = spec.get("preprocessing") or []
    if pre:
        steps = ", ".join(f"`{s['id']}`" + (f" {s['kwargs']}" if s.get("kwargs") else "")
                          for s in pre)
        dtype = any(s["id"] == "scale_dtype_range" for s in pre)
        lines.append(f"- units (bioimage.io `preprocessing`, raw image -> the data units above): "
                     f"{steps}" + ("; a uint8 image is divided by 255, uint16 by 65535, float "
                                   "taken as is" if dtype else ""))
    if spec.get("input_range"):
        lines.append(f"- input_range: {spec['input_range']} (what it was trained on; input far "
                     "outside it warns)")
    clips = [s["kwargs"] for s in spec.get("postprocessing") or [] if s["id"] == "clip"]
    if clips:
        lines.append(f"- `postprocessing`: `clip` the prediction and the bounds to "
                     f"[{clips[-1]['min']}, {clips[-1]['max']}], so a real prediction is "
                     "always calibratable")
    return lines


def model_card_markdown(spec: dict[str, Any]) -> str:
    """Render a bundle's ``model.json`` as its ``README.md`` model card.

    Examples
    --------
    >>> text = model_card_markdown({"name": "m", "heuristic": "quantile", "card": {}})
    >>> text.splitlines()[0]
    '# m'
    """
    card = spec.get("card") or {}
    training = card.get("training", {})
    lines = [f"# {spec['name']}", "", card.get("description", ""), ""]
    lines += [
        "## Model",
        "",
        f"- heuristic: `{spec['heuristic']}`; outputs in data units",
        f"- inputs: {spec.get('input_channels')}, normalization {spec.get('normalization')}",
    ]
    if spec.get("derived_channels"):
        lines.append(f"- derived inputs (computed from the given ones): {spec['derived_channels']}")
    lines += [
        f"- output_range: {spec.get('output_range')}; scale_factor: {spec.get('scale_factor')}; "
        f"halo: {spec.get('halo')} input pixels",
        *_units_lines(spec),
        f"- architecture: `{spec.get('architecture')}` {spec.get('kwargs')}",
    ]
    if "quantiles" in spec:
        lines.append(f"- quantile levels: {spec['quantiles']} (uncalibrated: calibrate before use)")
    if "classes" in spec:
        lines.append(f"- classes: {spec['classes']}")
    if "base_model" in spec:
        lines.append(f"- base model: {spec['base_model']}")
    lines += ["", "## Training data", "", "```json",
              json.dumps(spec.get("training_data"), indent=2), "```", ""]
    if training:
        lines += [
            "## Training",
            "",
            f"- command: `{training.get('command')}`",
            f"- steps: {training.get('steps')}, batch {training.get('batch_size')} patches of "
            f"{training.get('patch')} input pixels, {training.get('optimizer')}, augmentation "
            f"`{training.get('augmentation')}`, seed {training.get('seed')}",
            f"- loss options: {training.get('loss_options')}",
            f"- wall time: {training.get('wall_time_s')} s of training on "
            f"{training.get('machine')} (nice'd, shared); torch {training.get('torch')}",
        ]
        if isinstance(training.get("validation"), dict):  # the zoo recipes' learning curve
            lines.append(f"- validation on stack1 slice {training['validation'].get('slice')}: "
                         f"{training['validation'].get('summary')} (curve in model.json)")
        lines.append("")
    held = card.get("held_out")
    if held:
        lines += ["## Quality on held-out data", "", f"Held out: {held['held_out']}.",
                  f"Baseline: {held['baseline_name']}. Averaging: {held['averaging']}.", ""]
        lines += _table(held)
        lines.append("")
    sub = card.get("subset")
    if sub:
        lines += ["### Subset re-measured by `tests/test_zoo.py`", "",
                  f"{sub['held_out']}; tolerance {sub.get('tolerance')}.", ""]
        lines += _table(sub)
        lines.append("")
    info = card.get("informative")
    if info:
        lines += ["## Is the uncertainty informative? (held-out, calibrated)", "",
                  f"Command: `{info.get('command')}`.", "", "```json",
                  json.dumps({k: v for k, v in info.items() if k != "command"}, indent=1),
                  "```", ""]
    small = ("A small super-resolution network" if spec.get("architecture") == "srnet2d"
             else "A small U-Net")
    lines += [
        "## Limitations",
        "",
        _scope_line(small, spec),
        "- Uncertainty outputs are heuristic until calibrated on held-out data from the same "
        "population (see napari_im2im_uq.calibration).",
        "",
        "## Licence and citation",
        "",
        f"- licence: {spec.get('licence')}",
        f"- cite: {spec.get('citation')}",
        *([f"- authors: {_authors(spec['authors'])}"] if spec.get("authors") else []),
        "",
    ]
    return "\n".join(lines)


def _authors(value) -> str:
    return "; ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _scope_line(small: str, spec: dict[str, Any]) -> str:
    """Return the card's first limitation: what the model is, from how it was trained."""
    if spec.get("training_regions"):  # trained by training.train on the user's own pairs
        return (f"- {small} trained on the pairs listed above: its quality is measured on their "
                "held-back regions only; on other data, check it and calibrate again.")
    return (f"- {small} trained for minutes on a 2-core CPU: a demonstration model, not a "
            "state-of-the-art one.")

