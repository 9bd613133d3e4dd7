"""The training loop: one generator that yields progress and returns the trained model."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from .._jobs import run_to_end
from .._validation import check_int
from ..models import Im2ImModel, build_network
from ._checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from ._losses import heuristic_loss
from ._sampling import PatchSampler

__all__ = ["SCHEDULES", "fit", "init_network", "learning_rate", "run_to_end", "train"]

#: Learning-rate schedules of :func:`train`.
SCHEDULES = ("cosine", "step", "constant")


def init_network(heuristic: str, *, seed: int = 0, **kwargs) -> torch.nn.Module:
    """Build an untrained network whose initial weights depend only on ``seed``.

    :func:`~napari_im2im_uq.models.build_network` under a private copy of torch's random
    state (the global state is left as it was).

    Parameters
    ----------
    heuristic : str
        The head (see :func:`~napari_im2im_uq.models.build_network`).
    seed : int
        Seed of the initial weights.
    **kwargs
        Passed to :func:`~napari_im2im_uq.models.build_network`.

    Returns
    -------
    torch.nn.Module
        The network.

    Examples
    --------
    >>> import torch
    >>> a = init_network("quantile", seed=3, depth=1, base_channels=2)
    >>> b = init_network("quantile", seed=3, depth=1, base_channels=2)
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    True
    """
    seed = check_int(seed, "seed", minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(heuristic, **kwargs)


def _check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return float(value)


def learning_rate(
    step: int,
    *,
    lr: float,
    steps: int,
    schedule: str = "cosine",
    lr_min: float = 0.0,
    step_size: int | None = None,
    gamma: float = 0.1,
) -> float:
    """Learning rate used at optimisation step ``step`` (0-based) of ``steps``.

    - "cosine": ``lr_min + (lr - lr_min) (1 + cos(pi step / steps)) / 2``.
    - "step": ``lr * gamma ** (step // step_size)`` (``step_size`` defaults to ``steps // 3``).
    - "constant": ``lr``.

    Parameters
    ----------
    step : int
        The step, ``0 <= step < steps``.
    lr : float
        Initial learning rate.
    steps : int
        Total number of steps.
    schedule : {"cosine", "step", "constant"}
    lr_min : float
        Final learning rate of the cosine schedule.
    step_size : int, optional
        Steps between decays of the step schedule.
    gamma : float
        Decay factor of the step schedule.

    Returns
    -------
    float

    Examples
    --------
    >>> learning_rate(0, lr=1e-3, steps=100), learning_rate(50, lr=1e-3, steps=100)
    (0.001, 0.0005)
    >>> learning_rate(70, lr=1.0, steps=100, schedule="step", step_size=30)
    0.010000000000000002
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    if schedule == "constant":
        return float(lr)
    if schedule == "cosine":
        return float(lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * step / steps)))
    size = step_size if step_size is not None else max(1, steps // 3)
    return float(lr * gamma ** (step // size))


def train(
    network: torch.nn.Module,
    sampler: PatchSampler,
    *,
    heuristic: str,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    schedule: str = "cosine",
    lr_min: float = 0.0,
    step_size: int | None = None,
    gamma: float = 0.1,
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    seed: int = 0,
    loss_options: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> Generator[dict[str, Any], None, Im2ImModel]:
    """Train a network with Adam on random patches; a generator of progress.

    Each step draws a batch from ``sampler`` with ``numpy.random.default_rng([seed, step])``
    (so the data of a step do not depend on what ran before), sets the learning rate of the
    schedule, and takes one Adam step on :func:`heuristic_loss`. Runs on the CPU with the same
    seed, initial weights and thread count give bit-identical weights; a run resumed from a
    checkpoint gives the same weights as an uninterrupted one.

    Parameters
    ----------
    network : torch.nn.Module
        The network to train, in place (see :func:`init_network` for seeded initial weights).
    sampler : PatchSampler
        Source of (input, target) patches, already normalised.
    heuristic : str
        The head, which picks the loss (see :func:`heuristic_loss`).
    steps : int
        Total number of optimisation steps.
    batch_size : int
        Patches per step.
    lr, schedule, lr_min, step_size, gamma
        The learning-rate schedule (see :func:`learning_rate`).
    weight_decay : float
        Adam's L2 penalty.
    grad_clip : float, optional
        Clip the gradient norm to this value.
    seed : int
        Seed of the patch sampling.
    loss_options : dict, optional
        Keyword options of the head's loss.
    spec : dict, optional
        ``model.json`` fields of the returned model (``heuristic`` is filled in, and for
        "softmax" ``output_range`` defaults to ``[0, 1]``, the span of the bins).
    checkpoint_dir : path-like, optional
        Where to save checkpoints (see :func:`save_checkpoint`); the last step is always saved.
    checkpoint_every : int, optional
        Save every this many steps (default: only at the end).
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one (its configuration
        must match). Without it an existing checkpoint there is an error, never overwritten.

    Yields
    ------
    dict
        After each step: ``step`` (steps done), ``total``, ``loss`` (of that batch), ``lr``,
        ``seconds`` (since this call started) and, on the first event of a resumed run,
        ``resumed_from``.

    Returns
    -------
    Im2ImModel
        The trained model in eval mode (``StopIteration.value``; see :func:`run_to_end`).

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.training import PatchSampler, init_network, train
    >>> y = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> sampler = PatchSampler([y[None]], [y], patch_shape=(16, 16))
    >>> net = init_network("quantile", depth=1, base_channels=4)
    >>> job = train(net, sampler, heuristic="quantile", steps=3, batch_size=2)
    >>> [event["step"] for event in job]
    [1, 2, 3]
    """
    steps = check_int(steps, "steps")
    batch_size = check_int(batch_size, "batch_size")
    seed = check_int(seed, "seed", minimum=0)
    _check_positive("lr", lr)
    _check_positive("weight_decay", weight_decay, allow_zero=True)
    if grad_clip is not None:
        _check_positive("grad_clip", grad_clip)
    learning_rate(0, lr=lr, steps=steps, schedule=schedule)  # validates the schedule
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"network must be a torch.nn.Module; got {type(network).__name__}")
    if not isinstance(sampler, PatchSampler):
        raise ValueError(f"sampler must be a PatchSampler; got {type(sampler).__name__}")
    if checkpoint_every is not None:
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
    loss_options = dict(loss_options or {})
    config = {
        "heuristic": heuristic,
        "steps": steps,
        "batch_size": batch_size,
        "lr": float(lr),
        "schedule": schedule,
        "lr_min": float(lr_min),
        "step_size": step_size,
        "gamma": float(gamma),
        "weight_decay": float(weight_decay),
        "grad_clip": grad_clip,
        "seed": seed,
        "loss_options": loss_options,
        "patch_shape": list(sampler.patch_shape),
        "network": dict(getattr(network, "config", {})),
    }
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=weight_decay)
    start = 0
    resumed_from = None
    if checkpoint_dir is not None and has_checkpoint(checkpoint_dir):
        if not resume:
            raise FileExistsError(
                f"checkpoint_dir {checkpoint_dir} already holds a checkpoint; pass resume=True "
                "to continue it, or choose another folder"
            )
        restored = load_checkpoint(checkpoint_dir, network=network, optimizer=optimizer)
        saved = restored["config"]
        diff = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
        if diff:
            key = diff[0]
            raise ValueError(
                f"cannot resume: the checkpoint in {checkpoint_dir} was made with {key}="
                f"{saved.get(key)!r}; this run has {key}={config.get(key)!r} "
                f"({len(diff)} setting(s) differ: {diff})"
            )
        start = resumed_from = restored["step"]
    t0 = time.perf_counter()
    for step in range(start, steps):
        rng = np.random.default_rng([seed, step])
        x_np, y_np = sampler.sample(rng, batch_size)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        lr_t = learning_rate(
            step, lr=lr, steps=steps, schedule=schedule, lr_min=lr_min,
            step_size=step_size, gamma=gamma,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr_t
        network.train()
        raw = network(x)
        loss = heuristic_loss(raw, y, heuristic, inputs=x, **loss_options)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"the {heuristic} loss became {loss.item()} at step {step + 1}; lower lr "
                f"(got {lr}) or set grad_clip"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        optimizer.step()
        done = step + 1
        if checkpoint_dir is not None and (
            done == steps or (checkpoint_every is not None and done % checkpoint_every == 0)
        ):
            save_checkpoint(
                checkpoint_dir, network=network, optimizer=optimizer, step=done, config=config
            )
        event = {
            "step": done,
            "total": steps,
            "loss": float(loss.item()),
            "lr": lr_t,
            "seconds": time.perf_counter() - t0,
        }
        if resumed_from is not None:
            event["resumed_from"] = resumed_from
            resumed_from = None
        yield event
    full_spec = dict(spec or {})
    full_spec["heuristic"] = heuristic
    if heuristic == "softmax":  # the bins span the normalised targets [0, 1]
        full_spec.setdefault("output_range", [0.0, 1.0])
    return Im2ImModel(network, full_spec)


def fit(network: torch.nn.Module, sampler: PatchSampler, **kwargs) -> Im2ImModel:
    """Run :func:`train` to the end and return the trained model.

    Parameters
    ----------
    network, sampler, **kwargs
        As for :func:`train`; ``callback`` (optional) receives each progress event.

    Returns
    -------
    Im2ImModel

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.training import PatchSampler, fit, init_network
    >>> y = np.zeros((16, 16), np.float32)
    >>> sampler = PatchSampler([y[None]], [y], patch_shape=(8, 8))
    >>> model = fit(init_network("residual", depth=1, base_channels=2), sampler,
    ...             heuristic="residual", steps=2)
    >>> model.heuristic
    'residual'
    """
    callback = kwargs.pop("callback", None)
    return run_to_end(train(network, sampler, **kwargs), callback=callback)

