"""Training: losses for each heuristic and the mask network, a training loop, the zoo recipes.

Importing this package does not import torch; the names below load on first use (module
``__getattr__``).

Losses (raw network channels and normalised targets in, a scalar tensor out)
    :func:`pinball_loss`, :func:`quantile_loss`, :func:`residual_loss`,
    :func:`gaussian_nll_loss`, :func:`softmax_bin_loss`, :func:`segmentation_loss`,
    :func:`mask_loss` (with a differentiable :func:`ssim`), and :func:`heuristic_loss`
    which picks one by heuristic.
Your own pairs
    :func:`train` (a job generator: layers, arrays or files in, a bundle out, returning a
    :class:`TrainResult`), its recorded spatial split :func:`spatial_split` / :class:`Split`
    and :func:`held_back_shapes` (the held-back regions as napari rectangles).
Loop
    :class:`PatchSampler` (random aligned patches with flip/rot90 augmentation),
    :func:`train_network` (a generator of progress dicts that returns the trained
    :class:`~napari_im2im_uq.models.Im2ImModel`; optional validation, early stopping, CUDA
    with mixed precision), :func:`fit` and :func:`run_to_end`, :func:`resolve_device`,
    :func:`init_network`, :func:`learning_rate`, :func:`save_checkpoint` /
    :func:`load_checkpoint` (safetensors + JSON, no pickle).
Recipes
    :func:`list_recipes`, :func:`run_recipe` (a generator: train, save the bundle, measure
    its card) and :func:`measure_card` (the quality figures of a zoo model on held-out data).
"""

from __future__ import annotations

from .._lazy import attach

__all__ = [
    "AUGMENTATIONS",
    "DISTANCES",
    "POINT_LOSSES",
    "SCHEDULES",
    "PatchSampler",
    "Split",
    "TrainResult",
    "fit",
    "gaussian_nll_loss",
    "held_back_shapes",
    "heuristic_loss",
    "init_network",
    "learning_rate",
    "list_recipes",
    "load_checkpoint",
    "mask_loss",
    "measure_card",
    "nearest_downsample",
    "pinball_loss",
    "quantile_loss",
    "residual_loss",
    "resolve_device",
    "run_recipe",
    "run_to_end",
    "save_checkpoint",
    "segmentation_loss",
    "softmax_bin_loss",
    "softmax_bin_targets",
    "spatial_split",
    "ssim",
    "train",
    "train_network",
]

_LAZY = {
    "DISTANCES": "._losses",
    "POINT_LOSSES": "._losses",
    "gaussian_nll_loss": "._losses",
    "heuristic_loss": "._losses",
    "mask_loss": "._losses",
    "pinball_loss": "._losses",
    "quantile_loss": "._losses",
    "residual_loss": "._losses",
    "segmentation_loss": "._losses",
    "softmax_bin_loss": "._losses",
    "softmax_bin_targets": "._losses",
    "ssim": "._losses",
    "AUGMENTATIONS": "._sampling",
    "PatchSampler": "._sampling",
    "nearest_downsample": "._sampling",
    "SCHEDULES": "._loop",
    "fit": "._loop",
    "init_network": "._loop",
    "learning_rate": "._loop",
    "resolve_device": "._loop",
    "run_to_end": "._loop",
    "train_network": "._loop",
    "Split": "._split",
    "held_back_shapes": "._split",
    "spatial_split": "._split",
    "TrainResult": "._pairs",
    "train": "._pairs",
    "load_checkpoint": "._checkpoint",
    "save_checkpoint": "._checkpoint",
    "list_recipes": "._recipes",
    "measure_card": "._recipes",
    "run_recipe": "._recipes",
}


__getattr__, __dir__ = attach(__name__, globals(), _LAZY)
