"""Recipes of the shipped zoo: data, network, schedule, evaluation and model card of each model.

A recipe trains one model from the real data in ``../shared/data`` (read at run time, never
copied), saves the bundle (float16 weights), measures its quality on held-out data next to a
simple baseline and writes the model card (``model.json`` ``card`` and ``README.md``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "measure_card", "run_recipe"]

from ._card import _SUBSET_TOLERANCE, _LearningCurve, _rounded, model_card_markdown
from ._recipes_qpi import (
    _QPI_CHANNELS,
    _QPI_CITATION,
    _QPI_DERIVED,
    _QPI_FIT_COLS,
    _QPI_HELD_OUT_COLS,
    _QPI_LICENCE,
    _QPI_RANGE,
    _QPI_TRAIN_COLS,
    _QPI_VALIDATION_COLS,
    _measure_qpi,
    _qpi,
    _qpi_baseline_fit,
    _qpi_normalization,
)
from ._recipes_tem import (
    _EM_CITATION,
    _EM_LICENCE,
    _EM_TRAIN,
    _SR_TRAIN,
    _SR_VALIDATION,
    TEM_DEGRADATION,
    _em,
    _fit_threshold,
    _measure_mask,
    _measure_seg,
    _measure_sr,
    _synthetic,
    degradation_of,
    degrade,
)
from ._recipes_validation import (
    _QPI_VALIDATION_SIDE,
    _validation_batches,
    _validation_text,
    _validation_where,
)


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is made.

    Attributes
    ----------
    name : str
        The bundle name.
    task : str
        "tem-sr", "tem-seg", "qpi", "tem-mask" or "synthetic-sr".
    heuristic : str
        The head.
    description : str
        One sentence for the model card.
    network : dict
        Keyword arguments of :func:`~napari_im2im_uq.training.init_network`.
    steps, batch_size, patch, lr : int, int, int, float
        Training schedule (``patch`` in input pixels; cosine learning rate).
    augment : str
        See :class:`~napari_im2im_uq.training.PatchSampler`.
    loss_options : dict
        Options of the loss.
    base_model : str or None
        The model a mask network belongs to.
    real_data : bool
        Whether the recipe reads ``../shared/data``.
    degradation : dict or None
        Super-resolution: how the input is made from the target (keyword arguments of
        :func:`napari_im2im_uq.data.degrade_tem` plus ``"function"``); None: 4x nearest.
        Training draws fresh noise for every patch; the model spec records it.
    validate_every : int or None
        Steps between validations on a held-back part of the training data (TEM: slice 13,
        training on 0-12; QPI: columns 800-999, patches from 0-799); the weights of the lowest
        validation loss are shipped. None: no validation.
    spread_sigma : float
        Super-resolution (SRNet2d): the fixed smoothing of the spread after the pixel shuffle
        (``SRNet2d(spread_sigma=...)``, the point untouched) put on the trained weights when
        the bundle is saved; training runs without it (0: none).
    """

    name: str
    task: str
    heuristic: str
    description: str
    network: dict[str, Any]
    steps: int
    batch_size: int
    patch: int
    lr: float = 2e-3
    augment: str = "dihedral"
    loss_options: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    real_data: bool = True
    degradation: dict[str, Any] | None = None
    validate_every: int | None = None
    spread_sigma: float = 0.0



_SR_NET = {"architecture": "srnet2d", "channels": 32, "n_blocks": 8, "scale_factor": 4}
_SR_STEPS = 4000
#: The quantile, residual and Gaussian heads ship with their spread smoothed (sigma 1.5 output
#: pixels): the raw width carries a 4-pixel grid (the binned error's own pattern, 1.16-fold
#: on real TEM) that the overlays show as a lattice. Not the softmax head: its point would move.
_SR_SMOOTH = {"spread_sigma": 1.5}
_SR = {"batch_size": 8, "patch": 48, "lr": 1e-3, "degradation": TEM_DEGRADATION,
       "validate_every": 200}

# Sized for about 30 minutes each on one thread of the 2-core CPU shared by 5 jobs (1-2 s a step).
QPI_STEPS, QPI_PATCH = 1800, 128
SEG_STEPS, SEG_PATCH = 1500, 128

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "tem-sr4x-quantile", "tem-sr", "quantile",
            "4x super-resolution of ssTEM (Drosophila VNC) acquired at a 4x coarser pixel "
            "(4 x 4 binning, short-exposure Poisson-Gaussian noise), with pixel-wise 5% and "
            "95% quantiles.",
            _SR_NET, steps=_SR_STEPS, **_SR, **_SR_SMOOTH,
            loss_options={"quantiles": [0.05, 0.95], "point_loss": "l1"},
        ),
        Recipe(
            "tem-sr4x-residual", "tem-sr", "residual",
            "4x super-resolution of binned, noisy ssTEM with a regressed residual magnitude.",
            _SR_NET, steps=_SR_STEPS, **_SR, **_SR_SMOOTH, loss_options={"point_loss": "l1"},
        ),
        Recipe(
            "tem-sr4x-gaussian", "tem-sr", "gaussian",
            "4x super-resolution of binned, noisy ssTEM with one Gaussian (mean, std) per pixel.",
            _SR_NET, steps=_SR_STEPS, **_SR, **_SR_SMOOTH,
            loss_options={"var_floor": 1e-6},
        ),
        Recipe(
            "tem-sr4x-softmax", "tem-sr", "softmax",
            "4x super-resolution of binned, noisy ssTEM as classification over 32 intensity "
            "bins.",
            {**_SR_NET, "bins": 32, "skip": "bins"}, steps=2000, **_SR,  # 1 s a step on the CPU
        ),
        Recipe(
            "tem-membrane-seg", "tem-seg", "segmentation",
            "Membrane vs rest segmentation of ssTEM (Drosophila VNC).",
            {"depth": 3, "base_channels": 16, "norm": "batch", "n_classes": 2},
            steps=SEG_STEPS, batch_size=4, patch=SEG_PATCH, validate_every=100,
        ),
        Recipe(
            "qpi-dpc-quantile", "qpi", "quantile",
            "Quantitative phase from two opposite oblique-illumination DPC images (top, bottom) "
            "and their two-image Tikhonov phase, with pixel-wise 5% and 95% quantiles.",
            {"depth": 4, "base_channels": 16, "norm": "batch", "in_channels": 3},
            steps=QPI_STEPS, batch_size=4, patch=QPI_PATCH, augment="cols", lr=1e-3,
            validate_every=100, loss_options={"quantiles": [0.05, 0.95], "point_loss": "l1"},
        ),
        Recipe(
            "tem-sr4x-mask", "tem-mask", "mask",
            "Mask network (Kutiel et al. 2023, L1 distance) for tem-sr4x-quantile.",
            {"depth": 3, "base_channels": 16, "norm": "batch", "in_channels": 2},
            steps=2000, batch_size=4, patch=96, augment="none",
            loss_options={"mu": 10.0, "distance": "l1"}, base_model="tem-sr4x-quantile",
        ),
        Recipe(
            "synthetic-sr4x-quantile", "synthetic-sr", "quantile",
            "Tiny demonstration: 4x super-resolution of synthetic EM tissue (no real data).",
            {"depth": 2, "base_channels": 4, "norm": "batch", "scale_factor": 4},
            steps=100, batch_size=4, patch=16, real_data=False,
            loss_options={"quantiles": [0.05, 0.95], "point_loss": "l2"},
        ),
    )
}


#: The recipes whose bundles ship in the zoo, in training order.
ZOO_ORDER = (
    "tem-sr4x-quantile",
    "tem-membrane-seg",
    "qpi-dpc-quantile",
    "tem-sr4x-residual",
    "tem-sr4x-gaussian",
    "tem-sr4x-softmax",
    "tem-sr4x-mask",
)


def list_recipes() -> list[str]:
    """Names of the training recipes (the zoo models plus a tiny synthetic demonstration).

    Examples
    --------
    >>> "tem-sr4x-quantile" in list_recipes()
    True
    """
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """Return the :class:`Recipe` called ``name``.

    Examples
    --------
    >>> get_recipe("tem-membrane-seg").heuristic
    'segmentation'
    """
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {list(RECIPES)}; got {name!r}")
    return RECIPES[name]



# -- data -----------------------------------------------------------------------------------
def _spec(recipe: Recipe, *, root, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": recipe.name}
    if recipe.task in ("tem-sr", "tem-mask", "tem-seg", "synthetic-sr"):
        spec["input_channels"] = ["raw"]
        spec["normalization"] = {"kind": "minmax", "min": 0.0, "max": 1.0}
        spec["output_range"] = None if recipe.task == "tem-seg" else [0.0, 1.0]
    if recipe.task in ("tem-sr", "tem-mask", "synthetic-sr"):
        spec["scale_factor"] = 4
    if recipe.heuristic in ("quantile", "softmax"):
        spec["quantiles"] = list(recipe.loss_options.get("quantiles", [0.05, 0.95]))
    if recipe.heuristic == "softmax":
        spec["bins"] = recipe.network["bins"]
    if recipe.task == "tem-seg":
        spec["classes"] = ["rest", "membrane"]
    if recipe.task == "qpi":
        spec["input_channels"] = list(_QPI_CHANNELS)
        spec["derived_channels"] = _QPI_DERIVED
        spec["output_range"] = list(_QPI_RANGE)
    if recipe.task in ("tem-sr", "tem-mask", "tem-seg", "qpi"):  # units: trained on uint8 / 255
        spec["preprocessing"] = [{"id": "scale_dtype_range"}]
        spec["input_range"] = [0.0, 1.0]
        if recipe.heuristic not in ("mask", "segmentation"):
            lo, hi = spec["output_range"]
            spec["postprocessing"] = [{"id": "clip", "kwargs": {"min": lo, "max": hi}}]
    if recipe.task in ("tem-sr", "tem-seg", "tem-mask"):
        deg = recipe.degradation if recipe.task == "tem-sr" else (extra or {}).get("degradation")
        spec["training_data"] = {
            "dataset": "em_drosophila_vnc",
            "stack": 1,
            "slices": list(_SR_TRAIN if recipe.validate_every else _EM_TRAIN),
            "target": "membranes" if recipe.task == "tem-seg" else "raw",
            "input": "raw" if recipe.task == "tem-seg" else "raw[::4, ::4] (4x nearest)",
            "never_used_for_training": "stack1 slices 14-19 (calibration and testing), stack2",
            "units": "raw = uint8 / 255 (as napari_im2im_uq.data.load_em_drosophila returns)",
        }
        if deg is not None:
            spec["training_data"]["input"] = (
                "napari_im2im_uq.data.degrade_tem(raw, **degradation): 4 x 4 binning, then "
                "Poisson counts at `photons` per low-resolution pixel of intensity 1 plus "
                "Gaussian read noise of `read_noise` counts, divided by `photons`, clipped to "
                "[0, 1]; fresh noise for every training patch"
            )
            spec["training_data"]["degradation"] = dict(deg)
        if recipe.validate_every:
            spec["training_data"]["validation"] = _validation_text(recipe)
        spec.pop("degradation", None)
        spec["licence"] = _EM_LICENCE
        spec["citation"] = _EM_CITATION
    elif recipe.task == "qpi":
        spec["training_data"] = {
            "dataset": "qpi_dpc_cells",
            "input": [
                "raw/r1.png (top)",
                "raw/r2.png (bottom)",
                "phase_tikhonov_r1r2 = napari_im2im_uq.data.dpc_tikhonov(np.stack([r1, r2]), "
                "directions=('top', 'bottom')) over the whole field "
                "(napari_im2im_uq.models.qpi_tikhonov_channel; declared in derived_channels "
                "and computed by inference)",
            ],
            "target": "derived/phase_l2_tikhonov_float32.npy (4-image Tikhonov phase, radians)",
            "train_region": {"rows": [0, 2000], "columns": list(_QPI_TRAIN_COLS)},
            "never_used_for_training": {"rows": [0, 2000], "columns": list(_QPI_HELD_OUT_COLS)},
            **({"patches_from": {"rows": [0, 2000], "columns": list(_QPI_FIT_COLS)},
                "validation": _validation_text(recipe)} if recipe.validate_every else {}),
            "units": "r1, r2 = uint8 / 255 (as napari_im2im_uq.data.load_qpi_dpc returns); "
            "phase in radians",
        }
        spec["licence"] = _QPI_LICENCE
        spec["citation"] = _QPI_CITATION
    else:
        spec["training_data"] = {"dataset": "synthetic_em_tissue", "seeds": [0, 1, 2, 3]}
        spec["licence"] = "public domain (synthetic data)"
    if extra:
        spec.update(extra)
    return spec


def _sampler(recipe: Recipe, *, root, base_model=None):
    """Return the recipe's patch sampler and what was fitted on the training data.

    With ``recipe.validate_every``, ``fitted["validation"]`` holds the fixed validation
    batches (:func:`_validation_batches`) of a part of the training data the sampler never
    draws from: TEM slice 13, QPI columns 800-999.
    """
    from ._sampling import PatchSampler, nearest_downsample

    patch = (recipe.patch, recipe.patch)
    validate = bool(recipe.validate_every)
    fitted: dict[str, Any] = {}
    if recipe.task in ("tem-sr", "synthetic-sr"):
        if recipe.degradation is None:
            hr = _em(_EM_TRAIN, root)["raw"] if recipe.task == "tem-sr" else _synthetic(range(4))
            return PatchSampler(
                None, list(hr), scale_factor=4, patch_shape=patch, augment=recipe.augment,
                degrade=nearest_downsample(4),
            ), fitted
        slices = _SR_TRAIN + ((_SR_VALIDATION,) if validate else ())
        hr = _em(slices, root)["raw"]
        sampler = PatchSampler(
            None, list(hr[: len(_SR_TRAIN)]), scale_factor=4, patch_shape=patch,
            augment=recipe.augment, degrade=_PatchDegradation(recipe.degradation),
        )
        if validate:
            fitted["validation"] = _validation_batches(hr[-1], recipe.degradation)
        return sampler, fitted
    if recipe.task == "tem-seg":
        em = _em(_EM_TRAIN, root, what=("raw", "membranes"))
        # the baseline's threshold is fitted on slices 0-13 with or without validation
        fitted["baseline_threshold"] = _fit_threshold(em["raw"], em["membranes"])
        n = len(_SR_TRAIN) if validate else len(_EM_TRAIN)
        sampler = PatchSampler(
            [r[None] for r in em["raw"][:n]], [m.astype(np.int64) for m in em["membranes"][:n]],
            patch_shape=patch, augment=recipe.augment,
        )
        if validate:
            i = _EM_TRAIN.index(_SR_VALIDATION)
            fitted["validation"] = _validation_batches(
                em["membranes"][i].astype(np.int64), x=em["raw"][i][None].astype(np.float32)
            )
        return sampler, fitted
    if recipe.task == "qpi":
        qpi = _qpi(root)
        norm = _qpi_normalization(qpi)
        c0, c1 = _QPI_TRAIN_COLS
        x = np.stack([
            (qpi[k][:, c0:c1] - m) / s
            for k, m, s in zip(_QPI_CHANNELS, norm["mean"], norm["std"], strict=True)
        ]).astype(np.float32)
        lo, hi = _QPI_RANGE
        y = ((qpi["phase"][:, c0:c1] - lo) / (hi - lo)).astype(np.float32)
        f0, f1 = _QPI_FIT_COLS if validate else _QPI_TRAIN_COLS
        sampler = PatchSampler([x[:, :, f0 - c0 : f1 - c0]], [y[:, f0 - c0 : f1 - c0]],
                               patch_shape=patch, augment=recipe.augment)
        fitted.update(normalization=norm, **_qpi_baseline_fit(qpi))
        if validate:
            v0, v1 = (c - c0 for c in _QPI_VALIDATION_COLS)
            fitted["validation"] = _validation_batches(
                y[:, v0:v1], x=x[:, :, v0:v1], side=_QPI_VALIDATION_SIDE
            )
        return sampler, fitted
    if recipe.task == "tem-mask":
        from ._pairs_data import mask_pair

        hr = _em(_EM_TRAIN, root)["raw"]
        deg = degradation_of(base_model.spec)
        inputs, targets = [], []
        for s, y in zip(_EM_TRAIN, hr, strict=True):
            net_input, target = mask_pair(base_model, degrade(y, deg, [s]), y)
            inputs.append(net_input)
            targets.append(target)
        sampler = PatchSampler(inputs, targets, patch_shape=patch, augment=recipe.augment)
        return sampler, fitted
    raise AssertionError(recipe.task)  # pragma: no cover


class _PatchDegradation:
    """The recipe's degradation of a training patch, with noise seeded by the patch itself.

    The noise differs from patch to patch (fresh at every draw of a new position or
    augmentation) yet depends only on the patch, so a resumed run sees the same pairs.
    """

    def __init__(self, degradation: dict[str, Any]):
        self.degradation = dict(degradation)
        self.factor = int(degradation["factor"])

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        import hashlib

        data = np.ascontiguousarray(patch, dtype=np.float32)
        key = int.from_bytes(hashlib.blake2b(data.tobytes(), digest_size=8).digest(), "little")
        return degrade(data, self.degradation, key)


def _load_base_model(recipe: Recipe, output: Path | None):
    from ..models import load_model

    if output is not None:
        sibling = output.parent / recipe.base_model
        if (sibling / "model.json").is_file():
            return load_model(sibling)
    return load_model(recipe.base_model)


def measure_card(
    model,
    name: str,
    *,
    subset: bool = False,
    root: str | os.PathLike | None = None,
    base_model=None,
) -> dict[str, Any]:
    """Measure a recipe's model on its held-out data, next to the recipe's simple baseline.

    The held-out data are never used for training: stack1 slices 14-19 of
    ``em_drosophila_vnc`` (TEM models) and columns 1000-1999 of ``qpi_dpc_cells`` (QPI).
    With ``subset=True`` only two held-out 256 x 256 crops are measured (what the zoo tests
    re-measure; the crops are the ``subset`` entry of the card).

    Figures
    -------
    - super-resolution: PSNR (peak 1) and SSIM (Gaussian window, sigma 1.5) against cubic
      up-sampling aligned with the nearest down-sampling; RMSE; the uncalibrated coverage and
      mean width of the raw intervals.
    - QPI: the same against the two-image (r1, r2) Tikhonov DPC phase with gain and offset
      fitted on the training columns; PSNR with peak 5 rad.
    - segmentation: pixel accuracy and membrane F1 of the arg-max against a threshold of the
      Gaussian-smoothed (sigma 1) raw image fitted on the training slices.
    - mask: Spearman correlation of ``1 - mask`` with the absolute error of the base model,
      against that of the base model's interval width; the mask loss against the best constant
      mask.

    Parameters
    ----------
    model : Im2ImModel
        The model (e.g. ``load_model(name)``).
    name : str
        The recipe name.
    subset : bool
        Measure only the two held-out crops.
    root : path-like, optional
        Folder holding the data sets (default: :func:`napari_im2im_uq.data.shared_data_root`).
    base_model : Im2ImModel, optional
        For a mask model: its image-to-image model (default: the zoo's).

    Returns
    -------
    dict
        ``model`` and ``baseline`` figure dicts, ``baseline_name``, ``held_out`` and, for the
        segmentation and QPI baselines, their fitted parameters.

    Examples
    --------
    >>> from napari_im2im_uq.models import load_model
    >>> card = measure_card(load_model("tem-sr4x-quantile"), "tem-sr4x-quantile",
    ...                     subset=True)  # doctest: +SKIP
    >>> card["model"]["psnr_db"] > card["baseline"]["psnr_db"]  # doctest: +SKIP
    True
    """
    recipe = get_recipe(name)
    spec = model.spec
    card = spec.get("card") or {}
    if recipe.task in ("tem-sr", "synthetic-sr"):
        return _measure_sr(model, recipe, subset=subset, root=root)
    if recipe.task == "tem-seg":
        threshold = card.get("baseline_parameters", {}).get("threshold")
        if threshold is None:
            raise ValueError(
                "model must carry card['baseline_parameters']['threshold'] (written by "
                f"run_recipe); got card keys {sorted(card)}"
            )
        return _measure_seg(model, threshold, subset=subset, root=root)
    if recipe.task == "qpi":
        params = card.get("baseline_parameters", {})
        if "gain" not in params:
            raise ValueError(
                "model must carry card['baseline_parameters'] gain and offset (written by "
                f"run_recipe); got card keys {sorted(card)}"
            )
        return _measure_qpi(model, params, subset=subset, root=root)
    if base_model is None:
        base_model = _load_base_model(recipe, None)
    return _measure_mask(model, base_model, recipe, subset=subset, root=root)



# -- the recipe runner -----------------------------------------------------------------------
def _machine() -> str:
    import torch

    gpu = "GPU " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU, {gpu}"


def run_recipe(
    name: str,
    *,
    output: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    root: str | os.PathLike | None = None,
    evaluate: bool = True,
    command: str | None = None,
) -> Generator[dict[str, Any], None, Path]:
    """Train a zoo model by its recipe, save the bundle and its model card; a generator.

    Parameters
    ----------
    name : str
        A recipe name (see :func:`list_recipes`).
    output : path-like
        The bundle folder to write (``weights.safetensors``, ``model.json``, ``README.md``).
    steps : int, optional
        Training steps (default: the recipe's).
    seed : int
        Seed of the initial weights and of the patch sampling.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one.
    overwrite : bool
        Replace an existing bundle at ``output`` (otherwise that is an error, raised before
        training starts).
    checkpoint_dir : path-like, optional
        Default: a sibling of ``output`` named ``<output>.checkpoint``.
    checkpoint_every : int
        Steps between checkpoints.
    root : path-like, optional
        Folder holding the data sets.
    evaluate : bool
        Measure the card figures (on the held-out data) and write them into the card.
    command : str, optional
        The command line recorded in the card.

    Yields
    ------
    dict
        ``phase`` ("data", "train", "evaluate", "saved") and, while training, the events of
        :func:`~napari_im2im_uq.training.train_network`.

    Returns
    -------
    pathlib.Path
        The bundle folder.

    Examples
    --------
    >>> import tempfile
    >>> from napari_im2im_uq.training import run_recipe, run_to_end
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = run_to_end(run_recipe("synthetic-sr4x-quantile", output=f"{tmp}/demo",
    ...                                  steps=2))
    ...     sorted(p.name for p in path.iterdir())
    ['README.md', 'model.json', 'weights.safetensors']
    """
    import torch

    from .._jobs import relay
    from ..models import load_model, save_model
    from ._checkpoint import check_bundle_output
    from ._loop import init_network, train_network

    recipe = get_recipe(name)
    output = Path(output)
    # Never a user's README.md or weights.safetensors; our bundle only with overwrite.
    check_bundle_output(output, overwrite=overwrite)
    steps = recipe.steps if steps is None else steps
    if checkpoint_dir is None:
        checkpoint_dir = output.with_name(output.name + ".checkpoint")
    t_start = time.perf_counter()
    yield {"phase": "data", "recipe": name}
    base_model = _load_base_model(recipe, output) if recipe.base_model else None
    sampler, fitted = _sampler(recipe, root=root, base_model=base_model)
    extra: dict[str, Any] = {}
    if "normalization" in fitted:
        extra["normalization"] = fitted["normalization"]
    if base_model is not None:
        extra["scale_factor"] = base_model.scale_factor
        extra["normalization"] = base_model.spec["normalization"]
        extra["output_range"] = base_model.spec["output_range"]
        extra["base_model"] = {"name": base_model.name, "sha256": base_model.sha256}
        if (base_model.spec.get("training_data") or {}).get("degradation"):
            extra["degradation"] = degradation_of(base_model.spec)
    spec = _spec(recipe, root=root, extra=extra)
    net_kwargs = dict(recipe.network)
    network = init_network(recipe.heuristic, seed=seed, **net_kwargs)
    validation = fitted.get("validation")
    t_train = time.perf_counter()
    job = train_network(
        network, sampler, heuristic=recipe.heuristic, steps=steps,
        batch_size=recipe.batch_size, lr=recipe.lr, schedule="cosine", seed=seed,
        loss_options=recipe.loss_options, spec=spec, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume, validation=validation,
        validate_every=min(recipe.validate_every, steps) if validation else None,
        device="auto",
    )
    curve = _LearningCurve(checkpoint_dir, resume=resume)

    def see(event):
        curve.see(event)
        return {"phase": "train", **event}

    model = yield from relay(job, see)
    train_seconds = time.perf_counter() - t_train
    if recipe.spread_sigma:
        from ..models import Im2ImModel
        from ..models._srnet import with_spread_sigma

        smoothed = with_spread_sigma(model.network, recipe.spread_sigma)
        model = Im2ImModel(smoothed, {**model.spec, "kwargs": dict(smoothed.config),
                                      "halo": smoothed.halo})
    card: dict[str, Any] = {
        "description": recipe.description,
        "training": {
            "recipe": name,
            "command": command or f"python recipes/train_zoo.py {name}",
            "steps": steps,
            "seed": seed,
            "batch_size": recipe.batch_size,
            "patch": [recipe.patch, recipe.patch],
            "optimizer": f"Adam, lr {recipe.lr}, cosine schedule to 0",
            "augmentation": recipe.augment,
            "loss_options": recipe.loss_options,
            "network": net_kwargs,
            "wall_time_s": round(curve.seconds_before + train_seconds, 1),
            "resumed": bool(resume),
            "machine": _machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    if curve.validation:
        card["training"]["validation"] = {**_validation_where(recipe), **curve.summary()}
    if "baseline_threshold" in fitted:
        card["baseline_parameters"] = {"threshold": fitted["baseline_threshold"]}
    if "baseline_gain" in fitted:
        card["baseline_parameters"] = {
            "gain": fitted["baseline_gain"], "offset": fitted["baseline_offset"]
        }
    spec["card"] = card
    path = save_model(model, output, spec=spec, overwrite=True, half=True)
    if evaluate:
        yield {"phase": "evaluate", "recipe": name}
        shipped = load_model(path)  # float16 weights, as shipped
        card["held_out"] = _rounded(measure_card(shipped, name, root=root, base_model=base_model))
        card["subset"] = _rounded(
            measure_card(shipped, name, subset=True, root=root, base_model=base_model)
        )
        card["subset"]["tolerance"] = _SUBSET_TOLERANCE
        card["evaluation_wall_time_s"] = round(time.perf_counter() - t_start - train_seconds, 1)
        spec["card"] = card
        path = save_model(shipped, output, spec=spec, overwrite=True, half=True)
    (path / "README.md").write_text(model_card_markdown(json.loads(
        (path / "model.json").read_text(encoding="utf-8"))), encoding="utf-8")
    yield {"phase": "saved", "path": str(path)}
    return path

