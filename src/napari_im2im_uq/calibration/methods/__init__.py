"""The registry of calibration methods: one entry per method, asked instead of switching on names.

Each entry (a :class:`Method`) says what model outputs the method reads, which rules and
options it takes, how it turns cut tiles into a calibration, how a result is applied to whole
images (as :class:`Product` arrays), its held-out loss, and its diagnostics metrics. To add a
method, write one module with a :class:`Method` subclass and add its ``ENTRY`` to
``_ENTRIES`` below.

Examples
--------
>>> from napari_im2im_uq.calibration import methods
>>> methods.names()
('intervals', 'trust_mask', 'mask', 'segmentation')
>>> methods.get("intervals").needs
('prediction', 'lower', 'upper')
"""

from __future__ import annotations

from . import intervals, mask, segmentation, trust_mask
from ._base import Method, Product

__all__ = ["Method", "Product", "get", "names"]

_ENTRIES = (intervals.ENTRY, trust_mask.ENTRY, mask.ENTRY, segmentation.ENTRY)
_REGISTRY = {entry.name: entry for entry in _ENTRIES}


def names() -> tuple[str, ...]:
    """Return the method names, in registry order."""
    return tuple(_REGISTRY)


def get(name: str) -> Method:
    """Return the registry entry of the method ``name``.

    Raises
    ------
    ValueError
        When ``name`` is not a method: ``method must be one of (...); got 'x'``.
    """
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"method must be one of {names()}; got {name!r}")
    return entry
