"""Errors and constants of ``napari_im2im_uq.models`` that do not need torch."""

from __future__ import annotations

__all__ = ["FORMAT_VERSION", "HEURISTICS", "LIMITS", "NORMS", "UPSAMPLINGS", "BundleError"]

#: The ``format_version`` written by :func:`save_model`; :func:`load_model` accepts only these.
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

#: The heads a model can have, i.e. what its raw output channels mean.
HEURISTICS = ("quantile", "residual", "gaussian", "softmax", "segmentation", "mask", "point")

#: Normalisation layers of the U-Net.
NORMS = ("batch", "group", "instance", "none")

#: Decoder up-sampling modes of the U-Net.
UPSAMPLINGS = ("transpose", "bilinear")

#: What a bundle may declare: a model.json is untrusted input, checked against these before
#: anything is read in full or built.
LIMITS = {
    "model_json_bytes": 1 << 20,  # model.json, checked before it is read
    "json_depth": 32,  # nesting of model.json, checked before it is parsed
    "safetensors_header_bytes": 1 << 20,  # the JSON header of the weights file
    "parameters": 500_000_000,  # 2 GB of float32 weights
    "halo": 4096,
    "scale_factor": 16,
    "input_channels": 64,
    "classes": 1024,
    "bins": 1024,
}


class BundleError(ValueError):
    """A model bundle (``model.json`` + ``weights.safetensors``) is invalid or was tampered with.

    The message says which field, file or tensor is wrong, what was expected and what was found.
    """
