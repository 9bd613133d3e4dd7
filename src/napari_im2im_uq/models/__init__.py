"""Image-to-image models: a U-Net family, uncertainty heads and safe model bundles.

Importing this package does not import torch; the torch-based names below are loaded on first
use (module ``__getattr__``).

Heads (``heuristic``) and their outputs, in data units:

- "quantile": ``prediction``, ``lower``, ``upper`` (point +/- softplus offsets: never crossing)
- "residual": ``prediction``, ``lower``, ``upper``, ``residual`` (``prediction -/+ residual``)
- "gaussian": ``prediction``, ``lower``, ``upper``, ``std`` (``prediction -/+ std``)
- "softmax": ``prediction`` (expectation over K bins), ``lower``, ``upper`` (bin quantiles)
- "segmentation": ``probabilities`` over classes
- "mask": ``mask`` in [0, 1] (Kutiel et al.'s mask network)

A bundle is a folder with ``weights.safetensors`` and ``model.json``; :func:`load_model` reads
it with ``json`` and ``safetensors`` only and never unpickles. A bundle may declare derived
input channels (computed from the given ones, :func:`add_derived_channels`); loaded models are
held in one cache per process (:func:`load_cached`). A bioimage.io package (a folder with its
RDF, or the zip) loads through the same functions (:func:`load_package`, read and validated by
bioimageio.spec; ``pytorch_state_dict`` weights only with ``trust_code=True``), and
:func:`export_bioimageio` writes one.
"""

from __future__ import annotations

from .._lazy import attach
from ._errors import FORMAT_VERSION, HEURISTICS, NORMS, UPSAMPLINGS, BundleError

__all__ = [
    "ARCHITECTURES",
    "BORDER_MODE",
    "FORMAT_VERSION",
    "HEURISTICS",
    "NORMS",
    "TRANSFORMS",
    "STD_FLOOR",
    "UPSAMPLINGS",
    "BioimageioModel",
    "BundleError",
    "Im2ImModel",
    "UNet2d",
    "add_derived_channels",
    "build_network",
    "decode_head",
    "export_bioimageio",
    "given_channels",
    "head_channels",
    "is_package",
    "list_models",
    "load_cached",
    "load_model",
    "load_package",
    "output_names",
    "qpi_tikhonov_channel",
    "read_package_spec",
    "read_spec",
    "receptive_field_radius",
    "save_model",
    "unet_receptive_extent",
]

_LAZY = {
    "ARCHITECTURES": "._unet",
    "UNet2d": "._unet",
    "receptive_field_radius": "._unet",
    "unet_receptive_extent": "._unet",
    "STD_FLOOR": "._heads",
    "build_network": "._heads",
    "decode_head": "._heads",
    "head_channels": "._heads",
    "output_names": "._heads",
    "BORDER_MODE": "._model",
    "Im2ImModel": "._model",
    "list_models": "._catalog",
    "read_spec": "._catalog",
    "load_model": "._bioimageio",
    "save_model": "._bundle",
    "load_cached": "._bioimageio",
    "BioimageioModel": "._bioimageio_model",
    "export_bioimageio": "._bioimageio",
    "is_package": "._bioimageio_rdf",
    "load_package": "._bioimageio",
    "read_package_spec": "._bioimageio_rdf",
    "TRANSFORMS": "._derived",
    "add_derived_channels": "._derived",
    "given_channels": "._derived",
    "qpi_tikhonov_channel": "._derived",
}


__getattr__, __dir__ = attach(__name__, globals(), _LAZY)
