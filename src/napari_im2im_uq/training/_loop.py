"""The training loop: one generator that yields progress and returns the trained model."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._jobs import run_to_end
from .._validation import check_int
from ..models import Im2ImModel, build_network
from ._checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from ._losses import heuristic_loss
from ._sampling import PatchSampler

__all__ = [
    "SCHEDULES",
    "fit",
    "init_network",
    "learning_rate",
    "resolve_device",
    "run_to_end",
    "train_network",
]

#: Learning-rate schedules of :func:`train_network`.
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


def resolve_device(device="auto") -> torch.device:
    """Return the torch device of a ``device`` argument: "auto" is CUDA when present, else CPU.

    Examples
    --------
    >>> resolve_device("cpu").type
    'cpu'
    >>> resolve_device("auto").type in ("cpu", "cuda")
    True
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (TypeError, RuntimeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (or a torch.device); got {device!r}"
        ) from None


def _autocast(device: torch.device, amp: bool):
    """bfloat16 autocast of the forward pass on CUDA when ``amp``; nothing on the CPU."""
    import contextlib

    if amp and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _validation_loss(network, validation, *, heuristic, loss_options, device, amp) -> float:
    """Mean loss of the network (eval mode, no gradient) on the validation batches."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            if callable(validation):
                return float(validation(network))
            total, count = 0.0, 0
            for x_np, y_np in validation:
                x = torch.from_numpy(np.ascontiguousarray(x_np)).to(device)
                y = torch.from_numpy(np.ascontiguousarray(y_np)).to(device)
                with _autocast(device, amp):
                    raw = network(x)
                loss = heuristic_loss(raw.float(), y, heuristic, inputs=x, **loss_options)
                total += float(loss.item()) * x.shape[0]
                count += x.shape[0]
            return total / count
    finally:
        network.train(was_training)


def _check_validation(validation):
    if validation is None or callable(validation):
        return validation
    try:
        batches = [(np.asarray(x), np.asarray(y)) for x, y in validation]
    except (TypeError, ValueError):
        batches = None
    if not batches or any(x.ndim != 4 or len(x) != len(y) or len(x) == 0 for x, y in batches):
        raise ValueError(
            "validation must be a callable network -> loss, or a non-empty list of (x, y) "
            "batches with x of shape (B, C, H, W) and y with the same B; got "
            f"{type(validation).__name__}"
        )
    return batches


_VALIDATION_JSON = "validation-{step}.json"
_BEST = "best-{step}.safetensors"


def _save_validation_state(folder, step: int, state: dict[str, Any]) -> None:
    """Write the validation history and best weights of step ``step`` (before the checkpoint)."""
    import hashlib
    import json

    from safetensors.torch import save as st_save

    from .._files import write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    best = state["best_state"] or {}
    data = st_save({k: v.contiguous() for k, v in best.items()}, metadata={"step": str(step)})
    record = {key: state[key] for key in ("history", "best_step", "best_val_loss", "bad",
                                          "stopped")}
    record["step"] = step
    record["sha256"] = hashlib.sha256(data).hexdigest()
    write_atomic(folder / _BEST.format(step=step), data)
    write_atomic(folder / _VALIDATION_JSON.format(step=step),
                 (json.dumps(record, indent=1) + "\n").encode())


def _prune_validation_state(folder, step: int) -> None:
    """Remove the validation files of other steps (once the checkpoint of ``step`` is whole)."""
    keep = {_VALIDATION_JSON.format(step=step), _BEST.format(step=step)}
    for path in Path(folder).glob("validation-*.json"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
    for path in Path(folder).glob("best-*.safetensors"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _load_validation_state(folder, step: int) -> dict[str, Any]:
    import hashlib
    import json

    from safetensors.torch import load as st_load

    folder = Path(folder)
    path = folder / _VALIDATION_JSON.format(step=step)
    weights = folder / _BEST.format(step=step)
    if not path.is_file() or not weights.is_file():
        raise ValueError(
            f"cannot resume: the checkpoint in {folder} (step {step}) was made with validation "
            f"but {path.name} or {weights.name} is missing; start again without resume"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise ValueError(
            f"{weights} does not match {path.name} (sha256): the checkpoint was modified"
        )
    best = st_load(data)
    return {
        "history": [dict(h) for h in record["history"]],
        "best_step": record["best_step"],
        "best_val_loss": record["best_val_loss"],
        "bad": int(record["bad"]),
        "stopped": bool(record["stopped"]),
        "best_state": best or None,
    }


def _state_copy(network) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}


def train_network(
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
    validation=None,
    validate_every: int | None = None,
    patience: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool = True,
    data_fingerprint: str | None = None,
    validate_first: bool = False,
) -> Generator[dict[str, Any], None, Im2ImModel]:
    """Train a network with Adam on random patches; a generator of progress.

    Each step draws a batch from ``sampler`` with ``numpy.random.default_rng([seed, step])``
    (so the data of a step do not depend on what ran before), sets the learning rate of the
    schedule, and takes one Adam step on :func:`heuristic_loss`. Runs on the CPU with the same
    seed, initial weights and thread count give bit-identical weights; a run resumed from a
    checkpoint gives the same weights as an uninterrupted one.

    With ``validation``, the loss on the validation batches (network in eval mode, no
    gradient) is measured every ``validate_every`` steps and after the last one; the weights
    of the lowest validation loss are kept and are the returned model's; with ``patience``,
    training stops after that many validations without a lower loss. A checkpoint is written
    at every validation, holding the best weights and the validation history, so a resumed
    run continues exactly. Closing the generator (a cancel) writes a checkpoint of the steps
    done.

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
        Save every this many steps (default: only at the end and at validations).
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one (its configuration
        must match). Without it an existing checkpoint there is an error, never overwritten.
    validation : callable or list of (x, y), optional
        ``network -> loss`` (called in eval mode without gradient), or fixed batches of
        normalised (input, target) arrays scored with the head's loss.
    validate_every : int, optional
        Steps between validations (default ``max(1, steps // 20)``).
    patience : int, optional
        Stop after this many validations without a lower validation loss.
    device : str or torch.device
        "cpu", "cuda", "auto" (CUDA when present) ...; the network is moved there.
    amp : bool
        On CUDA, run the forward pass under bfloat16 autocast (mixed precision); ignored on
        the CPU.
    data_fingerprint : str, optional
        Identifies the training data (and split); a checkpoint of other data is not resumed.
    validate_first : bool
        Also validate the initial weights (step 0), which then compete for the best: when
        fine-tuning, a run that only makes the model worse returns it unchanged.

    Yields
    ------
    dict
        ``{"phase": "train", "step", "total", "loss", "lr", "seconds"}`` after each step (and
        ``resumed_from`` on the first event of a resumed run); ``{"phase": "validate", "step",
        "total", "val_loss", "best_step", "best_val_loss"}`` after each validation;
        ``{"phase": "stopped_early", "step", "best_step"}`` when patience ran out.

    Returns
    -------
    Im2ImModel
        The trained model in eval mode (``StopIteration.value``; see :func:`run_to_end`), with
        the best validation weights when ``validation`` is given.

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.training import PatchSampler, init_network, train_network
    >>> y = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> sampler = PatchSampler([y[None]], [y], patch_shape=(16, 16))
    >>> net = init_network("quantile", depth=1, base_channels=4)
    >>> job = train_network(net, sampler, heuristic="quantile", steps=3, batch_size=2)
    >>> [event["step"] for event in job]
    [1, 2, 3]
    >>> x, t = sampler.sample(np.random.default_rng(9), 2)
    >>> job = train_network(net, sampler, heuristic="quantile", steps=4, batch_size=2,
    ...                     validation=[(x, t)], validate_every=2)
    >>> [e["phase"] for e in job if e["phase"] != "train"]
    ['validate', 'validate']
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
    validation = _check_validation(validation)
    if validation is not None:
        validate_every = (max(1, steps // 20) if validate_every is None
                          else check_int(validate_every, "validate_every"))
    if patience is not None:
        patience = check_int(patience, "patience")
        if validation is None:
            raise ValueError("patience needs validation (the early stopping watches its loss); "
                             "got validation=None")
    device = resolve_device(device)
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
    if validation is not None:
        config.update(validate_every=validate_every, patience=patience)
        if validate_first:
            config["validate_first"] = True
    if data_fingerprint is not None:
        config["data_fingerprint"] = str(data_fingerprint)
    network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=weight_decay)
    state: dict[str, Any] = {"history": [], "best_step": None, "best_val_loss": None, "bad": 0,
                             "stopped": False, "best_state": None}
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
        if validation is not None:
            state = _load_validation_state(checkpoint_dir, start)

    def save(done: int) -> None:
        if validation is not None:
            _save_validation_state(checkpoint_dir, done, state)
        save_checkpoint(checkpoint_dir, network=network, optimizer=optimizer, step=done,
                        config=config)
        if validation is not None:
            _prune_validation_state(checkpoint_dir, done)

    t0 = time.perf_counter()
    saved_step = start
    done = start
    try:
        if validation is not None and validate_first and start == 0:
            val = _validation_loss(network, validation, heuristic=heuristic,
                                   loss_options=loss_options, device=device, amp=amp)
            if not math.isfinite(val):
                raise FloatingPointError(f"the validation loss of the initial weights is {val}")
            state.update(history=[{"step": 0, "val_loss": val}], best_step=0, best_val_loss=val,
                         best_state=_state_copy(network))
            yield {"phase": "validate", "step": 0, "total": steps, "val_loss": val,
                   "best_step": 0, "best_val_loss": val}
        for step in range(start, steps if not state["stopped"] else start):
            rng = np.random.default_rng([seed, step])
            x_np, y_np = sampler.sample(rng, batch_size)
            x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
            lr_t = learning_rate(
                step, lr=lr, steps=steps, schedule=schedule, lr_min=lr_min,
                step_size=step_size, gamma=gamma,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr_t
            network.train()
            with _autocast(device, amp):
                raw = network(x)
            loss = heuristic_loss(raw.float(), y, heuristic, inputs=x, **loss_options)
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
            events = [{
                "phase": "train",
                "step": done,
                "total": steps,
                "loss": float(loss.item()),
                "lr": lr_t,
                "seconds": time.perf_counter() - t0,
            }]
            validated = validation is not None and (done % validate_every == 0 or done == steps)
            if validated:
                val = _validation_loss(network, validation, heuristic=heuristic,
                                       loss_options=loss_options, device=device, amp=amp)
                if not math.isfinite(val):
                    raise FloatingPointError(
                        f"the validation loss became {val} at step {done}; lower lr (got {lr})"
                    )
                state["history"].append({"step": done, "val_loss": val})
                if state["best_val_loss"] is None or val < state["best_val_loss"]:
                    state.update(best_step=done, best_val_loss=val, bad=0,
                                 best_state=_state_copy(network))
                else:
                    state["bad"] += 1
                    state["stopped"] = patience is not None and state["bad"] >= patience
                events.append({"phase": "validate", "step": done, "total": steps,
                               "val_loss": val, "best_step": state["best_step"],
                               "best_val_loss": state["best_val_loss"]})
                if state["stopped"]:
                    events.append({"phase": "stopped_early", "step": done,
                                   "best_step": state["best_step"]})
            if checkpoint_dir is not None and (
                done == steps or validated or state["stopped"]
                or (checkpoint_every is not None and done % checkpoint_every == 0)
            ):
                save(done)
                saved_step = done
            if resumed_from is not None:
                events[0]["resumed_from"] = resumed_from
                resumed_from = None
            yield from events
            if state["stopped"]:
                break
    except GeneratorExit:  # cancelled: keep the steps done, so resume=True continues here
        if checkpoint_dir is not None and done > saved_step:
            save(done)
        raise
    if state["best_state"] is not None:
        network.load_state_dict(state["best_state"])
    full_spec = dict(spec or {})
    full_spec["heuristic"] = heuristic
    if heuristic == "softmax":  # the bins span the normalised targets [0, 1]
        full_spec.setdefault("output_range", [0.0, 1.0])
    return Im2ImModel(network, full_spec)


def fit(network: torch.nn.Module, sampler: PatchSampler, **kwargs) -> Im2ImModel:
    """Run :func:`train_network` to the end and return the trained model.

    Parameters
    ----------
    network, sampler, **kwargs
        As for :func:`train_network`; ``callback`` (optional) receives each progress event.

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
    return run_to_end(train_network(network, sampler, **kwargs), callback=callback)

