"""The spatial split of training pairs: train, validation and held-back regions (numpy only).

Every target plane is cut into a grid of regions of ``region_shape`` target pixels; each whole
region goes, at random (seeded), to "train", "validation" or "held_back". The partial strip
left at the bottom and right of a plane is in no list (never trained on). Patches are cut
inside train regions only, the validation loss is measured on validation regions, and
quality and calibration use held-back regions only, so the three are disjoint by
construction. The split is recorded in the model spec as ``training_regions``
(:meth:`Split.to_spec`); calibration refuses tiles that overlap its train or validation
boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._fingerprints import FINGERPRINT

__all__ = ["PARTS", "REGION_CANDIDATES", "Split", "default_region_shape", "held_back_shapes",
           "spatial_split"]

#: The three parts of a split, in the order of ``fractions``.
PARTS = ("train", "validation", "held_back")
#: Region sides tried by default, largest first (the first giving enough regions is used).
REGION_CANDIDATES = (128, 96, 64, 48, 32)
#: Regions the default ``region_shape`` aims for (at least); never below 32 pixels a side.
MIN_DEFAULT_REGIONS = 20
_MIN_SIDE = 32


def _boxes(value, where: str) -> tuple[tuple[int, int, int, int], ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where} must be a list of [r0, c0, r1, c1] boxes; got {value!r}")
    out = []
    for i, box in enumerate(value):
        ok = (isinstance(box, list | tuple) and len(box) == 4
              and all(isinstance(v, int) and not isinstance(v, bool) for v in box))
        if not ok or not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
            raise ValueError(
                f"{where}[{i}] must be four integers [r0, c0, r1, c1] with 0 <= r0 < r1 and "
                f"0 <= c0 < c1; got {box!r}"
            )
        out.append(tuple(int(v) for v in box))
    return tuple(out)


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in fractions)
    except (TypeError, ValueError):
        values = ()
    if (len(values) != 3 or not all(math.isfinite(v) and 0 < v < 1 for v in values)
            or abs(sum(values) - 1) > 1e-6):
        raise ValueError(
            "fractions must be three numbers in (0, 1) summing to 1 (train, validation, "
            f"held_back); got {fractions!r}"
        )
    return values  # type: ignore[return-value]


def _check_region_shape(region_shape, *, multiple_of: int = 1) -> tuple[int, int]:
    try:
        rh, rw = (int(v) for v in region_shape)
        ok = all(float(v) == int(v) for v in region_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or rh < 1 or rw < 1 or rh % multiple_of or rw % multiple_of:
        extra = f", multiples of {multiple_of} (the scale factor)" if multiple_of > 1 else ""
        raise ValueError(
            f"region_shape must be two positive integers (rows, columns of target pixels"
            f"{extra}); got {region_shape!r}"
        )
    return rh, rw


@dataclass(frozen=True)
class ImageRegions:
    """The regions of one target plane: its fingerprint, shape, source and the boxes of each part.

    Boxes are half-open ``(r0, c0, r1, c1)``: rows ``r0 <= r < r1``, columns ``c0 <= c < c1``.
    """

    fingerprint: str
    shape: tuple[int, int]
    source: str
    train: tuple[tuple[int, int, int, int], ...]
    validation: tuple[tuple[int, int, int, int], ...]
    held_back: tuple[tuple[int, int, int, int], ...]

    def boxes(self, part: str) -> tuple[tuple[int, int, int, int], ...]:
        """Return the boxes of ``part`` ("train", "validation" or "held_back")."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}; got {part!r}")
        return getattr(self, part)


@dataclass(frozen=True)
class Split:
    """A recorded spatial split (see :func:`spatial_split`); immutable.

    Attributes
    ----------
    region_shape : (int, int)
        Rows and columns of a region, in target pixels.
    seed : int
    fractions : (float, float, float)
        Train, validation and held-back fractions asked for.
    images : tuple of ImageRegions
        One entry per target plane.

    Examples
    --------
    >>> split = spatial_split([(96, 64)], region_shape=(32, 32), fingerprints=["ab"],
    ...                       sources=["array 0"])
    >>> Split.from_spec(split.to_spec()) == split
    True
    """

    region_shape: tuple[int, int]
    seed: int
    fractions: tuple[float, float, float]
    images: tuple[ImageRegions, ...]

    def to_spec(self) -> dict[str, Any]:
        """Return the JSON-able ``training_regions`` entry of a model spec."""
        return {
            "region_shape": list(self.region_shape),
            "fingerprint": FINGERPRINT,
            "seed": self.seed,
            "fractions": dict(zip(PARTS, self.fractions, strict=True)),
            "images": [
                {"fingerprint": im.fingerprint, "shape": list(im.shape), "source": im.source,
                 **{part: [list(b) for b in im.boxes(part)] for part in PARTS}}
                for im in self.images
            ],
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Split:
        """Read (and check) a ``training_regions`` dict; raise ValueError naming the field."""
        where = "training_regions"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a dict; got {type(spec).__name__}")
        missing = [k for k in ("region_shape", "fingerprint", "seed", "fractions", "images")
                   if k not in spec]
        if missing:
            raise ValueError(f"{where} is missing {missing}; got keys {sorted(spec)}")
        if spec["fingerprint"] != FINGERPRINT:
            raise ValueError(f"{where}['fingerprint'] must be {FINGERPRINT!r}; got "
                             f"{spec['fingerprint']!r}")
        region = _check_region_shape(spec["region_shape"])
        fr = spec["fractions"]
        if not isinstance(fr, dict) or sorted(fr) != sorted(PARTS):
            raise ValueError(f"{where}['fractions'] must map {PARTS} to numbers; got {fr!r}")
        fractions = _check_fractions([fr[p] for p in PARTS])
        seed = spec["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{where}['seed'] must be an integer >= 0; got {seed!r}")
        if not isinstance(spec["images"], list) or not spec["images"]:
            raise ValueError(f"{where}['images'] must be a non-empty list; got "
                             f"{spec['images']!r}")
        images = []
        for i, im in enumerate(spec["images"]):
            at = f"{where}['images'][{i}]"
            if not isinstance(im, dict):
                raise ValueError(f"{at} must be a dict; got {type(im).__name__}")
            need = [k for k in ("fingerprint", "shape", "source", *PARTS) if k not in im]
            if need:
                raise ValueError(f"{at} is missing {need}; got keys {sorted(im)}")
            shape = im["shape"]
            if (not isinstance(shape, list | tuple) or len(shape) != 2
                    or not all(isinstance(v, int) and v > 0 for v in shape)):
                raise ValueError(f"{at}['shape'] must be two positive integers; got {shape!r}")
            parts = {p: _boxes(im[p], f"{at}[{p!r}]") for p in PARTS}
            for p, boxes in parts.items():
                for b in boxes:
                    if b[2] > shape[0] or b[3] > shape[1]:
                        raise ValueError(f"{at}[{p!r}] box {list(b)} lies outside the plane "
                                         f"of shape {list(shape)}")
            images.append(ImageRegions(str(im["fingerprint"]), (int(shape[0]), int(shape[1])),
                                       str(im["source"]), **parts))
        return cls(region, int(seed), fractions, tuple(images))


def default_region_shape(target_shapes, *, multiple_of: int = 1) -> tuple[int, int]:
    """Return the default region shape for target planes of these shapes.

    The largest side of :data:`REGION_CANDIDATES` (rounded down to a multiple of
    ``multiple_of``, never below 32) giving at least :data:`MIN_DEFAULT_REGIONS` regions, else
    the smallest.

    Examples
    --------
    >>> default_region_shape([(1024, 1024)]), default_region_shape([(256, 256)])
    ((128, 128), (48, 48))
    """
    shapes = [tuple(int(v) for v in s) for s in target_shapes]
    side = None
    for cand in REGION_CANDIDATES:
        side = max(cand - cand % multiple_of, multiple_of * math.ceil(_MIN_SIDE / multiple_of))
        if sum((h // side) * (w // side) for h, w in shapes) >= MIN_DEFAULT_REGIONS:
            break
    return side, side


def spatial_split(
    target_shapes: Sequence[Sequence[int]],
    *,
    region_shape: Sequence[int] | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    fingerprints: Sequence[str],
    sources: Sequence[str],
    multiple_of: int = 1,
) -> Split:
    """Cut target planes into a grid of regions and assign them to train / validation / held back.

    The regions of all planes are pooled and a seeded random permutation gives
    ``round(f_validation n)`` and ``round(f_held_back n)`` of them (at least one each) to
    validation and held back, the rest to train (at least one).

    Parameters
    ----------
    target_shapes : list of (int, int)
        Rows and columns of each target plane.
    region_shape : (int, int), optional
        Region rows and columns in target pixels (default :func:`default_region_shape`).
    fractions : (float, float, float)
        Train, validation and held-back fractions, each in (0, 1), summing to 1.
    seed : int
        Seed of the assignment.
    fingerprints : list of str
        The fingerprint of each target plane (``napari_im2im_uq._fingerprints``).
    sources : list of str
        Where each plane came from (layer or file name, "array 0, plane 3").
    multiple_of : int
        Region sides must be multiples of this (the scale factor, so that regions map to whole
        input pixels).

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        When the planes hold fewer than 3 whole regions (one per part), naming the sizes.

    Examples
    --------
    >>> split = spatial_split([(64, 96)], region_shape=(32, 32), fingerprints=["f"],
    ...                       sources=["a"], seed=1)
    >>> im = split.images[0]
    >>> len(im.train) + len(im.validation) + len(im.held_back)
    6
    """
    shapes = []
    for i, s in enumerate(target_shapes):
        ok = isinstance(s, Sequence) and len(s) == 2 and all(
            isinstance(v, int | np.integer) and v > 0 for v in s)
        if not ok:
            raise ValueError(f"target_shapes[{i}] must be two positive integers; got {s!r}")
        shapes.append((int(s[0]), int(s[1])))
    if not shapes:
        raise ValueError("target_shapes must hold at least one plane; got none")
    if len(fingerprints) != len(shapes) or len(sources) != len(shapes):
        raise ValueError(
            f"fingerprints and sources must have one entry per plane ({len(shapes)}); got "
            f"{len(fingerprints)} and {len(sources)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, int) or multiple_of < 1:
        raise ValueError(f"multiple_of must be an integer >= 1; got {multiple_of!r}")
    fr = _check_fractions(fractions)
    if region_shape is None:
        rh, rw = default_region_shape(shapes, multiple_of=multiple_of)
    else:
        rh, rw = _check_region_shape(region_shape, multiple_of=multiple_of)
    cells = [(i, r, c) for i, (h, w) in enumerate(shapes)
             for r in range(h // rh) for c in range(w // rw)]
    n = len(cells)
    if n < 3:
        raise ValueError(
            f"the target planes of shapes {shapes} hold {n} whole region(s) of region_shape "
            f"{(rh, rw)}; a split needs at least 3 (one each for train, validation and "
            "held_back): give more or larger images, or a smaller region_shape (>= the patch)"
        )
    n_val = max(1, round(fr[1] * n))
    n_held = max(1, round(fr[2] * n))
    while n - n_val - n_held < 1:  # keep a train region: take from the larger part
        if n_held >= n_val and n_held > 1:
            n_held -= 1
        else:
            n_val -= 1
    order = np.random.default_rng(int(seed)).permutation(n)
    label = np.empty(n, dtype=object)
    label[order[:n_val]] = "validation"
    label[order[n_val:n_val + n_held]] = "held_back"
    label[order[n_val + n_held:]] = "train"
    per_image: list[dict[str, list]] = [{p: [] for p in PARTS} for _ in shapes]
    for (i, r, c), part in zip(cells, label, strict=True):
        per_image[i][part].append((r * rh, c * rw, (r + 1) * rh, (c + 1) * rw))
    images = tuple(
        ImageRegions(str(fp), shape, str(src), *(tuple(parts[p]) for p in PARTS))
        for fp, shape, src, parts in zip(fingerprints, shapes, sources, per_image, strict=True)
    )
    return Split((rh, rw), int(seed), fr, images)


def held_back_shapes(
    split_dict: dict[str, Any],
    *,
    scale: Sequence[float] = (1, 1),
    translate: Sequence[float] = (0, 0),
    ndim: int = 2,
    plane_of: Sequence[int] | dict[str, int] | None = None,
) -> list[np.ndarray]:
    """Return the held-back regions as napari Shapes rectangles, in world coordinates.

    Parameters
    ----------
    split_dict : dict
        A model spec's ``training_regions`` (see :meth:`Split.to_spec`).
    scale, translate : sequence of float
        The target layer's scale and translate (the last two axes are used, and for
        ``ndim=3`` the plane axis too when given with three values).
    ndim : {2, 3}
        2: rectangles ``(4, 2)`` of (row, column) corners; 3: ``(4, 3)`` with the plane
        coordinate first.
    plane_of : list of int or dict, optional
        For ``ndim=3``: the plane index of each image entry (a list in the order of
        ``images``, or a dict fingerprint -> plane). Default: the entry's position.

    Returns
    -------
    list of numpy.ndarray
        One rectangle per held-back box: corners (r0, c0), (r0, c1), (r1, c1), (r1, c0), the
        box's pixel edges (a pixel's centre sits at its index), as ``viewer.add_shapes(...,
        shape_type="rectangle")`` takes them.

    Examples
    --------
    >>> split = spatial_split([(64, 64)], region_shape=(32, 32), fingerprints=["f"],
    ...                       sources=["a"])
    >>> [r.shape for r in held_back_shapes(split.to_spec(), ndim=3)]
    [(4, 3)]
    """
    split = Split.from_spec(split_dict)
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3; got {ndim!r}")
    scale = np.asarray(scale, dtype=float).ravel()
    translate = np.asarray(translate, dtype=float).ravel()
    if scale.size not in (2, ndim) or translate.size not in (2, ndim):
        raise ValueError(f"scale and translate must have 2 or {ndim} values; got {scale.tolist()} "
                         f"and {translate.tolist()}")
    if plane_of is None:
        planes = list(range(len(split.images)))
    elif isinstance(plane_of, dict):
        missing = [im.fingerprint for im in split.images if im.fingerprint not in plane_of]
        if missing:
            raise ValueError(f"plane_of must give the plane of every image fingerprint; "
                             f"missing {missing}")
        planes = [int(plane_of[im.fingerprint]) for im in split.images]
    else:
        planes = [int(p) for p in plane_of]
        if len(planes) != len(split.images):
            raise ValueError(f"plane_of must have one plane per image ({len(split.images)}); "
                             f"got {len(planes)}")
    s2, t2 = scale[-2:], translate[-2:]
    sz = scale[0] if scale.size == 3 else 1.0
    tz = translate[0] if translate.size == 3 else 0.0
    out = []
    for im, plane in zip(split.images, planes, strict=True):
        for r0, c0, r1, c1 in im.held_back:
            corners = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=float) - 0.5
            corners = corners * s2 + t2
            if ndim == 3:
                corners = np.column_stack([np.full(4, plane * sz + tz), corners])
            out.append(corners)
    return out
