"""Device and precision choice (torch is imported only when a choice is resolved)."""

from __future__ import annotations

import re

__all__ = ["DEVICES", "PRECISIONS", "check_device", "check_precision", "resolve"]

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
_CUDA_INDEX = re.compile(r"^cuda:\d+$")


def check_device(device) -> str:
    """Validate the *value* of ``device`` ("auto", "cpu", "cuda", "cuda:N" or "mps")."""
    if isinstance(device, str) and (device in DEVICES or _CUDA_INDEX.match(device)):
        return device
    raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'); got {device!r}")


def check_precision(precision) -> str:
    """Validate the *value* of ``precision``."""
    if isinstance(precision, str) and precision in PRECISIONS:
        return precision
    raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve(device: str, precision: str):
    """Return ``(device, dtype)`` to run on in this process.

    ``device="auto"`` picks CUDA, then MPS, then the CPU. ``precision="auto"`` is float16 on
    CUDA and float32 elsewhere. float16 on the CPU is refused (slow and poorly supported by
    CPU kernels); bfloat16 is allowed everywhere.

    Raises
    ------
    ValueError
        When the device asked for is not available here, or float16 is asked for on the CPU.
    """
    import torch

    device = check_device(device)
    precision = check_precision(precision)
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif _mps_available(torch):
            device = "mps"
        else:
            device = "cpu"
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device must be available on this machine: {device!r} was asked for but "
                "torch.cuda.is_available() is False here; use device='auto' or 'cpu'"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif device == "mps" and not _mps_available(torch):
        raise ValueError(
            "device must be available on this machine: 'mps' was asked for but "
            "torch.backends.mps.is_available() is False here; use device='auto' or 'cpu'"
        )
    if precision == "auto":
        precision = "float16" if device.startswith("cuda") else "float32"
    if precision == "float16" and device == "cpu":
        raise ValueError(
            "precision must be 'float32' or 'bfloat16' on the CPU; got 'float16' (half "
            "precision is for GPUs). Use precision='auto' to let the device decide"
        )
    return device, getattr(torch, precision)
