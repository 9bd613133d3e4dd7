"""Training patches anywhere inside the train regions of whole planes (numpy only)."""

from __future__ import annotations

import numpy as np

from ._sampling import PatchSampler, check_draw

__all__ = ["RegionSampler"]


class RegionSampler(PatchSampler):
    """A :class:`PatchSampler` whose patches lie wholly inside the given boxes of each plane.

    A patch may straddle adjacent train regions (so a patch as large as a region still comes
    from many positions), but never touches a pixel outside them: the validation and
    held-back regions are never seen. Positions are drawn uniformly among all valid ones of
    all planes; augmentation as in :class:`PatchSampler`.

    Parameters
    ----------
    inputs : list of numpy.ndarray
        ``(C, h, w)`` network inputs, one per plane.
    targets : list of numpy.ndarray
        ``(h s, w s)`` targets.
    boxes : list of list of (r0, c0, r1, c1)
        Per plane, the half-open boxes (target pixels, multiples of ``s``) patches may use.
    scale_factor, patch_shape
        As for :class:`PatchSampler` (``patch_shape`` in input pixels).
    augment : {"dihedral", "flips", "cols", "none", "transpose"}
        As for :class:`PatchSampler`, and "transpose": the identity or the transpose, the
        only flips and rotations that keep a super-resolution pair aligned whatever its
        sampling (with ``input = target[::s, ::s]`` a flipped input sits ``s - 1`` target
        pixels off the flipped target).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    >>> sampler = RegionSampler([x], [x[0]], [[(0, 0, 8, 4)]], patch_shape=(4, 4),
    ...                         augment="none")
    >>> xb, yb = sampler.sample(np.random.default_rng(0), 20)
    >>> bool((xb % 8 < 4).all())  # only columns 0-3
    True
    """

    def __init__(self, inputs, targets, boxes, *, scale_factor: int = 1,
                 patch_shape=(32, 32), augment: str = "dihedral"):
        transpose = augment == "transpose"
        super().__init__(inputs, targets, scale_factor=scale_factor, patch_shape=patch_shape,
                         augment="dihedral" if transpose else augment)
        if transpose:
            self._augment = "transpose"
        if len(boxes) != len(self._targets):
            raise ValueError(f"boxes must hold one list per plane ({len(self._targets)}); got "
                             f"{len(boxes)}")
        s = self._scale
        rows, cols = self._patch
        self._starts = []
        for x, bx in zip(self._inputs, boxes, strict=True):
            inside = np.zeros(x.shape[1:], dtype=np.int64)
            for r0, c0, r1, c1 in bx:
                inside[r0 // s:r1 // s, c0 // s:c1 // s] = 1
            table = np.pad(inside.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            counts = (table[rows:, cols:] - table[:-rows, cols:] - table[rows:, :-cols]
                      + table[:-rows, :-cols])
            self._starts.append(np.flatnonzero(counts == rows * cols))
        sizes = np.array([len(p) for p in self._starts], dtype=float)
        if sizes.sum() == 0:
            raise ValueError(
                f"boxes must hold at least one patch of {rows} x {cols} input pixels; none does")
        self._weights = sizes / sizes.sum()

    def _draw_transform(self, rng: np.random.Generator) -> tuple[int, bool, bool]:
        if self._augment == "transpose":  # flip columns then rotate by 90 degrees: transpose
            return (1, False, True) if rng.integers(2) else (0, False, False)
        return super()._draw_transform(rng)

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw a batch (see :meth:`PatchSampler.sample`) of patches inside the boxes.

        Examples
        --------
        >>> import numpy as np
        >>> x = np.zeros((2, 16, 16), np.float32)
        >>> sampler = RegionSampler([x], [np.zeros((16, 16))], [[(0, 0, 16, 16)]],
        ...                         patch_shape=(8, 8))
        >>> [a.shape for a in sampler.sample(np.random.default_rng(0), 3)]
        [(3, 2, 8, 8), (3, 1, 8, 8)]
        """
        check_draw(rng, batch_size)
        s = self._scale
        rows, cols = self._patch
        xs, ys = [], []
        for _ in range(batch_size):
            i = int(rng.choice(len(self._targets), p=self._weights))
            k, flip_r, flip_c = self._draw_transform(rng)
            inp, target = self._inputs[i], self._targets[i]
            start = int(self._starts[i][rng.integers(len(self._starts[i]))])
            r, c = divmod(start, inp.shape[2] - cols + 1)
            xs.append(np.ascontiguousarray(self._transform(
                inp[:, r:r + rows, c:c + cols], k, flip_r, flip_c), dtype=np.float32))
            ys.append(np.ascontiguousarray(self._transform(
                target[r * s:(r + rows) * s, c * s:(c + cols) * s], k, flip_r, flip_c)))
        x, y = np.stack(xs), np.stack(ys)
        if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
            return x, y.astype(np.int64)
        return x, y.astype(np.float32)[:, None]
