"""Uncertainty for a point-prediction model, computed inside the block task (torch inside).

``uncertainty=`` of :func:`~napari_im2im_uq.inference.predict` turns the ``prediction`` of any
regression model (a "point" model above all) into the outputs the calibration methods take:

- ``"tta"``: the 8 rotations and flips of the dihedral group (or a chosen subset) of each
  tile; ``prediction`` is the mean of the de-augmented predictions.
- ``"mc_dropout"``: ``samples`` passes with the network's dropout layers on (refused for a
  network without dropout); ``prediction`` is their mean.
- ``"ensemble"``: the model and ``models``, which must share input channels, scale factor
  and output names; ``prediction`` is their mean.
- ``"constant"``: the constant-width baseline, ``lower/upper = prediction -/+ 1`` in output
  units, so a calibrated ``lam`` is the half-width itself.

The sampled kinds give ``lower/upper = prediction -/+ std`` (the interval method then
calibrates ``lam`` exactly as for the four heads), ``std`` (the per-pixel standard deviation
of the samples, ``ddof=0``) and ``std_smoothed``, the square root of the kernel-smoothed
variance of Adame et al. 2025 (section 2.2): ``E[mu^2 * K] - (E[mu] * K)^2`` with ``K`` a
``kernel x kernel`` box, then a Gaussian blur of ``blur`` output pixels (truncated at 3
sigma). Both are trust-mask scores (``sigma="std"`` or ``"std_smoothed"``).

Tiling. The block window (the tile and its halo, its size a multiple of the divisor, its
origin on the untiled pooling grid) is transformed as a whole, run, and transformed back; so
the tiled result equals the *padded-image* TTA: pad the image as :meth:`Im2ImModel.__call__`
does (mirror ``halo`` pixels, then to a multiple of the divisor at the bottom and right),
transform the padded image, run, transform back, crop. (TTA of the unpadded image,
``g^-1(model(g(image)))``, puts the divisor padding on another side, so the pooling grid
differs: that differs near the bottom/right borders only by the network's lack of
translation invariance.) The smoothed score needs the outputs ``kernel // 2 + ceil(3 blur)``
output pixels beyond each tile: the halo grows by that (in input pixels, rounded up to a
multiple of the divisor so the pooling grid stays put).
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "TRANSFORMS", "Uncertainty", "UQModel", "prepare", "transform", "untransform"]

#: The uncertainty sources of a point-prediction model.
KINDS = ("tta", "mc_dropout", "ensemble", "constant")

#: The dihedral group D4, in the order of their indices: k < 4 rotates by k * 90 degrees
#: (counter-clockwise, ``np.rot90``); k >= 4 flips the columns first.
TRANSFORMS = ("identity", "rot90", "rot180", "rot270",
              "flip", "flip_rot90", "flip_rot180", "flip_rot270")

_OPTIONS = {
    "tta": {"transforms", "kernel", "blur"},
    "mc_dropout": {"samples", "seed", "kernel", "blur"},
    "ensemble": {"models", "kernel", "blur"},
    "constant": set(),
}
_MC_LOCK = threading.Lock()
_MC_NETS: dict[tuple, object] = {}


@dataclass(frozen=True, eq=False)
class Uncertainty:
    """What a block task needs to derive the uncertainty outputs (picklable)."""

    kind: str
    transforms: tuple[int, ...] = (0,)
    samples: int = 1
    seed: int = 0
    kernel: int = 3
    blur: float = 1.0
    members: tuple = ()  # ModelRef of the other ensemble members
    offsets: tuple[int, ...] = (0,)  # per member (the model first): halo - its own halo - extra
    halo: int = 0  # the least halo of the plan
    divisor: int = 1  # tile origins and windows are multiples of it

    @property
    def names(self) -> tuple[str, ...]:
        if self.kind == "constant":
            return ("prediction", "lower", "upper")
        return ("prediction", "lower", "upper", "std", "std_smoothed")

    def describe(self) -> dict:
        """Return the record / run-description form (JSON)."""
        out: dict = {"kind": self.kind}
        if self.kind == "tta":
            out["transforms"] = [TRANSFORMS[k] for k in self.transforms]
        elif self.kind == "mc_dropout":
            out.update(samples=self.samples, seed=self.seed)
        elif self.kind == "ensemble":
            out["members"] = [m.model_id for m in self.members]
        if self.kind != "constant":
            out.update(kernel=self.kernel, blur=self.blur)
        return out


def _int_option(opts, name, default, minimum):
    value = opts.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"uncertainty {name!r} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _transforms(value) -> tuple[int, ...]:
    if value is None:
        return tuple(range(8))
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"uncertainty 'transforms' must be a list of names from {TRANSFORMS} "
                         f"or indices 0-7; got {value!r}")
    out = []
    for t in value:
        if isinstance(t, str) and t in TRANSFORMS:
            out.append(TRANSFORMS.index(t))
        elif isinstance(t, int | np.integer) and not isinstance(t, bool) and 0 <= t < 8:
            out.append(int(t))
        else:
            raise ValueError(f"uncertainty 'transforms' must hold names from {TRANSFORMS} or "
                             f"indices 0-7; got {t!r}")
    if len(set(out)) < 2 or len(set(out)) != len(out):
        raise ValueError("uncertainty 'transforms' must hold at least 2 different transforms, "
                         f"each once; got {list(value)!r}")
    return tuple(out)


def _has_dropout(network) -> bool:
    from torch import nn

    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in network.modules())


def _check_member(model, other, index: int) -> None:
    for what, a, b in (("input channels", model.in_channels, other.in_channels),
                       ("scale factor", model.scale_factor, other.scale_factor),
                       ("output names", model.output_names, other.output_names)):
        if a != b:
            raise ValueError(
                f"models[{index}] ({other.name!r}) must have the {what} of the model "
                f"({model.name!r}): expected {a!r}; got {b!r}")


def prepare(uncertainty, model, *, member):
    """Check ``uncertainty`` for ``model``; return an :class:`Uncertainty` or None.

    ``uncertainty`` is None, a kind from :data:`KINDS`, or a dict with "kind" and that kind's
    options (tta: ``transforms``; mc_dropout: ``samples`` (default 16), ``seed``; ensemble:
    ``models`` (names, folders or loaded models); the sampled kinds: ``kernel`` (odd box side,
    default 3) and ``blur`` (Gaussian sigma in output pixels, default 1.0; 0 for none)).
    ``member(m)`` returns ``(loaded model, ModelRef)`` of an ensemble member (the planner
    loads it and makes it the one that runs in this process).
    """
    if uncertainty is None:
        return None
    if isinstance(uncertainty, str):
        opts = {"kind": uncertainty}
    elif isinstance(uncertainty, dict):
        opts = dict(uncertainty)
    else:
        raise ValueError(f"uncertainty must be None, one of {KINDS} or a dict with 'kind' and "
                         f"its options; got {type(uncertainty).__name__}")
    kind = opts.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"uncertainty must be one of {KINDS} (or a dict with such a 'kind'); "
                         f"got {kind!r}")
    unknown = sorted(set(opts) - _OPTIONS[kind])
    if unknown:
        raise ValueError(f"uncertainty {kind!r} takes the options {sorted(_OPTIONS[kind])}; "
                         f"got also {unknown}")
    if "prediction" not in model.output_names or model.heuristic == "mask":
        raise ValueError(
            f"uncertainty={kind!r} needs a model with a 'prediction' output (a point or "
            f"regression model); model {model.name!r} has the outputs {model.output_names}")
    kernel = _int_option(opts, "kernel", 3, 1)
    if kernel % 2 == 0:
        raise ValueError(f"uncertainty 'kernel' must be an odd integer; got {kernel}")
    blur = opts.get("blur", 1.0)
    if isinstance(blur, bool) or not isinstance(blur, int | float) or not 0 <= blur <= 64:
        raise ValueError(f"uncertainty 'blur' must be a number in [0, 64]; got {blur!r}")
    fields: dict = {"kind": kind, "kernel": kernel, "blur": float(blur)}
    members = [model]
    if kind == "tta":
        fields["transforms"] = _transforms(opts.get("transforms"))
    elif kind == "mc_dropout":
        if not _has_dropout(model.network):
            raise ValueError(
                f"uncertainty='mc_dropout' needs a network with dropout layers; model "
                f"{model.name!r} has none. Use 'tta', 'ensemble' or 'constant' instead")
        fields["samples"] = _int_option(opts, "samples", 16, 2)
        fields["seed"] = _int_option(opts, "seed", 0, 0)
    elif kind == "ensemble":
        given = opts.get("models")
        if isinstance(given, str) or not isinstance(given, list | tuple) or not given:
            raise ValueError("uncertainty 'ensemble' needs 'models': a non-empty list of other "
                             f"models (zoo names, bundle folders or loaded models); got {given!r}")
        refs = []
        for i, m in enumerate(given):
            other, ref = member(m)
            _check_member(model, other, i)
            members.append(other)
            refs.append(ref)
        fields["members"] = tuple(refs)
    divisor = math.lcm(*(int(m.divisor) for m in members))
    scale = int(model.scale_factor)
    radius = 0 if kind == "constant" else kernel // 2 + math.ceil(3 * float(blur))
    reach = -(-radius // scale)  # input pixels
    extra = -(-reach // divisor) * divisor  # a multiple of the divisor: the grid stays put
    top = max(int(m.halo) for m in members)
    fields["offsets"] = tuple(top - int(m.halo) for m in members)
    return Uncertainty(halo=top + extra, divisor=divisor, **fields)


# -- the block side ------------------------------------------------------------------------


def transform(x, k: int):
    """Apply the dihedral transform ``k`` (see :data:`TRANSFORMS`) to the last two axes."""
    import torch

    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


def untransform(x, k: int):
    """Undo :func:`transform` ``k``."""
    import torch

    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def _tile_seed(seed: int, tile) -> int:
    digest = hashlib.sha256(np.ascontiguousarray(tile.cpu().numpy()).tobytes())
    digest.update(str(seed).encode())
    return int.from_bytes(digest.digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _mc_model(model, key):
    """Return a copy of ``model`` with its dropout layers (only) on, cached per process."""
    from torch import nn

    with _MC_LOCK:
        held = _MC_NETS.get(key)
        if held is None or held[0] is not model:
            twin = model._copy()
            for m in twin.network.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train()
            held = (model, twin, threading.Lock())
            _MC_NETS[key] = held
        return held[1], held[2]


def _smoothed_std(mean, var, kernel: int, blur: float):
    """sqrt(box(E mu^2) - box(E mu)^2), Gaussian-blurred; stable: box(var) + local var of mean."""
    import torch
    import torch.nn.functional as F

    if kernel > 1:
        pad = kernel // 2
        b, c, h, w = mean.shape
        patches = F.unfold(mean, kernel, padding=pad).view(b, c, kernel * kernel, h, w)
        local = ((patches - patches.mean(dim=2, keepdim=True)) ** 2).mean(dim=2)
        var = F.avg_pool2d(var, kernel, stride=1, padding=pad, count_include_pad=True) + local
    if blur > 0:
        radius = math.ceil(3 * blur)
        t = torch.arange(-radius, radius + 1, dtype=var.dtype, device=var.device)
        g = torch.exp(-0.5 * (t / blur) ** 2)
        g = g / g.sum()
        var = F.conv2d(var, g.view(1, 1, 1, -1), padding=(0, radius))
        var = F.conv2d(var, g.view(1, 1, -1, 1), padding=(radius, 0))
    return var.clamp_min(0).sqrt()


class UQModel:
    """The model as a block task sees it, with the uncertainty outputs of :class:`Uncertainty`.

    ``members`` are the loaded models (the plan's model first); ``key`` names the model in
    this process (for the cached dropout copy).
    """

    def __init__(self, members, uq: Uncertainty, key):
        self.members, self.uq, self.key = list(members), uq, key
        first = self.members[0]
        self.scale_factor, self.divisor = first.scale_factor, uq.divisor
        self.device, self.dtype = first.device, first.dtype
        self.output_names = uq.names

    @property
    def spec(self) -> dict:
        return self.members[0].spec  # a copy: made when asked, not once per block

    def _run(self, model, x, offset: int):
        """``prediction`` of ``model`` over the window ``x``, skipping ``offset`` rows/columns."""
        import torch
        import torch.nn.functional as F

        s, div = model.scale_factor, model.divisor
        part = x[..., offset:, offset:]
        extra_r, extra_c = -part.shape[-2] % div, -part.shape[-1] % div
        if extra_r or extra_c:  # beyond every cropped output's receptive field
            part = F.pad(part, (0, extra_c, 0, extra_r), mode="replicate")
        pred = model.predict_tensor(part)["prediction"]
        if not offset and not (extra_r or extra_c):
            return pred
        out = torch.zeros((*pred.shape[:2], x.shape[-2] * s, x.shape[-1] * s),
                          dtype=pred.dtype, device=pred.device)
        rows, cols = (x.shape[-2] - offset) * s, (x.shape[-1] - offset) * s
        out[..., offset * s:, offset * s:] = pred[..., :rows, :cols]
        return out

    def _samples(self, x):
        import torch

        uq = self.uq
        if uq.kind == "tta":
            model = self.members[0]
            for k in uq.transforms:
                yield untransform(self._run(model, transform(x, k), 0), k)
        elif uq.kind == "ensemble":
            for model, offset in zip(self.members, uq.offsets, strict=True):
                yield self._run(model, x, offset)
        else:  # mc_dropout: per tile, masks seeded by the tile's content (reproducible)
            if not _has_dropout(self.members[0].network):
                raise RuntimeError(
                    "uncertainty='mc_dropout': the model this process loaded has no dropout "
                    "layers (a network changed by hand travels without them; declare dropout "
                    "in the bundle or predict in this process)")
            twin, lock = _mc_model(self.members[0], self.key)
            with lock:
                runs = []
                for b in range(x.shape[0]):
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(_tile_seed(uq.seed, x[b]))
                        runs.append([self._run(twin, x[b : b + 1], 0)
                                     for _ in range(uq.samples)])
            for i in range(uq.samples):
                yield torch.cat([r[i] for r in runs])

    def predict_tensor(self, x, *, prediction=None):
        """Return the outputs over a batch of windows (as :meth:`Im2ImModel.predict_tensor`)."""
        if prediction is not None:
            raise ValueError("prediction is only accepted by mask models")
        if self.uq.kind == "constant":
            pred = self.members[0].predict_tensor(x)["prediction"]
            return {"prediction": pred, "lower": pred - 1.0, "upper": pred + 1.0}
        samples = list(self._samples(x))
        n = len(samples)
        total = sum(samples[1:], samples[0].clone())
        mean = total / n
        total_sq = sum(((v - mean) ** 2 for v in samples[1:]), (samples[0] - mean) ** 2)
        var = total_sq / n
        std = var.sqrt()
        return {"prediction": mean, "lower": mean - std, "upper": mean + std, "std": std,
                "std_smoothed": _smoothed_std(mean, var, self.uq.kernel, self.uq.blur)}


def wrap(model, uq: Uncertainty, *, key, get_model):
    """Return the :class:`UQModel` of ``model`` (``get_model(ref)`` loads ensemble members)."""
    members = [model] + [get_model(ref) for ref in uq.members]
    return UQModel(members, uq, key)
