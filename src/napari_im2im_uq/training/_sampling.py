"""Random training patches with flip / rot90 augmentation (numpy only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["AUGMENTATIONS", "PatchSampler", "nearest_downsample"]

#: Augmentations: all 8 flips/rotations, row and column flips, column flips only, none.
AUGMENTATIONS = ("dihedral", "flips", "cols", "none")


def nearest_downsample(factor: int) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``f(patch) = patch[..., ::factor, ::factor]`` (the TEM degradation).

    The same as :func:`napari_im2im_uq.data.degrade_tem` with ``mode="nearest"`` on patches
    whose rows and columns are multiples of ``factor``.

    Parameters
    ----------
    factor : int
        Down-sampling factor, >= 1.

    Returns
    -------
    callable
        The degradation, applied by :class:`PatchSampler` after augmentation.

    Examples
    --------
    >>> import numpy as np
    >>> nearest_downsample(2)(np.arange(16).reshape(4, 4)).tolist()
    [[0, 2], [8, 10]]
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1; got {factor!r}")

    def degrade(patch: np.ndarray) -> np.ndarray:
        return patch[..., ::factor, ::factor]

    degrade.factor = factor  # type: ignore[attr-defined]
    return degrade


def _as_list(name: str, arrays, ndim: int) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray):
        arrays = [arrays] if arrays.ndim == ndim else list(arrays)
    if not isinstance(arrays, Sequence) or not arrays:
        raise ValueError(f"{name} must be a non-empty list of arrays; got {type(arrays).__name__}")
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.ndim != ndim or not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
            raise ValueError(
                f"{name}[{i}] must be a numeric {ndim}-D array; got dtype {a.dtype} and shape "
                f"{a.shape}"
            )
        out.append(a)
    return out


def check_draw(rng, batch_size) -> None:
    """Check the arguments of a sampler's ``sample(rng, batch_size)``.

    Examples
    --------
    >>> check_draw(np.random.default_rng(0), 0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive integer; got 0
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")


class PatchSampler:
    """Draw random, aligned (input, target) training patches from a few large images.

    Two ways to build the pairs:

    - ``inputs`` given: ``inputs[i]`` is ``(C, H, W)`` and ``targets[i]`` is
      ``(H * s, W * s)`` (``s = scale_factor``); a patch of ``patch_shape`` input pixels is cut
      at a random position, with the matching ``s``-times larger target patch.
    - ``inputs`` None and ``degrade`` given (super-resolution from a known degradation): a
      target patch of ``patch_shape * s`` pixels is cut, augmented, and the input is
      ``degrade(target_patch)``. Augmenting *before* degrading keeps the input on the same
      sampling grid as at test time (a flip of a nearest-sampled pair would shift it).

    Images are chosen with probability proportional to their area. Augmentation is applied
    to input and target alike. Sampling depends only on the random generator passed to
    :meth:`sample`, so a run is reproducible and can resume at any step.

    Parameters
    ----------
    inputs : list of numpy.ndarray or None
        ``(C, H, W)`` float inputs, already normalised as the network expects.
    targets : list of numpy.ndarray
        ``(H * s, W * s)`` float targets (normalised output units) or integer labels.
    scale_factor : int
        ``s``, target pixels per input pixel.
    patch_shape : (int, int)
        Input patch rows and columns.
    augment : {"dihedral", "flips", "cols", "none"}
        The 8 flips/rotations by 90 degrees; row and column flips; column flips only (e.g.
        for DPC images lit from the top and bottom, whose contrast axis must stay along rows);
        nothing.
    degrade : callable, optional
        Maps a ``(B, H * s, W * s)`` target batch to ``(B, H, W)`` inputs (see
        :func:`nearest_downsample`); only without ``inputs``.

    Examples
    --------
    >>> import numpy as np
    >>> hr = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    >>> sampler = PatchSampler(None, [hr], scale_factor=4, patch_shape=(8, 8),
    ...                        degrade=nearest_downsample(4))
    >>> x, y = sampler.sample(np.random.default_rng(1), 2)
    >>> x.shape, y.shape, bool((x == y[:, :, ::4, ::4]).all())
    ((2, 1, 8, 8), (2, 1, 32, 32), True)
    """

    def __init__(
        self,
        inputs,
        targets,
        *,
        scale_factor: int = 1,
        patch_shape: tuple[int, int] = (32, 32),
        augment: str = "dihedral",
        degrade: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(f"scale_factor must be an integer >= 1; got {scale_factor!r}")
        try:
            rows, cols = (int(v) for v in patch_shape)
        except (TypeError, ValueError):
            raise ValueError(
                f"patch_shape must be two positive integers; got {patch_shape!r}"
            ) from None
        if rows < 1 or cols < 1:
            raise ValueError(f"patch_shape must be two positive integers; got {patch_shape!r}")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}; got {augment!r}")
        if augment == "dihedral" and rows != cols:
            raise ValueError(
                f"augment='dihedral' rotates patches, so patch_shape must be square; got "
                f"{patch_shape!r}"
            )
        self._targets = _as_list("targets", targets, 2)
        s = scale_factor
        if inputs is None:
            if degrade is None:
                raise ValueError(
                    "give inputs, or degrade to make them from the targets; got neither"
                )
            self._inputs = None
        else:
            if degrade is not None:
                raise ValueError("give either inputs or degrade, not both")
            self._inputs = _as_list("inputs", inputs, 3)
            if len(self._inputs) != len(self._targets):
                raise ValueError(
                    f"inputs and targets must hold as many images; got {len(self._inputs)} "
                    f"and {len(self._targets)}"
                )
            for i, (x, y) in enumerate(zip(self._inputs, self._targets, strict=True)):
                if y.shape != (x.shape[1] * s, x.shape[2] * s):
                    raise ValueError(
                        f"targets[{i}] must have shape {(x.shape[1] * s, x.shape[2] * s)} "
                        f"(inputs[{i}] rows and columns times scale_factor={s}); got {y.shape}"
                    )
            channels = {x.shape[0] for x in self._inputs}
            if len(channels) != 1:
                raise ValueError(f"inputs must all have the same channels; got {sorted(channels)}")
        self._degrade = degrade
        self._scale = s
        self._patch = (rows, cols)
        self._augment = augment
        sizes = []
        for i, y in enumerate(self._targets):
            if y.shape[0] < rows * s or y.shape[1] < cols * s:
                raise ValueError(
                    f"targets[{i}] of shape {y.shape} is smaller than a target patch "
                    f"{(rows * s, cols * s)}"
                )
            sizes.append(float(y.shape[0] * y.shape[1]))
        self._weights = np.asarray(sizes) / np.sum(sizes)

    @property
    def patch_shape(self) -> tuple[int, int]:
        """Input patch rows and columns."""
        return self._patch

    @property
    def scale_factor(self) -> int:
        """Target pixels per input pixel along each axis."""
        return self._scale

    @property
    def in_channels(self) -> int:
        """Channels of the input patches."""
        return 1 if self._inputs is None else int(self._inputs[0].shape[0])

    def _transform(self, arr: np.ndarray, k: int, flip_r: bool, flip_c: bool) -> np.ndarray:
        if flip_r:
            arr = arr[..., ::-1, :]
        if flip_c:
            arr = arr[..., :, ::-1]
        if k:
            arr = np.rot90(arr, k, axes=(-2, -1))
        return arr

    def _draw_transform(self, rng: np.random.Generator) -> tuple[int, bool, bool]:
        if self._augment == "none":
            return 0, False, False
        if self._augment == "cols":
            return 0, False, bool(rng.integers(2))
        k = int(rng.integers(4)) if self._augment == "dihedral" else 0
        return k, bool(rng.integers(2)), bool(rng.integers(2))

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw a batch.

        Parameters
        ----------
        rng : numpy.random.Generator
            The only source of randomness.
        batch_size : int
            Number of patches.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            float32 inputs ``(B, C, rows, cols)``; targets ``(B, 1, rows * s, cols * s)``
            float32, or int64 ``(B, rows * s, cols * s)`` for integer labels.

        Examples
        --------
        >>> import numpy as np
        >>> sampler = PatchSampler([np.zeros((2, 16, 16))], [np.zeros((16, 16), int)],
        ...                        patch_shape=(8, 8))
        >>> [a.shape for a in sampler.sample(np.random.default_rng(0), 3)]
        [(3, 2, 8, 8), (3, 8, 8)]
        """
        check_draw(rng, batch_size)
        s = self._scale
        rows, cols = self._patch
        xs, ys = [], []
        for _ in range(batch_size):
            i = int(rng.choice(len(self._targets), p=self._weights))
            target = self._targets[i]
            k, flip_r, flip_c = self._draw_transform(rng)
            if self._inputs is None:
                r = int(rng.integers(target.shape[0] - rows * s + 1))
                c = int(rng.integers(target.shape[1] - cols * s + 1))
                y = self._transform(target[r : r + rows * s, c : c + cols * s], k, flip_r, flip_c)
                x = np.asarray(self._degrade(y[None]))
                expected = (1, rows, cols)
                if x.shape != expected:
                    raise ValueError(
                        f"degrade must map a (1, {rows * s}, {cols * s}) target patch to "
                        f"{expected}; got {x.shape}"
                    )
            else:
                inp = self._inputs[i]
                r = int(rng.integers(inp.shape[1] - rows + 1))
                c = int(rng.integers(inp.shape[2] - cols + 1))
                x = self._transform(inp[:, r : r + rows, c : c + cols], k, flip_r, flip_c)
                y = self._transform(
                    target[r * s : (r + rows) * s, c * s : (c + cols) * s], k, flip_r, flip_c
                )
            xs.append(np.ascontiguousarray(x, dtype=np.float32))
            ys.append(np.ascontiguousarray(y))
        x = np.stack(xs)
        y = np.stack(ys)
        if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
            return x, y.astype(np.int64)
        return x, y.astype(np.float32)[:, None]
