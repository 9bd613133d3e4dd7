"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

__all__ = ["CHECKPOINT_JSON", "check_bundle_output", "check_checkpoint_folder", "has_checkpoint",
           "load_checkpoint", "save_checkpoint"]

CHECKPOINT_JSON = "checkpoint.json"
_WEIGHTS = "weights.safetensors"
_OPTIMIZER = "optimizer.safetensors"
_FORMAT = 1
_WRITER = "napari_im2im_uq checkpoint"
#: The files ``train --output`` writes into a bundle folder.
BUNDLE_FILES = ("model.json", "weights.safetensors", "README.md")


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a complete checkpoint (its ``checkpoint.json`` is written last).

    Examples
    --------
    >>> has_checkpoint("/nonexistent-folder")
    False
    """
    return (Path(folder) / CHECKPOINT_JSON).is_file()


def _write_atomic(path: Path, data: bytes) -> None:
    from .._files import write_atomic  # a unique temporary name: never a file of the user's

    write_atomic(path, data)


def _safetensors_metadata(path: Path):
    """Return the ``__metadata__`` of a safetensors file's header, or None."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= 1 << 20:
                return None
            header = json.loads(f.read(size))
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def check_checkpoint_folder(folder: str | os.PathLike) -> None:
    """Refuse a checkpoint folder whose tensor files this module did not write.

    A folder without ``checkpoint.json`` may hold ``weights.safetensors`` or
    ``optimizer.safetensors`` only if their headers carry this module's mark (a save cut
    short); anything else is the user's and is never replaced.

    Examples
    --------
    >>> check_checkpoint_folder("/nonexistent-folder")
    """
    folder = Path(folder)
    if not folder.is_dir() or has_checkpoint(folder):
        return
    theirs = [n for n in (_WEIGHTS, _OPTIMIZER) if (folder / n).exists()
              and not {"writer", "step"} & set(_safetensors_metadata(folder / n) or {})]
    if theirs:
        raise FileExistsError(
            f"checkpoint folder {folder} holds {', '.join(theirs)} that training did not write "
            f"(no {CHECKPOINT_JSON}); they are never replaced. Choose another checkpoint folder"
        )


def check_bundle_output(output: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuse an output folder for a trained bundle that would replace files of the user's.

    A folder holding a bundle (``model.json`` of one) is replaced only with ``overwrite``, and
    then only its ``model.json``, ``weights.safetensors`` and ``README.md``. A folder holding
    any of those files but no bundle is never written into.

    Examples
    --------
    >>> check_bundle_output("/nonexistent-folder", overwrite=False)
    """
    output = Path(output)
    if not output.exists():
        return
    if not output.is_dir():
        raise FileExistsError(f"output must be a folder for the bundle; {output} is a file")
    present = [n for n in BUNDLE_FILES if (output / n).exists()]
    if not present:
        return
    try:
        spec = json.loads((output / "model.json").read_text(encoding="utf-8"))
        bundle = isinstance(spec, dict) and "architecture" in spec and "sha256" in spec
    except (OSError, ValueError, UnicodeDecodeError):
        bundle = False
    if not bundle:
        raise FileExistsError(
            f"output {output} holds {', '.join(present)} but no model bundle (a model.json "
            "written by this tool); they are never replaced, even with overwrite=True "
            "(--overwrite). Choose another output folder"
        )
    if not overwrite:
        raise FileExistsError(
            f"output {output} already holds a bundle; pass overwrite=True (--overwrite) to "
            f"replace its {', '.join(BUNDLE_FILES)}"
        )


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        raise TypeError("tensor in a JSON field")
    return value


def save_checkpoint(
    folder: str | os.PathLike,
    *,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: dict[str, Any],
) -> Path:
    """Write a resumable checkpoint: network and optimizer tensors, step and configuration.

    ``weights.safetensors`` holds the network's state dict (float32, exact), and
    ``optimizer.safetensors`` the optimizer's per-parameter state tensors (keys
    ``state.<param index>.<name>``); ``checkpoint.json`` holds the step, the optimizer's
    parameter groups and other scalars, the training configuration, and the SHA-256 of both
    tensor files. It is written last, each file atomically, so an interrupted save leaves the
    previous checkpoint readable.

    Parameters
    ----------
    folder : path-like
        The checkpoint folder (created if needed; a previous checkpoint there is replaced).
    network : torch.nn.Module
    optimizer : torch.optim.Optimizer
    step : int
        Number of optimisation steps done.
    config : dict
        JSON-able training configuration, checked on resume.

    Returns
    -------
    pathlib.Path
        The folder.

    Examples
    --------
    >>> import tempfile, torch
    >>> net = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.Adam(net.parameters())
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = save_checkpoint(tmp, network=net, optimizer=opt, step=0, config={})
    ...     load_checkpoint(tmp, network=net, optimizer=opt)["step"]
    0
    """
    folder = Path(folder)
    check_checkpoint_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in network.state_dict().items()}
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in opt_state["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = _jsonable(value)
    groups = [_jsonable(group) for group in opt_state["param_groups"]]
    meta = {"step": str(step), "writer": _WRITER}
    weights_bytes = _st_save(weights, metadata=meta)
    opt_bytes = _st_save(tensors, metadata=meta)
    record = {
        "format": _FORMAT,
        "step": int(step),
        "config": _jsonable(config),
        "optimizer": type(optimizer).__name__,
        "param_groups": groups,
        "state_scalars": scalars,
        "sha256": {
            _WEIGHTS: hashlib.sha256(weights_bytes).hexdigest(),
            _OPTIMIZER: hashlib.sha256(opt_bytes).hexdigest(),
        },
    }
    _write_atomic(folder / _WEIGHTS, weights_bytes)
    _write_atomic(folder / _OPTIMIZER, opt_bytes)
    _write_atomic(folder / CHECKPOINT_JSON, (json.dumps(record, indent=1) + "\n").encode())
    return folder


def load_checkpoint(
    folder: str | os.PathLike,
    *,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``network`` (and optimizer).

    Nothing is unpickled. The tensor files must match the SHA-256 recorded in
    ``checkpoint.json``.

    Parameters
    ----------
    folder : path-like
        The checkpoint folder.
    network : torch.nn.Module
        Receives the weights (same architecture as when saved).
    optimizer : torch.optim.Optimizer, optional
        Receives its state (same type and parameters as when saved).

    Returns
    -------
    dict
        ``step`` (int) and ``config`` (dict) of the checkpoint.

    Examples
    --------
    >>> load_checkpoint("/nonexistent-folder", network=None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: folder must hold a checkpoint (checkpoint.json); got /nonexistent-folder
    """
    folder = Path(folder)
    if not has_checkpoint(folder):
        raise FileNotFoundError(
            f"folder must hold a checkpoint ({CHECKPOINT_JSON}); got {folder}"
        )
    try:
        record = json.loads((folder / CHECKPOINT_JSON).read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{folder / CHECKPOINT_JSON} is not valid JSON: {err}") from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise ValueError(
            f"{folder / CHECKPOINT_JSON} must be a checkpoint of format {_FORMAT}; got "
            f"{record.get('format') if isinstance(record, dict) else record!r}"
        )
    loaded = {}
    for name in (_WEIGHTS, _OPTIMIZER):
        data = (folder / name).read_bytes() if (folder / name).is_file() else b""
        digest = hashlib.sha256(data).hexdigest()
        if digest != record["sha256"][name]:
            raise ValueError(
                f"{folder / name} does not match {CHECKPOINT_JSON} (sha256 expected "
                f"{record['sha256'][name]}; got {digest}): the checkpoint is incomplete or was "
                "modified"
            )
        loaded[name] = _st_load(data)
    network.load_state_dict(loaded[_WEIGHTS], strict=True)
    if optimizer is not None:
        if record["optimizer"] != type(optimizer).__name__:
            raise ValueError(
                f"optimizer must be a {record['optimizer']} to resume this checkpoint; got "
                f"{type(optimizer).__name__}"
            )
        state: dict[int, dict[str, Any]] = {}
        for key, value in loaded[_OPTIMIZER].items():
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
        for index, values in record["state_scalars"].items():
            state.setdefault(int(index), {}).update(values)
        groups = record["param_groups"]
        for group in groups:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    return {"step": int(record["step"]), "config": record["config"]}
