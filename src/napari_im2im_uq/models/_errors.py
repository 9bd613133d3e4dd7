"""Errors and constants of ``napari_im2im_uq.models`` that do not need torch."""

from __future__ import annotations

__all__ = ["FORMAT_VERSION", "HEURISTICS", "NORMS", "UPSAMPLINGS", "BundleError"]

#: The ``format_version`` written by :func:`save_model`; :func:`load_model` accepts only these.
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

#: The heads a model can have, i.e. what its raw output channels mean.
HEURISTICS = ("quantile", "residual", "gaussian", "softmax", "segmentation", "mask")

#: Normalisation layers of the U-Net.
NORMS = ("batch", "group", "instance", "none")

#: Decoder up-sampling modes of the U-Net.
UPSAMPLINGS = ("transpose", "bilinear")


class BundleError(ValueError):
    """A model bundle (``model.json`` + ``weights.safetensors``) is invalid or was tampered with.

    The message says which field, file or tensor is wrong, what was expected and what was found.
    """
