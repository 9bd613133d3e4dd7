"""What :func:`~napari_im2im_uq.training.train` trains on: pairs, split, network and schedule.

:func:`prepare` gathers the pairs, cuts the spatial split, builds (or copies, to fine-tune)
the network with the units it declares, and makes the patch sampler of the train regions,
the validation batches of the validation regions and the default schedule.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._pairs_data import (
    Pairs,
    gather_pairs,
    input_units,
    mask_pair,
    network_inputs,
    target_units,
)
from ._split import Split, spatial_split

__all__ = ["DEFAULT_NETWORK", "DEFAULT_PATIENCE", "QUANTILES", "REGRESSION_HEADS",
           "SOFTMAX_BINS", "Setup", "prepare"]

#: Heads of the regression task.
REGRESSION_HEADS = ("quantile", "residual", "gaussian", "softmax")
#: The network of a model trained from scratch (keyword arguments of ``init_network``).
DEFAULT_NETWORK = {"depth": 3, "base_channels": 16, "norm": "batch"}
#: Bins of a new softmax head; quantile levels of the quantile and softmax heads.
SOFTMAX_BINS = 32
QUANTILES = [0.05, 0.95]
#: Default learning rates: training from scratch (and mask networks), fine-tuning.
LR, FINE_TUNING_LR = 2e-3, 1e-4
#: Most classes of a new segmentation head (labels 1..K).
MAX_CLASSES = 32
#: Validations without a lower validation loss before training stops (default ``patience``).
DEFAULT_PATIENCE = 5


@dataclass
class Setup:
    """Everything a training run needs, from :func:`prepare`."""

    pairs: Pairs
    base: Any
    task: str
    head: str
    split: Split
    network: Any
    spec: dict[str, Any]
    sampler: Any
    validation: list | None
    steps: int
    batch_size: int
    patch: int
    lr: float
    validate_every: int
    patience: int
    augment: str
    loss_options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def fine_tuning(self) -> bool:
        """Whether the run starts from the base model's weights."""
        return self.base is not None and self.task != "mask"

    @property
    def split_dict(self) -> dict[str, Any]:
        """The spec's ``training_regions``."""
        return self.split.to_spec()

    @property
    def train_boxes(self) -> list[list]:
        """The train boxes of each target plane."""
        return [list(im.train) for im in self.split.images]


def _load_base(base_model):
    if base_model is None:
        return None
    from ..models import Im2ImModel, load_model

    if isinstance(base_model, Im2ImModel):
        return base_model
    if isinstance(base_model, str | os.PathLike):
        return load_model(base_model)
    raise ValueError(f"base_model must be None, a zoo name, a bundle folder or an Im2ImModel; "
                     f"got {type(base_model).__name__}")


def _head_of(task: str, head: str, base) -> str:
    if task == "regression":
        if head not in REGRESSION_HEADS:
            raise ValueError(f"head must be one of {REGRESSION_HEADS} for regression; got "
                             f"{head!r}")
    elif head not in ("quantile", task):  # "quantile" is the default: the task decides
        raise ValueError(f"head must be {task!r} (or left at its default) for task {task!r}; "
                         f"got {head!r}")
    else:
        head = task
    if base is not None and task != "mask" and base.heuristic != head:
        raise ValueError(f"head must match the base model's to fine-tune it: {base.name!r} has "
                         f"head {base.heuristic!r}; got {head!r}")
    return head


def _crop(arr: np.ndarray, box, s: int) -> np.ndarray:
    r0, c0, r1, c1 = box
    return arr[..., r0 // s:r1 // s, c0 // s:c1 // s]


def _seg_labels(y: np.ndarray) -> np.ndarray:
    """Labels 0 (not annotated), 1..K -> -100 (ignored by the loss), 0..K-1."""
    return np.where(y > 0, y.astype(np.int64) - 1, -100)


def _network_for(task, head, base, pairs, network, seed):
    """Return the network to train and the spec fields it brings (base model's or new units)."""
    from ._loop import init_network

    n_in = pairs.inputs[0].shape[0]
    if base is not None and task != "mask":
        if network is not None:
            raise ValueError("network must be None when fine-tuning base_model (its network is "
                             f"trained further); got {network!r}")
        given = [c for c in base.in_channels if c not in (base.spec.get("derived_channels")
                                                          or {})]
        if len(base.in_channels) != len(given):
            raise ValueError(f"base_model {base.name!r} derives input channels "
                             f"({base.in_channels}); fine-tuning such models is not supported")
        if n_in != len(given):
            raise ValueError(f"input must have the {len(given)} channel(s) of base_model "
                             f"{base.name!r} ({given}); got {n_in}")
        if base.scale_factor != pairs.scale_factor:
            raise ValueError(f"the pairs' scale factor (target / input = {pairs.scale_factor}) "
                             f"must be base_model {base.name!r}'s ({base.scale_factor})")
        spec = base.spec
        for key in ("sha256", "card", "training_regions", "training_data", "name", "licence",
                    "citation", "authors"):
            spec.pop(key, None)
        if head == "segmentation":
            k = max(int(t.max()) for t in pairs.targets)
            if k > len(spec["classes"]):
                raise ValueError(f"target labels must be 1..{len(spec['classes'])}, the classes "
                                 f"{spec['classes']} of base_model {base.name!r} (0 = not "
                                 f"annotated); got labels up to {k}")
        spec["base_model"] = {"name": base.name, "sha256": base.sha256}
        return copy.deepcopy(base.network).float().to("cpu"), spec
    kwargs = dict(DEFAULT_NETWORK if network is None else network)
    if not isinstance(network, dict | type(None)):
        raise ValueError(f"network must be None or a dict of init_network options; got "
                         f"{network!r}")
    if task == "mask":
        if base.spec.get("derived_channels"):
            raise ValueError(f"base_model {base.name!r} derives input channels; mask networks "
                             "of such models are not supported")
        if n_in != len(base.in_channels):
            raise ValueError(f"input must have the {len(base.in_channels)} channel(s) of "
                             f"base_model {base.name!r}; got {n_in}")
        spec = {k: v for k, v in base.spec.items() if k in (
            "input_channels", "preprocessing", "input_range", "normalization", "output_range",
            "scale_factor")}
        spec["base_model"] = {"name": base.name, "sha256": base.sha256}
        return init_network("mask", seed=seed, in_channels=n_in + 1, **kwargs), spec
    spec = {"input_channels": ["input"] if n_in == 1 else [f"channel {i}" for i in range(n_in)],
            "scale_factor": pairs.scale_factor}
    extra = {}
    if head == "softmax":
        extra["bins"] = spec["bins"] = SOFTMAX_BINS
    if head in ("quantile", "softmax"):
        spec["quantiles"] = list(QUANTILES)
    if head == "segmentation":
        k = int(max(int(t.max()) for t in pairs.targets))
        if k < 2:
            raise ValueError("target must annotate at least 2 classes (labels 1..K, 0 = not "
                             f"annotated); got labels up to {k}")
        if k > MAX_CLASSES:
            raise ValueError(
                f"target labels must be 1..K with K <= {MAX_CLASSES} for segmentation (0 = not "
                f"annotated); got labels up to {k}. For an image target pass "
                "task='regression'")
        extra["n_classes"] = k
        spec["classes"] = [f"label {i}" for i in range(1, k + 1)]
        spec["output_range"] = None
    net = init_network(head, seed=seed, in_channels=n_in, scale_factor=pairs.scale_factor,
                       **extra, **kwargs)
    return net, spec


def _planes_for_network(task, base, pairs, spec):
    """(network inputs, targets) per plane; inputs on the input grid (the output grid for mask)."""
    if task == "mask":
        made = [mask_pair(base, x, y) for x, y in zip(pairs.inputs, pairs.targets, strict=True)]
        return [m[0] for m in made], [m[1].astype(np.float32) for m in made], 1
    xs = [network_inputs(spec, x) for x in pairs.inputs]
    if task == "segmentation":
        return xs, [_seg_labels(y) for y in pairs.targets], pairs.scale_factor
    lo, hi = spec["output_range"]
    ys = [((y.astype(np.float64) - lo) / (hi - lo)).astype(np.float32) for y in pairs.targets]
    return xs, ys, pairs.scale_factor


def _fit_to(n: int, divisor: int) -> int:
    return n - n % divisor


def _validation_batches(xs, ys, boxes, s, divisor, batch_size, task):
    """Return fixed validation batches: each validation region, cut to a multiple of the divisor."""
    crops = []
    for x, y, bx in zip(xs, ys, boxes, strict=True):
        for box in bx:
            xc = _crop(x, box, s)
            xc = xc[..., :_fit_to(xc.shape[-2], divisor), :_fit_to(xc.shape[-1], divisor)]
            if min(xc.shape[-2:]) == 0:
                continue
            yc = _crop(y, box, 1)[:xc.shape[-2] * s, :xc.shape[-1] * s]
            if task == "segmentation" and not (yc >= 0).any():
                continue
            crops.append((xc, yc))
    batches = []
    for i in range(0, len(crops), batch_size):
        part = crops[i:i + batch_size]
        x = np.stack([c[0] for c in part]).astype(np.float32)
        y = np.stack([c[1] for c in part])
        batches.append((x, y if task == "segmentation" else y[:, None].astype(np.float32)))
    return batches or None


def _check_base_units(base, pairs: Pairs, spec: dict[str, Any], task: str) -> None:
    """Refuse pairs far outside the units of the base model (fine-tuning and mask keep them)."""
    from ..models._units import FAR, apply, resolve

    declared = spec.get("input_range")
    if declared is not None:
        lo, hi = (float(v) for v in declared)
        pre = {"preprocessing": spec.get("preprocessing") or []}
        mapped = [apply(x[None], resolve(pre, x[None])["ops"], channel_axis=1)
                  for x in pairs.inputs]
        olo = min(float(np.nanmin(v)) for v in mapped)
        ohi = max(float(np.nanmax(v)) for v in mapped)
        if olo < lo - FAR * (hi - lo) or ohi > hi + FAR * (hi - lo):
            raise ValueError(
                f"input values span [{olo:.4g}, {ohi:.4g}] after base_model {base.name!r}'s "
                f"preprocessing, far outside [{lo:.4g}, {hi:.4g}], the range it was trained on: "
                "give the input in its units (e.g. a float image in 0-255 divided by 255)")
    if task in ("regression", "mask") and spec.get("output_range") is not None:
        lo, hi = (float(v) for v in spec["output_range"])
        tlo = min(float(np.min(t)) for t in pairs.targets)
        thi = max(float(np.max(t)) for t in pairs.targets)
        if tlo < lo - (hi - lo) or thi > hi + (hi - lo):
            raise ValueError(
                f"target values span [{tlo:.4g}, {thi:.4g}], but base_model {base.name!r} "
                f"predicts in [{lo:.4g}, {hi:.4g}] (its output_range) and training from it "
                "keeps its units: give the target in them (e.g. a uint8 image divided by 255)")


def prepare(input, target, *, head, task, base_model, scale_factor, region_shape, fractions,
            seed, network, patch, steps, batch_size, lr, validate_every, patience,
            device) -> Setup:
    """Gather, split and set up a training run (the arguments of ``train``, checked there)."""
    from ._region_sampler import RegionSampler

    dev = device
    base = _load_base(base_model)
    pairs = gather_pairs(input, target, task=task, base_model=base, scale_factor=scale_factor)
    task = pairs.task
    head = _head_of(task, head, base)
    s_split = pairs.scale_factor
    split = spatial_split([t.shape for t in pairs.targets], region_shape=region_shape,
                          fractions=fractions, seed=seed, fingerprints=pairs.fingerprints,
                          sources=pairs.sources, multiple_of=s_split)
    train_boxes = [list(im.train) for im in split.images]
    net, spec = _network_for(task, head, base, pairs, network, seed)
    if base is None and task != "mask":
        spec.update(input_units(pairs.inputs, train_boxes, pairs.scale_factor))
        if task == "regression":
            spec.update(target_units(pairs.targets, train_boxes))
    else:
        _check_base_units(base, pairs, spec, task)
    xs, ys, s = _planes_for_network(task, base, pairs, spec)
    divisor = int(net.divisor)
    region_in = min(split.region_shape) // s
    defaults = {}
    if patch is None:
        patch = _fit_to(region_in, divisor)
        defaults["patch"] = "the region in input pixels"
    if patch < divisor or patch % divisor or patch > region_in:
        raise ValueError(f"patch must be a multiple of {divisor} (the network's divisor) between "
                         f"{divisor} and {region_in} (the region in input pixels); got {patch}")
    usable = [[box for box in boxes
               if task != "segmentation" or (_crop(y, box, 1) >= 0).any()]
              for y, boxes in zip(ys, train_boxes, strict=True)]
    if not any(usable):
        raise ValueError("target has no annotated pixel (label > 0) in the train regions; "
                         "annotate more of the image or change seed or region_shape")
    augment = "dihedral" if s == 1 else "transpose"  # flips would misalign an s > 1 pair
    sampler = RegionSampler(xs, ys, usable, scale_factor=s, patch_shape=(patch, patch),
                            augment=augment)
    if batch_size is None:
        batch_size = 32 if dev.type == "cuda" else 8
        defaults["batch_size"] = "8 on the CPU, 32 on a GPU"
    if steps is None:
        pixels = sum((b[2] - b[0]) * (b[3] - b[1]) for boxes in usable for b in boxes)
        steps = int(np.clip(round(20 * pixels / (patch * s) ** 2), 200, 3000))
        defaults["steps"] = "clip(20 x training pixels / patch pixels, 200, 3000)"
    if lr is None:
        lr = FINE_TUNING_LR if base is not None and task != "mask" else LR
        defaults["lr"] = f"{LR} ({FINE_TUNING_LR} fine-tuning)"
    if validate_every is None:
        validate_every = max(10, steps // 20)
        defaults["validate_every"] = "max(10, steps // 20)"
    if patience is None:
        patience = DEFAULT_PATIENCE
        defaults["patience"] = DEFAULT_PATIENCE
    validation = _validation_batches(xs, ys, [list(im.validation) for im in split.images], s,
                                     divisor, batch_size, task)
    loss_options = {"quantiles": list(QUANTILES)} if head == "quantile" else {}
    return Setup(pairs, base, task, head, split, net, spec, sampler, validation, steps,
                 batch_size, patch, lr, validate_every, patience, augment, loss_options,
                 defaults)
