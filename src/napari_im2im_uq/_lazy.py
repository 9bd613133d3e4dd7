"""Lazy attributes for subpackages whose contents import heavy packages (torch, dask, zarr)."""

from __future__ import annotations

import importlib


def attach(package: str, namespace: dict, mapping: dict[str, str]):
    """Return ``(__getattr__, __dir__)`` that import ``mapping[name]`` on first use.

    ``mapping`` maps an exported name to the relative module that defines it; the value is cached
    in the package's namespace after the first access, so later lookups cost nothing.
    """

    def __getattr__(name: str):
        if name in mapping:
            value = getattr(importlib.import_module(mapping[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
