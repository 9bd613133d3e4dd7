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


class _LearningCurve:
    """The learning curve of a recipe's run, kept across resumes in its checkpoint folder.

    Sees the events of :func:`~napari_im2im_uq.training.train_network`: the validation loss
    at each validation and the mean training loss over the steps since the previous one.
    Both curves and the training seconds are written to ``learning-curve.json`` in the
    checkpoint folder at each validation, so a resumed run's card shows the whole curve
    (the part after the last validation before an interruption is run again).
    """

    _FILE = "learning-curve.json"

    def __init__(self, checkpoint_dir, *, resume: bool):
        from pathlib import Path

        self.path = Path(checkpoint_dir) / self._FILE if checkpoint_dir is not None else None
        self.validation: list[list[float]] = []
        self.training: list[list[float]] = []
        self.seconds_before = 0.0
        self._losses: list[float] = []
        self._seconds = 0.0
        self._resumed = False
        if resume and self.path is not None and self.path.is_file():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.validation, self.training = saved["validation"], saved["training"]
            self.seconds_before = float(saved["seconds"])
            self._resumed = True

    def see(self, event: dict[str, Any]) -> None:
        """Take one event of the training loop."""
        if event.get("resumed_from") is not None:  # forget what the checkpoint does not hold
            step = int(event["resumed_from"])
            self.validation = [v for v in self.validation if v[0] <= step]
            self.training = [t for t in self.training if t[0] <= step]
        if event.get("phase") == "validate":
            step = int(event["step"])
            self.validation.append([step, round(float(event["val_loss"]), 6)])
            if self._losses:
                self.training.append([step, round(float(np.mean(self._losses)), 6)])
            self._losses = []
            if self.path is not None and self.path.parent.is_dir():
                from .._files import write_atomic

                record = {"validation": self.validation, "training": self.training,
                          "seconds": self.seconds_before + self._seconds}
                write_atomic(self.path, (json.dumps(record) + "\n").encode())
        elif "loss" in event:
            self._losses.append(float(event["loss"]))
            self._seconds = float(event.get("seconds", self._seconds))

    def summary(self) -> dict[str, Any]:
        """Return the card's ``validation`` entry: both curves, the best step, a sentence."""
        curve = self.validation
        best = min(curve, key=lambda sv: sv[1])
        out = {
            "curve": curve,
            "train_curve": self.training,
            "train_curve_note": "mean training loss over the steps since the previous "
            "validation (patches of the training data, training mode)",
            "best_step": best[0],
            "best_loss": best[1],
            "summary": f"validation loss {curve[0][1]:.4g} at step {curve[0][0]}, best "
            f"{best[1]:.4g} at step {best[0]}, last {curve[-1][1]:.4g} at step {curve[-1][0]}; "
            "the best weights are shipped",
        }
        if self._resumed:
            out["note"] = "resumed from a checkpoint: the curves join the runs"
        return out


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
            f"{training.get('machine')}"
            + (f", {training['threads']} torch thread(s)" if training.get("threads") else "")
            + f" (nice'd, shared); torch {training.get('torch')}",
        ]
        if isinstance(training.get("validation"), dict):  # the zoo recipes' learning curve
            lines += _curve_lines(training["validation"])
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


def _curve_lines(validation: dict[str, Any]) -> list[str]:
    """Return the card's lines on the learning curve (validation and training losses)."""
    if "slice" in validation:
        where = f"stack1 slice {validation['slice']}"
    else:
        where = f"columns {validation.get('columns')}"
    lines = [f"- validation on {where}: {validation.get('summary')} (curves in model.json)"]
    train = {int(s): v for s, v in validation.get("train_curve") or []}
    if train:
        lines += ["", "| step | training loss | validation loss |", "| --- | --- | --- |"]
        curve = validation["curve"]
        every = max(1, len(curve) // 10)
        for step, val in curve[::every] + ([curve[-1]] if (len(curve) - 1) % every else []):
            mark = " (best)" if step == validation.get("best_step") else ""
            lines.append(f"| {step}{mark} | {train.get(int(step), float('nan')):.4g} | "
                         f"{val:.4g} |")
    return lines


def _authors(value) -> str:
    return "; ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _scope_line(small: str, spec: dict[str, Any]) -> str:
    """Return the card's first limitation: what the model is, from how it was trained."""
    if spec.get("training_regions"):  # trained by training.train on the user's own pairs
        return (f"- {small} trained on the pairs listed above: its quality is measured on their "
                "held-back regions only; on other data, check it and calibrate again.")
    return (f"- {small} trained for minutes on a 2-core CPU: a demonstration model, not a "
            "state-of-the-art one.")

