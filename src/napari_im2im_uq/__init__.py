"""Calibrated, distribution-free uncertainty for image-to-image networks in microscopy.

Importing this package is cheap: torch, dask and zarr are imported only by the functions that
need them, so napari can list the plugin's menus without loading a deep-learning stack.
"""

from ._warnings import Im2ImUQWarning

__version__ = "0.1.0"

__all__ = ["Im2ImUQWarning", "__version__"]
