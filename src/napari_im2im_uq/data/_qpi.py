"""Quantitative phase imaging: cell-like phase objects, DPC image formation and its inversion.

Conventions (all functions of this module share them):

* Frequencies are in cycles per micrometre on the FFT grid of the image, in numpy's unshifted
  order (``numpy.fft.fftfreq(n, d=pixel_size)``); nothing is ``fftshift``-ed.
* The object transmittance is ``t = exp(-absorption + 1j * phase)`` (``absorption`` attenuates
  the amplitude, so the intensity transmission of a clear object is ``exp(-2 * absorption)``).
* The pupil is a circle ``|u| < na_objective / wavelength``; the source of direction ``d`` is the
  set of illumination frequencies ``s`` with ``na_illumination[0] < |s| * wavelength <
  na_illumination[1]`` on the side ``d`` of the frequency plane: ``"top"`` is ``s_row < 0``,
  ``"bottom"`` ``s_row > 0``, ``"left"`` ``s_col < 0``, ``"right"`` ``s_col > 0``. These are the
  conventions of ``../shared/data/qpi_dpc_cells/derived/make_phase_l2.py`` (r1 = top, r2 = bottom,
  r3 = left, r4 = right).
* Intensities are normalised so that an empty field (phase 0, absorption 0) images to 1.

Weak-object transfer functions (WOTF; Hopkins' partially coherent model linearised in the
object, as in Tian & Waller, Opt. Express 23, 11394 (2015)). With
``C(v) = sum_s S(s) P(s) P(s + v)`` (the source-weighted correlation of the pupil, real for a
real pupil and source) and ``B = sum_s S(s) |P(s)|^2``::

    H_absorption(v) = -(C(v) + C(-v)) / B
    H_phase(v)      = 1j * (C(v) - C(-v)) / B
    I(r) ~= 1 + IFFT[H_absorption * FFT(absorption) + H_phase * FFT(phase)](r)

``C`` is computed by FFT on the frequency grid (``IFFT(conj(FFT(S P)) FFT(P))``), which is exact as
long as the pupil radius is below a quarter of the sampling frequency (true for the default optics:
0.956 / 4.17 cycles per um = 0.23).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from ._checks import as_rng, check_positive, check_range, check_shape

__all__ = ["cell_phase_object", "dpc_tikhonov", "dpc_transfer_functions", "simulate_dpc"]

_DIRECTIONS = {"top": (-1, 0), "bottom": (1, 0), "left": (0, -1), "right": (0, 1)}
_OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


# ----------------------------------------------------------------------------- phase objects


def _add_ellipsoid(out, cy, cx, a, b, theta, height, power=0.6):
    """Add ``height * (1 - rho^2)^power`` inside an ellipse (semi-axes a >= b) to ``out``."""
    rows, cols = out.shape
    r0, r1 = max(int(cy - a - 1), 0), min(int(cy + a + 2), rows)
    c0, c1 = max(int(cx - a - 1), 0), min(int(cx + a + 2), cols)
    if r0 >= r1 or c0 >= c1:
        return
    dy = np.arange(r0, r1, dtype=np.float32)[:, None] - cy
    dx = np.arange(c0, c1, dtype=np.float32)[None, :] - cx
    u = dy * math.cos(theta) + dx * math.sin(theta)
    v = -dy * math.sin(theta) + dx * math.cos(theta)
    rho2 = (u / a) ** 2 + (v / b) ** 2
    out[r0:r1, c0:c1] += height * np.clip(1.0 - rho2, 0.0, None) ** power


def cell_phase_object(
    shape=(256, 256),
    *,
    seed=0,
    n_cells=None,
    cell_radius=(20.0, 40.0),
    max_phase=3.0,
    n_granules=20,
    absorption_ratio=0.02,
    smooth=1.0,
):
    """Generate a phase object that looks like adherent or floating cells in a phase image.

    Each cell is an ellipsoidal cap (phase ``~ (1 - rho^2)^0.6``, with rho the elliptical radius)
    carrying a thicker ellipsoidal nucleus off its centre and small Gaussian granules in its
    cytoplasm; cells may touch but their centres are kept apart. The sum is smoothed by a
    Gaussian of ``smooth`` pixels and scaled down, if needed, so that its maximum is at most
    ``max_phase``. The absorption is proportional to the phase (``absorption_ratio``), with the
    granules absorbing five times more.

    Parameters
    ----------
    shape : tuple of int
        (rows, cols), each at least 16.
    seed : int, None or numpy.random.Generator
        Source of randomness; the same integer gives the same object.
    n_cells : int, optional
        Number of cells. Default: one per ``(3 * mean radius)^2`` pixels, at least 1.
    cell_radius : (float, float)
        Range of the cells' long semi-axis, in pixels (the short one is 60 to 100 % of it).
    max_phase : float
        Upper bound of the phase in radians (the thickest nucleus reaches about this value).
    n_granules : int
        Mean number of granules per cell.
    absorption_ratio : float
        Absorption (amplitude attenuation) per radian of phase, >= 0.
    smooth : float
        Standard deviation in pixels of the final Gaussian smoothing (0: none).

    Returns
    -------
    dict
        ``phase`` (float32 radians, >= 0, shape ``shape``) and ``absorption`` (float32, >= 0).

    Raises
    ------
    ValueError
        If ``shape`` or a parameter is out of range; the message names the argument.

    Examples
    --------
    >>> from napari_im2im_uq.data import cell_phase_object
    >>> obj = cell_phase_object((128, 128), seed=3, n_cells=2)
    >>> obj["phase"].dtype, obj["phase"].shape
    (dtype('float32'), (128, 128))
    >>> bool(0.5 < obj["phase"].max() <= 3.0)
    True
    """
    rows, cols = check_shape(shape, "shape", min_size=16, allow_3d=False)
    rng = as_rng(seed)
    rmin, rmax = check_range(cell_radius, "cell_radius", low=1.0)
    check_positive(max_phase, "max_phase")
    check_positive(n_granules, "n_granules", integer=True, allow_zero=True)
    check_positive(absorption_ratio, "absorption_ratio", allow_zero=True)
    check_positive(smooth, "smooth", allow_zero=True)
    if n_cells is None:
        n_cells = max(1, round(rows * cols / (1.5 * (rmin + rmax)) ** 2))
    check_positive(n_cells, "n_cells", integer=True)

    phase = np.zeros((rows, cols), np.float32)
    granules = np.zeros((rows, cols), np.float32)
    centres = []
    for _ in range(n_cells):
        a = rng.uniform(rmin, rmax)
        for _attempt in range(30):
            cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
            if all(math.hypot(cy - y, cx - x) > 0.8 * (a + r) for y, x, r in centres):
                break
        centres.append((cy, cx, a))
        b = a * rng.uniform(0.6, 1.0)
        theta = rng.uniform(0, np.pi)
        body = rng.uniform(0.45, 0.65) * max_phase
        _add_ellipsoid(phase, cy, cx, a, b, theta, body)
        # nucleus: smaller, off-centre, thicker
        na, nb = a * rng.uniform(0.35, 0.55), b * rng.uniform(0.35, 0.55)
        off = rng.uniform(-0.25, 0.25, 2) * (a - na)
        _add_ellipsoid(
            phase, cy + off[0], cx + off[1], na, nb, rng.uniform(0, np.pi),
            rng.uniform(0.25, 0.35) * max_phase, power=0.5,
        )
        # granules: small Gaussian blobs in the cytoplasm
        for _g in range(rng.poisson(n_granules)):
            rr = math.sqrt(rng.uniform(0.1, 0.8))
            ang = rng.uniform(0, 2 * np.pi)
            du, dv = a * rr * math.cos(ang), b * rr * math.sin(ang)
            gy = cy + du * math.cos(theta) - dv * math.sin(theta)
            gx = cx + du * math.sin(theta) + dv * math.cos(theta)
            iy, ix = int(round(gy)), int(round(gx))
            if 0 <= iy < rows and 0 <= ix < cols:
                granules[iy, ix] += rng.uniform(0.05, 0.12) * max_phase
    granules = ndi.gaussian_filter(granules, 1.5) * (2 * np.pi * 1.5**2)
    phase += granules
    if smooth > 0:
        phase = ndi.gaussian_filter(phase, smooth)
        granules = ndi.gaussian_filter(granules, smooth)
    peak = float(phase.max())
    if peak > max_phase:
        phase *= max_phase / peak
        granules *= max_phase / peak
    np.clip(phase, 0.0, None, out=phase)
    absorption = absorption_ratio * (phase + 4.0 * np.clip(granules, 0.0, None))
    return {"phase": phase.astype(np.float32), "absorption": absorption.astype(np.float32)}


# ----------------------------------------------------------------------------- optics


def _check_optics(wavelength, na_objective, na_illumination, pixel_size, illumination, led_pitch):
    check_positive(wavelength, "wavelength")
    check_positive(na_objective, "na_objective")
    check_positive(pixel_size, "pixel_size")
    na_in, na_out = check_range(na_illumination, "na_illumination", allow_equal=False)
    if illumination not in ("half-annulus", "led"):
        raise ValueError(f"illumination must be 'half-annulus' or 'led'; got {illumination!r}")
    check_positive(led_pitch, "led_pitch")
    nyquist = 1.0 / (2.0 * pixel_size)
    if na_objective / wavelength >= 0.5 * nyquist:
        raise ValueError(
            "na_objective / wavelength must be below a quarter of the sampling frequency "
            f"1 / pixel_size = {1 / pixel_size:.4g} cycles/um for the transfer functions to be "
            f"computed without wrap-around; got {na_objective / wavelength:.4g} cycles/um "
            "(use a smaller pixel_size or a smaller na_objective)"
        )
    if na_out > 1.0:
        raise ValueError(f"na_illumination must be at most 1 (in air); got {na_illumination!r}")
    return na_in, na_out


def _check_directions(directions):
    if isinstance(directions, str):
        directions = (directions,)
    try:
        directions = tuple(directions)
    except TypeError:
        directions = (directions,)
    bad = [d for d in directions if d not in _DIRECTIONS]
    if not directions or bad or len(set(directions)) != len(directions):
        raise ValueError(
            "directions must be distinct names among 'top', 'bottom', 'left', 'right'; "
            f"got {directions!r}"
        )
    return directions


def _freq_grid(shape, pixel_size):
    fr = scipy.fft.fftfreq(shape[0], d=pixel_size)[:, None]
    fc = scipy.fft.fftfreq(shape[1], d=pixel_size)[None, :]
    return fr, fc


def _source(shape, direction, *, wavelength, na_in, na_out, pixel_size, illumination, led_pitch):
    """Source weights on the frequency grid (unshifted), for one illumination direction."""
    fr, fc = _freq_grid(shape, pixel_size)
    dr, dc = _DIRECTIONS[direction]
    if illumination == "half-annulus":
        na = np.hypot(fr, fc) * wavelength
        side = (fr * dr + fc * dc) > 0
        src = ((na > na_in) & (na < na_out) & side).astype(np.float64)
    else:  # LED array: point sources on a square grid of pitch led_pitch (NA units)
        k = int(math.ceil(na_out / led_pitch)) + 1
        g = np.arange(-k, k + 1) * led_pitch
        gr, gc = np.meshgrid(g, g, indexing="ij")
        na = np.hypot(gr, gc)
        keep = (na >= na_in) & (na <= na_out) & ((gr * dr + gc * dc) > 1e-12)
        src = np.zeros(shape)
        ir = np.round(gr[keep] / wavelength * shape[0] * pixel_size).astype(int) % shape[0]
        ic = np.round(gc[keep] / wavelength * shape[1] * pixel_size).astype(int) % shape[1]
        np.add.at(src, (ir, ic), 1.0)
    if not src.any():
        raise ValueError(
            f"the {illumination} source for direction {direction!r} has no point on the "
            f"frequency grid of a {shape[0]} x {shape[1]} image with pixel_size={pixel_size}: "
            "use a larger image or a wider na_illumination"
        )
    return src


def _pupil(shape, wavelength, na_objective, pixel_size):
    fr, fc = _freq_grid(shape, pixel_size)
    return (np.hypot(fr, fc) < na_objective / wavelength).astype(np.float64)


def _signed_index(n):
    """Signed frequency index of each FFT bin (0, 1, ..., -2, -1)."""
    return np.round(scipy.fft.fftfreq(n) * n).astype(int)


def _abbe_intensity(spec, pupil, pts, weights, batch=16):
    """Sum over source points s (grid indices ``pts``) of ``w_s |IFFT(T(u - s) P(u))|^2``.

    The field behind the pupil is band-limited to the pupil radius R (in frequency bins), so its
    intensity is band-limited to 2R: each coherent image is computed on a coarser grid of
    ``m >= 4R + 2`` bins per axis (no aliasing), the weighted sum is Fourier-interpolated back to
    the full grid once at the end. This equals the direct computation on the full grid.
    """
    n_r, n_c = spec.shape
    pr, pc = np.nonzero(pupil)
    sig_r, sig_c = _signed_index(n_r), _signed_index(n_c)
    rad_r, rad_c = int(np.abs(sig_r[pr]).max()), int(np.abs(sig_c[pc]).max())
    m_r = min(n_r, scipy.fft.next_fast_len(4 * rad_r + 2))
    m_c = min(n_c, scipy.fft.next_fast_len(4 * rad_c + 2))
    qr, qc = sig_r[pr] % m_r, sig_c[pc] % m_c
    acc = np.zeros((m_r, m_c), np.float64)
    for start in range(0, len(pts), batch):
        src = pts[start : start + batch]
        small = np.zeros((len(src), m_r, m_c), np.complex64)
        rows = (pr[None, :] - src[:, :1]) % n_r
        cols = (pc[None, :] - src[:, 1:]) % n_c
        small[:, qr, qc] = spec[rows, cols]
        fields = scipy.fft.ifft2(small, axes=(-2, -1))
        w = weights[start : start + batch, None, None]
        acc += (w * (fields.real.astype(np.float64) ** 2 + fields.imag**2)).sum(axis=0)
    if (m_r, m_c) == (n_r, n_c):
        return acc
    # coarse fields are (m/n) times the fine ones (ifft normalisation), intensities (m/n)^2; the
    # DFT of the same band-limited intensity on n instead of m samples is n/m times larger
    ratio = (m_r * m_c) / (n_r * n_c)
    small_spec = scipy.fft.fft2(acc) * ratio
    big = np.zeros((n_r, n_c), np.complex128)
    big[np.ix_(_signed_index(m_r) % n_r, _signed_index(m_c) % n_c)] = small_spec
    return scipy.fft.ifft2(big).real


def dpc_transfer_functions(
    shape,
    *,
    directions=("top", "bottom"),
    wavelength=0.523,
    na_objective=0.5,
    na_illumination=(0.45, 0.5),
    pixel_size=0.12,
    illumination="half-annulus",
    led_pitch=0.05,
):
    """Weak-object transfer functions of absorption and phase for each illumination direction.

    See the module notes of ``napari_im2im_uq.data._qpi`` for the formula: with the source ``S``
    of a direction and the pupil ``P``, ``C(v) = sum_s S(s) P(s) P(s + v)``,
    ``H_absorption = -(C(v) + C(-v)) / B`` and ``H_phase = 1j (C(v) - C(-v)) / B`` with
    ``B = sum_s S(s) P(s)^2``, so that an image is ``1 + IFFT(H_absorption A + H_phase Phi)``.

    Parameters
    ----------
    shape : tuple of int
        (rows, cols) of the images.
    directions : sequence of str
        Illumination directions among "top", "bottom", "left", "right".
    wavelength : float
        Wavelength in micrometres.
    na_objective : float
        Numerical aperture of the objective (radius of the pupil).
    na_illumination : (float, float)
        Inner and outer numerical aperture of the annular illumination.
    pixel_size : float
        Pixel size in the sample plane, micrometres.
    illumination : {"half-annulus", "led"}
        A continuous half annulus, or an LED array (point sources on a square grid of pitch
        ``led_pitch`` in NA units, kept where their NA is within ``na_illumination``).
    led_pitch : float
        Spacing of the LEDs in NA units (``illumination="led"`` only).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``h_absorption`` and ``h_phase``, complex128 arrays of shape (len(directions), rows, cols)
        in unshifted FFT order.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.data import dpc_transfer_functions
    >>> h_abs, h_ph = dpc_transfer_functions((128, 128), directions=("top", "bottom"))
    >>> h_ph.shape
    (2, 128, 128)
    >>> bool(np.allclose(h_ph[0], -h_ph[1]))  # opposite halves: opposite phase contrast
    True
    """
    shape = check_shape(shape, "shape", min_size=8, allow_3d=False)
    directions = _check_directions(directions)
    na_in, na_out = _check_optics(
        wavelength, na_objective, na_illumination, pixel_size, illumination, led_pitch
    )
    pupil = _pupil(shape, wavelength, na_objective, pixel_size)
    fp = scipy.fft.fft2(pupil)
    flip = (-np.arange(shape[0]) % shape[0])[:, None], (-np.arange(shape[1]) % shape[1])[None, :]
    h_abs = np.empty((len(directions), *shape), np.complex128)
    h_ph = np.empty((len(directions), *shape), np.complex128)
    for i, d in enumerate(directions):
        src = _source(
            shape, d, wavelength=wavelength, na_in=na_in, na_out=na_out,
            pixel_size=pixel_size, illumination=illumination, led_pitch=led_pitch,
        )
        background = float((src * pupil**2).sum())
        if background <= 0:
            raise ValueError(
                f"the source for direction {d!r} lies entirely outside the pupil "
                f"(na_illumination={na_illumination!r} > na_objective={na_objective}): "
                "dark-field images have no weak-object phase transfer"
            )
        corr = scipy.fft.ifft2(np.conj(scipy.fft.fft2(src * pupil)) * fp).real
        corr_neg = corr[flip]
        h_abs[i] = -(corr + corr_neg) / background
        h_ph[i] = 1j * (corr - corr_neg) / background
    return h_abs, h_ph


def simulate_dpc(
    phase,
    absorption=None,
    *,
    wavelength=0.523,
    na_objective=0.5,
    na_illumination=(0.45, 0.5),
    pixel_size=0.12,
    illumination="half-annulus",
    directions=("top", "bottom"),
    model="abbe",
    led_pitch=0.05,
    photons=None,
    seed=None,
):
    """Simulate oblique-illumination (DPC) intensity images of a phase object.

    ``model="abbe"`` (default) is exact partially coherent imaging of a thin object: the
    incoherent sum over the discretised source points ``s`` of ``|IFFT(T(u - s) P(u))|^2``,
    with ``T = FFT(exp(-absorption + 1j * phase))``; it stays valid for phases of several radians.
    ``model="wotf"`` is its linearisation in the object, ``1 + IFFT(H_absorption A + H_phase Phi)``
    with the transfer functions of :func:`dpc_transfer_functions` (exact for weak objects, the
    model that :func:`dpc_tikhonov` inverts). Both use periodic boundaries. Images are
    normalised so that an empty field gives 1 (for ``"abbe"``: divided by the source points that
    fall inside the pupil).

    The cost of ``"abbe"`` is one small FFT per source point, and the number of source points
    grows like ``rows * cols``: the default optics take about 0.2 s for two 256 x 256 images and
    about 16 times longer for 512 x 512. For larger fields use ``model="wotf"`` or simulate tiles.

    Parameters
    ----------
    phase : array_like
        (rows, cols) phase in radians; not modified.
    absorption : array_like, optional
        (rows, cols) amplitude attenuation (see the module conventions); default zero.
    wavelength : float
        Wavelength in micrometres (default 0.523, as ``qpi_dpc_cells``).
    na_objective : float
        Numerical aperture of the objective.
    na_illumination : (float, float)
        Inner and outer numerical aperture of the illumination annulus.
    pixel_size : float
        Pixel size in the sample plane, micrometres.
    illumination : {"half-annulus", "led"}
        Continuous half annulus, or an LED array of pitch ``led_pitch`` (NA units) within the
        annulus ``na_illumination`` (``na_illumination=(0, na_objective)`` gives the classical
        half-circle LED-array DPC).
    directions : sequence of str
        Directions among "top", "bottom", "left", "right"; one output image each, in this order.
    model : {"abbe", "wotf"}
        Image formation model (see above).
    led_pitch : float
        Spacing of the LEDs in NA units (``illumination="led"`` only).
    photons : float, optional
        Mean photon count of an empty-field pixel; when given, each image is drawn from a
        Poisson distribution with mean ``photons * intensity`` and divided by ``photons``.
    seed : int, None or numpy.random.Generator
        Source of the shot noise (used only with ``photons``).

    Returns
    -------
    numpy.ndarray
        float32 array (len(directions), rows, cols) of intensities (empty field = 1).

    Raises
    ------
    ValueError
        If an argument is invalid; the message names it.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.data import cell_phase_object, simulate_dpc
    >>> obj = cell_phase_object((128, 128), seed=0, n_cells=2)
    >>> images = simulate_dpc(obj["phase"], obj["absorption"], directions=("top", "bottom"))
    >>> images.shape, images.dtype
    ((2, 128, 128), dtype('float32'))
    >>> flat = simulate_dpc(np.zeros((64, 64)))
    >>> bool(np.allclose(flat, 1.0, atol=1e-5))
    True
    """
    ph = np.asarray(phase)
    if ph.ndim != 2 or not np.issubdtype(ph.dtype, np.number) or np.iscomplexobj(ph):
        raise ValueError(
            f"phase must be a real 2-D array (rows, cols); got shape {ph.shape}, dtype {ph.dtype}"
        )
    check_shape(ph.shape, "phase.shape", min_size=8, allow_3d=False)
    if absorption is None:
        ab = np.zeros(ph.shape)
    else:
        ab = np.asarray(absorption)
        if ab.shape != ph.shape or not np.issubdtype(ab.dtype, np.number):
            raise ValueError(
                f"absorption must be a real array of the phase's shape {ph.shape}; "
                f"got shape {ab.shape}, dtype {ab.dtype}"
            )
    if not (np.isfinite(ph).all() and np.isfinite(ab).all()):
        raise ValueError("phase and absorption must be finite; got NaN or infinite values")
    directions = _check_directions(directions)
    if model not in ("abbe", "wotf"):
        raise ValueError(f"model must be 'abbe' or 'wotf'; got {model!r}")
    if photons is not None:
        check_positive(photons, "photons")
    na_in, na_out = _check_optics(
        wavelength, na_objective, na_illumination, pixel_size, illumination, led_pitch
    )
    shape = ph.shape
    out = np.empty((len(directions), *shape), np.float32)
    if model == "wotf":
        h_abs, h_ph = dpc_transfer_functions(
            shape, directions=directions, wavelength=wavelength, na_objective=na_objective,
            na_illumination=na_illumination, pixel_size=pixel_size, illumination=illumination,
            led_pitch=led_pitch,
        )
        fa, fph = scipy.fft.fft2(ab.astype(np.float64)), scipy.fft.fft2(ph.astype(np.float64))
        for i in range(len(directions)):
            out[i] = 1.0 + scipy.fft.ifft2(h_abs[i] * fa + h_ph[i] * fph).real
    else:
        pupil = _pupil(shape, wavelength, na_objective, pixel_size)
        field = np.exp(-ab.astype(np.float64) + 1j * ph.astype(np.float64))
        spec = scipy.fft.fft2(field.astype(np.complex64))
        for i, d in enumerate(directions):
            src = _source(
                shape, d, wavelength=wavelength, na_in=na_in, na_out=na_out,
                pixel_size=pixel_size, illumination=illumination, led_pitch=led_pitch,
            )
            pts = np.argwhere(src > 0)
            weights = src[pts[:, 0], pts[:, 1]]
            norm = float((weights * pupil[pts[:, 0], pts[:, 1]]).sum()) or float(weights.sum())
            out[i] = _abbe_intensity(spec, pupil, pts, weights) / norm
    if photons is not None:
        rng = as_rng(seed)
        lam = np.clip(out.astype(np.float64), 0.0, None) * photons
        out = (rng.poisson(lam) / photons).astype(np.float32)
    return out


def dpc_tikhonov(
    images,
    *,
    directions=("top", "bottom"),
    wavelength=0.523,
    na_objective=0.5,
    na_illumination=(0.45, 0.5),
    pixel_size=0.12,
    illumination="half-annulus",
    led_pitch=0.05,
    reg=1e-2,
):
    """Recover the phase from DPC images by Tikhonov-regularised inversion of the phase WOTF.

    The images are grouped in opposite pairs (top/bottom, left/right); each pair gives a DPC
    signal ``D_k = (I_a - I_b) / (I_a + I_b)`` whose weak-object transfer function is
    ``H_k = (H_phase,a - H_phase,b) / 2`` (absorption cancels between symmetric halves, and the
    denominator is 2 for a weak object). The phase is the least-squares solution with an L2
    penalty::

        phase = IFFT( sum_k conj(H_k) FFT(D_k) / (sum_k |H_k|^2 + reg) )

    Two images (one pair) give the classical two-image DPC; four images (both pairs) the
    isotropic four-image DPC used for the phase targets of ``qpi_dpc_cells``. The mean phase is
    not measurable (``H_k(0) = 0``), so the result has zero mean; boundaries are periodic.

    A single pair only sees phase gradients along its axis: ``H_k`` vanishes on the frequency
    line perpendicular to it (``v_row = 0`` for top/bottom), so two images lose the structure
    that varies only along the other axis. On the simulated cell objects of
    :func:`cell_phase_object` (noiseless) the correlation with the true phase is about 0.7 to
    0.95 with two images and 0.97 to 0.99 with four.

    Parameters
    ----------
    images : array_like
        (len(directions), rows, cols) positive intensities; not modified.
    directions : sequence of str
        The direction of each image; every direction needs its opposite.
    wavelength, na_objective, na_illumination, pixel_size, illumination, led_pitch
        Optics, as in :func:`simulate_dpc` (defaults: the ``qpi_dpc_cells`` microscope).
    reg : float
        Tikhonov regularisation, > 0; in units of ``|H|^2`` (whose maximum is about 1).

    Returns
    -------
    numpy.ndarray
        float32 phase in radians, (rows, cols), zero mean.

    Raises
    ------
    ValueError
        If the images do not match the directions, a direction lacks its opposite, or an
        option is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.data import cell_phase_object, dpc_tikhonov, simulate_dpc
    >>> phase = cell_phase_object((128, 128), seed=0, n_cells=2)["phase"]
    >>> directions = ("top", "bottom", "left", "right")
    >>> images = simulate_dpc(phase, directions=directions)
    >>> estimate = dpc_tikhonov(images, directions=directions)
    >>> r = np.corrcoef(estimate.ravel(), phase.ravel())[0, 1]
    >>> bool(r > 0.95)
    True
    """
    directions = _check_directions(directions)
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[0] != len(directions) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"images must be a real array (len(directions)={len(directions)}, rows, cols); "
            f"got shape {arr.shape}, dtype {arr.dtype}"
        )
    check_shape(arr.shape[1:], "images.shape[1:]", min_size=8, allow_3d=False)
    if not isinstance(reg, numbers.Real) or not np.isfinite(reg) or reg <= 0:
        raise ValueError(f"reg must be a finite number > 0; got {reg!r}")
    missing = [d for d in directions if _OPPOSITE[d] not in directions]
    if missing:
        raise ValueError(
            "directions must come in opposite pairs (top/bottom, left/right); "
            f"{missing!r} lack their opposite in {directions!r}"
        )
    _h_abs, h_ph = dpc_transfer_functions(
        arr.shape[1:], directions=directions, wavelength=wavelength, na_objective=na_objective,
        na_illumination=na_illumination, pixel_size=pixel_size, illumination=illumination,
        led_pitch=led_pitch,
    )
    data = arr.astype(np.float64)
    numer = np.zeros(arr.shape[1:], np.complex128)
    denom = np.zeros(arr.shape[1:], np.float64)
    for first, second in (("top", "bottom"), ("left", "right")):
        if first not in directions:
            continue
        a, b = directions.index(first), directions.index(second)
        total = data[a] + data[b]
        dpc = (data[a] - data[b]) / np.where(total > 0, total, 1.0)
        h = 0.5 * (h_ph[a] - h_ph[b])
        numer += np.conj(h) * scipy.fft.fft2(dpc)
        denom += np.abs(h) ** 2
    estimate = scipy.fft.ifft2(numer / (denom + reg)).real
    return (estimate - estimate.mean()).astype(np.float32)
