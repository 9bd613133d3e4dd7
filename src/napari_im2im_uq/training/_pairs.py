"""Train or fine-tune a model on the user's own pairs: one job generator, a recorded spatial split.

:func:`train` gathers the pairs (layers, arrays or files), splits every target plane into
train / validation / held-back regions (:mod:`._split`), trains on patches of the train
regions with early stopping on the validation regions (:func:`~._loop.train_network`),
measures the model next to a baseline on the held-back regions, and writes a bundle whose
``model.json`` records the regions (``training_regions``), the units, and a model card.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._jobs import relay
from .._validation import check_int
from ._pairs_data import TASKS
from ._pairs_setup import prepare

__all__ = ["TrainResult", "train"]

_NOT_STATED = "not stated"


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    path : pathlib.Path
        The bundle folder.
    model : Im2ImModel
        The trained model, loaded from the bundle.
    split : dict
        The spec's ``training_regions`` (train, validation and held-back boxes per plane).
    quality : dict
        Figures of the model and the baseline on the held-back regions (the card's
        ``held_out``: :func:`~napari_im2im_uq.training._baselines.held_back_quality` with
        ``held_out``, ``averaging`` and the fitted ``baseline_parameters``).
    stopped_early : bool
        Whether early stopping ended the training.
    """

    path: Path
    model: Any
    split: dict
    quality: dict
    stopped_early: bool


def _machine() -> str:
    import torch

    gpu = "GPU " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU, {gpu}"


def _curve_summary(losses: list[tuple[int, float]], points: int = 20) -> list[list[float]]:
    """Summarise the training loss as ``points`` [last step, mean loss] of equal windows of steps."""
    if not losses:
        return []
    chunks = np.array_split(np.arange(len(losses)), min(points, len(losses)))
    return [[int(losses[c[-1]][0]), round(float(np.mean([losses[i][1] for i in c])), 6)]
            for c in chunks if len(c)]


def _check_output(output, overwrite, checkpoint_dir):
    from ._checkpoint import check_bundle_output, check_checkpoint_folder

    if not isinstance(output, str | os.PathLike) or not str(output):
        raise ValueError(f"output must be a folder path for the bundle; got {output!r}")
    output = Path(output)
    check_bundle_output(output, overwrite=bool(overwrite))
    if checkpoint_dir is None:
        checkpoint_dir = output.with_name(output.name + ".checkpoint")
    check_checkpoint_folder(checkpoint_dir)
    return output, Path(checkpoint_dir)


def _remove_checkpoint(folder: Path) -> None:
    """Remove the files of a finished run's checkpoint (and the folder when it is then empty)."""
    from ._checkpoint import CHECKPOINT_JSON

    (folder / CHECKPOINT_JSON).unlink(missing_ok=True)  # first: no longer a checkpoint
    names = ["weights.safetensors", "optimizer.safetensors"]
    names += [p.name for p in folder.glob("validation-*.json")]
    names += [p.name for p in folder.glob("best-*.safetensors")]
    for name in names:
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something of the user's is there
        folder.rmdir()


def _check_resume(checkpoint_dir: Path, fingerprint: str, resume: bool) -> None:
    from ._checkpoint import CHECKPOINT_JSON, has_checkpoint

    if not has_checkpoint(checkpoint_dir):
        return
    if not resume:
        raise FileExistsError(
            f"checkpoint_dir {checkpoint_dir} holds the checkpoint of an earlier run; pass "
            "resume=True to continue it, or remove it (or choose another checkpoint_dir) to "
            "start again"
        )
    try:
        saved = json.loads((checkpoint_dir / CHECKPOINT_JSON).read_text(encoding="utf-8"))
        theirs = saved["config"].get("data_fingerprint")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        theirs = None
    if theirs != fingerprint:
        raise ValueError(
            f"cannot resume: the checkpoint in {checkpoint_dir} was made from other data, "
            f"another split or another setup (fingerprint {theirs!r}; this run {fingerprint!r}). "
            "Give the same pairs, region_shape, fractions, seed, task, head and base_model, or "
            "start again without resume"
        )


def _quality(model, pairs, split_dict, task, train_boxes, n_classes, base):
    """Figures of the model and its baseline on the held-back regions (training._baselines)."""
    from . import _baselines

    mask_base = base if task == "mask" else None
    baseline = _baselines.fit_baseline(task, pairs.inputs, pairs.targets, train_boxes,
                                       scale_factor=pairs.scale_factor, n_classes=n_classes,
                                       base_model=mask_base)
    quality = _baselines.held_back_quality(model, pairs.inputs, pairs.targets, split_dict,
                                           baseline, task=task, base_model=mask_base)
    return {
        "held_out": f"the {quality['n_regions']} held-back regions of training_regions "
        f"({quality['n_pixels']} target pixels scored), never trained on",
        "averaging": "pooled over the pixels of the held-back regions",
        **quality,
        "baseline_parameters": baseline,
    }


def train(
    input,
    target=None,
    *,
    head: str = "quantile",
    task: str | None = None,
    base_model=None,
    output: str | os.PathLike,
    scale_factor: int | None = None,
    region_shape=None,
    fractions=(0.7, 0.1, 0.2),
    steps: int | None = None,
    batch_size: int | None = None,
    patch: int | None = None,
    lr: float | None = None,
    device="auto",
    seed: int = 0,
    patience: int | None = None,
    validate_every: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    name: str | None = None,
    description: str | None = None,
    licence: str | None = None,
    citation: str | None = None,
    authors=None,
    network: dict | None = None,
) -> Generator[dict[str, Any], None, TrainResult]:
    """Train (or fine-tune) a model on your own pairs and write its bundle; a job generator.

    Every target plane is cut into regions assigned at random to train, validation and held
    back (:func:`~napari_im2im_uq.training.spatial_split`); patches come from train regions
    only, the validation loss (early stopping) from validation regions only, and the quality
    on the card from held-back regions only. The bundle records the regions
    (``model.json`` ``training_regions``) so calibration refuses tiles that overlap the train
    or validation regions: calibrate inside the held-back ones
    (:func:`~napari_im2im_uq.api.held_back_shapes`).

    Units: outputs are in the target's own units (``output_range`` = the training targets'
    [min, max]); integer inputs are divided by their dtype's range, then normalised with the
    mean and standard deviation of the train regions. Fine-tuning keeps the base model's.

    Parameters
    ----------
    input : layer, array, list of them, or path
        2-D ``(Y, X)``, a stack ``(Z, Y, X)``, or with channels ``(C, Y, X)`` /
        ``(Z, C, Y, X)``. A path (file or folder) is read by ``napari_im2im_uq.data.read_pairs``.
    target : layer, array, list of them, or path, optional
        The same planes, ``scale_factor`` times larger; a Labels layer or integer labels for
        segmentation (0 = not annotated, 1..K the classes). None with ``base_model``: train
        its mask network, ``input`` being the truth on its output grid (its input is then the
        nearest down-sampling ``[::s, ::s]``).
    head : {"quantile", "residual", "gaussian", "softmax"}
        The regression head (segmentation and mask tasks have their own).
    task : {"regression", "segmentation", "mask"}, optional
        Inferred when None: "mask" without target, "segmentation" for labels, else regression.
    base_model : str, path-like or Im2ImModel, optional
        Fine-tune it (its weights, head and units), or for "mask" the model whose errors the
        mask network learns.
    output : path-like
        The bundle folder (never replacing a folder of yours; an earlier bundle only with
        ``overwrite``).
    scale_factor : int, optional
        Checked against the shapes (target / input).
    region_shape : (int, int), optional
        Region rows and columns in target pixels (default from the data size).
    fractions : (float, float, float)
        Train, validation and held-back fractions of the regions.
    steps, batch_size, patch, lr : optional
        Default from the data size and the device (see the card's ``training.defaults``):
        ``patch`` = the region in input pixels, ``steps = clip(20 x training pixels / patch
        pixels, 200, 3000)``, batch 8 on the CPU and 32 on a GPU, lr 2e-3 (1e-4 fine-tuning).
        Fine-tuning also validates the base model's weights (step 0): when no step improves
        on them, they are what the bundle keeps (``best_step`` 0).
    device : str
        "auto" (CUDA when present), "cpu", "cuda", ...
    seed : int
        Seed of the split, the initial weights and the patches.
    patience : int, optional
        Validations without a lower validation loss before stopping (default 5).
    validate_every : int, optional
        Steps between validations (default ``max(10, steps // 20)``).
    resume : bool
        Continue the checkpoint in ``checkpoint_dir`` (after a cancel or a crash); refused
        when it was made from other data or another split. The checkpoint is removed once
        the bundle is written.
    overwrite : bool
        Replace an earlier bundle at ``output``.
    checkpoint_dir : path-like, optional
        Default ``<output>.checkpoint``.
    name, description, licence, citation, authors : optional
        The card's fields ("not stated" when not given).
    network : dict, optional
        ``init_network`` options of a new network (default ``training._pairs_setup.DEFAULT_NETWORK``:
        depth 3, 16 base channels, batch norm).

    Yields
    ------
    dict
        ``{"phase": "data"}``, ``{"phase": "train", "step", "total", "loss", "lr",
        "seconds"}``, ``{"phase": "validate", "step", "total", "val_loss", "best_step",
        "best_val_loss"}``, ``{"phase": "stopped_early", "step", "best_step"}``,
        ``{"phase": "evaluate"}``, ``{"phase": "saved", "path"}``.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_im2im_uq.training import run_to_end, train
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((96, 96)).astype(np.float32)
    >>> with tempfile.TemporaryDirectory() as tmp:  # doctest: +SKIP
    ...     result = run_to_end(train(x, 2 * x, output=f"{tmp}/m", steps=5,
    ...                               region_shape=(32, 32)))
    >>> sorted(result.split)  # doctest: +SKIP
    ['fingerprint', 'fractions', 'images', 'region_shape', 'seed']
    """
    import torch

    from ..models import load_model, save_model
    from ._card import model_card_markdown
    from ._loop import resolve_device, train_network

    t_start = time.perf_counter()
    output, checkpoint_dir = _check_output(output, overwrite, checkpoint_dir)
    seed = check_int(seed, "seed", minimum=0)
    dev = resolve_device(device)
    for key, value in (("steps", steps), ("batch_size", batch_size), ("patch", patch),
                       ("patience", patience), ("validate_every", validate_every),
                       ("scale_factor", scale_factor)):
        if value is not None:
            check_int(value, key)
    if lr is not None and not (isinstance(lr, int | float) and not isinstance(lr, bool)
                               and 0 < lr < float("inf")):
        raise ValueError(f"lr must be a finite number > 0 or None; got {lr!r}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None; got {task!r}")
    yield {"phase": "data"}
    run = prepare(input, target, head=head, task=task, base_model=base_model,
                  scale_factor=scale_factor, region_shape=region_shape, fractions=fractions,
                  seed=seed, network=network, patch=patch, steps=steps, batch_size=batch_size,
                  lr=lr, validate_every=validate_every, patience=patience, device=dev)
    base, task, head, spec, split_dict = run.base, run.task, run.head, run.spec, run.split_dict
    fingerprint = hashlib.sha256(json.dumps(
        [split_dict, task, head, None if base is None else base.sha256, spec],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    _check_resume(checkpoint_dir, fingerprint, resume)
    spec["name"] = name or output.name
    t_train = time.perf_counter()
    validation = run.validation
    job = train_network(
        run.network, run.sampler, heuristic=head, steps=run.steps, batch_size=run.batch_size,
        lr=run.lr, schedule="cosine", seed=seed, loss_options=run.loss_options, spec=spec,
        checkpoint_dir=checkpoint_dir, resume=resume, validation=validation,
        validate_every=run.validate_every if validation else None,
        patience=run.patience if validation else None, device=dev,
        data_fingerprint=fingerprint, validate_first=run.fine_tuning,
    )
    losses: list[tuple[int, float]] = []
    history: list[dict] = []
    state = {"stopped_early": False, "best_step": None, "resumed_from": None}

    def see(event):
        if event["phase"] == "train":
            losses.append((event["step"], event["loss"]))
            state["resumed_from"] = event.pop("resumed_from", state["resumed_from"])
        elif event["phase"] == "validate":
            history.append({"step": event["step"], "val_loss": event["val_loss"]})
            state["best_step"] = event["best_step"]
        elif event["phase"] == "stopped_early":
            state["stopped_early"] = True
        return event

    model = yield from relay(job, see)
    stopped_early, best_step, resumed_from = (
        state["stopped_early"], state["best_step"], state["resumed_from"])
    train_seconds = time.perf_counter() - t_train
    yield {"phase": "evaluate"}
    n_classes = len(spec["classes"]) if "classes" in spec else None
    quality = _quality(model, run.pairs, split_dict, task, run.train_boxes, n_classes, base)
    last = losses[-1][0] if losses else run.steps
    card = {
        "description": description or (
            f"{task} ({head} head) trained on the user's pairs"
            + (f", fine-tuned from {base.name}" if base is not None and task != "mask" else "")),
        "training": {
            "command": "napari_im2im_uq.training.train",
            "task": task, "head": head,
            "base_model": None if base is None else base.name,
            "steps": run.steps, "steps_done": last, "best_step": best_step,
            "stopped_early": stopped_early, "seed": seed, "batch_size": run.batch_size,
            "patch": [run.patch, run.patch], "lr": run.lr,
            "optimizer": f"Adam, lr {run.lr}, cosine schedule to 0",
            "augmentation": run.augment, "loss_options": run.loss_options,
            "network": dict(getattr(run.network, "config", {})),
            "region_shape": list(run.split.region_shape),
            "n_regions": {p: sum(len(im[p]) for im in split_dict["images"])
                          for p in ("train", "validation", "held_back")},
            "validate_every": run.validate_every if validation else None,
            "patience": run.patience if validation else None,
            "validation": "validation regions" if validation else "none (no annotated "
            "validation region): no early stopping",
            "defaults": run.defaults,
            "curves": {"train_loss": _curve_summary(losses), "val_loss": history},
            "wall_time_s": round(train_seconds, 1),
            "total_wall_time_s": round(time.perf_counter() - t_start, 1),
            "resumed_from": resumed_from,
            "machine": _machine(), "device": str(dev),
            "torch": torch.__version__, "python": platform.python_version(),
        },
    }
    card["held_out"] = quality
    spec.update(
        training_regions=split_dict,
        training_data={"sources": run.pairs.sources, "planes": len(run.pairs.targets),
                       "held_back": "regions listed in training_regions (never trained on)"},
        licence=licence or _NOT_STATED, citation=citation or _NOT_STATED,
        authors=authors if authors else _NOT_STATED, card=card,
    )
    path = save_model(model, output, spec=spec, overwrite=True)
    (path / "README.md").write_text(model_card_markdown(json.loads(
        (path / "model.json").read_text(encoding="utf-8"))), encoding="utf-8")
    _remove_checkpoint(checkpoint_dir)  # the bundle is whole: nothing left to resume
    yield {"phase": "saved", "path": str(path)}
    return TrainResult(path, load_model(path), split_dict, quality, stopped_early)
