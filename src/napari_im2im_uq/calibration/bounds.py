"""Concentration bounds used by risk-controlling prediction sets (RCPS).

Each bound is written as a p-value for the null hypothesis "the true risk exceeds ``alpha``":
a value of the parameter is *certified* when the p-value is at most ``delta``. This is the form of
Bates et al. (2021), *Distribution-free, risk-controlling prediction sets*, and it makes the
three bounds interchangeable inside the controllers.

Losses are in [0, 1] (divide by their bound first).

- Hoeffding: ``p = exp(-2 n (alpha - R)_+^2)``; certified exactly when
  ``R + sqrt(log(1 / delta) / (2 n)) <= alpha``.
- Hoeffding-Bentkus: ``p = min(exp(-n h1(min(R, alpha), alpha)), e * P(Bin(n, alpha) <= ceil(n R)))``
  with ``h1(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b))`` and ``0 log 0 = 0`` (the im2im-uq
  reference code returns 1 when ``R == 0`` and takes a floor instead of the ceiling; both fixed here).
- Waudby-Smith-Ramdas (the betting form of RCPS): one uninterrupted running product over all the
  losses in a fixed order; ``p = min(1, 1 / max_i K_i(alpha))``.

Both the Hoeffding and the Hoeffding-Bentkus p-values depend on the data only through the mean risk
and grow with it; the controllers use that to turn the search for ``lam_hat`` into a weighted
quantile.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_level

__all__ = [
    "hoeffding_pvalue",
    "hoeffding_bentkus_pvalue",
    "wsr_pvalue",
    "upper_confidence_bound",
    "upper_confidence_bound_from_mean",
]

# n * R is rounded to this many decimals before the ceiling of the binomial tail, so that a mean risk
# of exactly k / n that reaches us as k / n + 1e-17 (floating-point summation) is not pushed to k + 1.
_NR_DECIMALS = 9


def _h1(a, b):
    """Bernoulli relative entropy KL(a || b) with 0 log 0 = 0 (vectorised in ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0)
        right = np.where(a < 1, (1 - a) * np.log(np.where(a < 1, 1 - a, 1.0) / (1 - b)), 0.0)
    return left + right


def hoeffding_pvalue(risk, n: int, alpha: float):
    """P-value of "true risk > alpha" from Hoeffding's inequality.

    Parameters
    ----------
    risk : float or array_like
        Empirical mean risk(s) of ``n`` losses in [0, 1].
    n : int
        Number of losses (calibration tiles).
    alpha : float
        The risk level being tested.

    Returns
    -------
    p : float or ndarray
        ``exp(-2 n (alpha - risk)_+^2)``.

    Examples
    --------
    >>> round(float(hoeffding_pvalue(0.05, 1000, 0.1)), 4)
    0.0067
    """
    risk = np.asarray(risk, dtype=np.float64)
    gap = np.maximum(alpha - risk, 0.0)
    return np.exp(-2.0 * n * gap**2)


def hoeffding_bentkus_pvalue(risk, n: int, alpha: float):
    """P-value of "true risk > alpha" from the Hoeffding-Bentkus bound of Bates et al. (2021).

    Parameters
    ----------
    risk : float or array_like
        Empirical mean risk(s) of ``n`` losses in [0, 1].
    n : int
        Number of losses.
    alpha : float
        The risk level being tested.

    Returns
    -------
    p : float or ndarray
        ``min(exp(-n h1(min(risk, alpha), alpha)), e * BinomCDF(ceil(n risk); n, alpha))``.

    Examples
    --------
    A zero empirical risk is strong evidence (the reference code returned 1 here):

    >>> float(hoeffding_bentkus_pvalue(0.0, 100, 0.1)) < 1e-4
    True
    """
    risk = np.asarray(risk, dtype=np.float64)
    hoeffding = np.exp(-n * _h1(np.minimum(risk, alpha), alpha))
    k = np.ceil(np.round(n * risk, _NR_DECIMALS))
    from scipy import stats  # 0.7 s to import: not when napari opens the Calibrate dock

    bentkus = np.e * stats.binom.cdf(k, n, alpha)
    return np.minimum(hoeffding, bentkus)


def _wsr_log_wealth(losses: np.ndarray, level, delta: float) -> np.ndarray:
    """Log-wealth ``log K_i(level)`` for i = 1..n along the last axis (losses already ordered).

    ``losses`` has shape (..., n); ``level`` broadcasts against (..., 1). The betting fractions
    follow the predictable-plug-in rule of Waudby-Smith and Ramdas as used by RCPS:
    mu_i = (1/2 + sum_{j<=i} L_j) / (i + 1), s2_i = (1/4 + sum_{j<=i} (L_j - mu_j)^2) / (i + 1),
    nu_i = min(1, sqrt(2 log(1/delta) / (n s2_{i-1}))), s2_0 = 1/4.
    """
    losses = np.asarray(losses, dtype=np.float64)
    n = losses.shape[-1]
    counts = np.arange(1, n + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(losses, axis=-1)) / (counts + 1.0)
    s2 = (0.25 + np.cumsum((losses - mu) ** 2, axis=-1)) / (counts + 1.0)
    s2_prev = np.concatenate([np.full(losses.shape[:-1] + (1,), 0.25), s2[..., :-1]], axis=-1)
    nu = np.minimum(1.0, np.sqrt(2.0 * np.log(1.0 / delta) / (n * s2_prev)))
    factors = 1.0 - nu * (losses - np.asarray(level, dtype=np.float64)[..., None])
    with np.errstate(divide="ignore"):
        return np.cumsum(np.log(factors), axis=-1)


def wsr_pvalue(losses, alpha: float, delta: float, *, order=None):
    """P-value of "true risk > alpha" from the Waudby-Smith-Ramdas betting bound.

    Parameters
    ----------
    losses : array_like, shape (..., n)
        Losses in [0, 1]; leading axes are evaluated independently (e.g. one row per lam).
    alpha : float
        The risk level being tested.
    delta : float
        The bound's error level; it sets the betting fractions.
    order : array_like of int, optional
        The fixed order in which the losses enter the running product (a permutation of
        ``range(n)``). The controllers draw it once from a seeded generator and keep it for every
        lam; by default the given order.

    Returns
    -------
    p : float or ndarray
        ``min(1, 1 / max_i K_i(alpha))``: by Ville's inequality ``P(p <= delta) <= delta`` when
        the true risk is at least ``alpha``.

    Examples
    --------
    >>> losses = np.zeros(200)
    >>> float(wsr_pvalue(losses, 0.1, 0.1)) < 0.1
    True
    """
    losses = np.asarray(losses, dtype=np.float64)
    if order is not None:
        losses = losses[..., np.asarray(order)]
    log_wealth = _wsr_log_wealth(losses, alpha, delta)
    return np.minimum(1.0, np.exp(-np.max(log_wealth, axis=-1)))


def upper_confidence_bound(losses, *, delta: float, bound: str = "hoeffding_bentkus", order=None):
    """Upper confidence bound on the true risk from ``n`` losses in [0, 1].

    The bound inverts the matching p-value: the smallest risk level ``a`` at which
    "true risk > a" is rejected at level ``delta``. It is what the calibration plots draw next to
    the empirical risk.

    Parameters
    ----------
    losses : array_like, shape (n,) or (m, n)
        Losses in [0, 1]; one bound per row.
    delta : float
        Error level in (0, 1).
    bound : {"hoeffding", "hoeffding_bentkus", "wsr"}
        Which concentration bound.
    order : array_like of int, optional
        Order of the losses for "wsr".

    Returns
    -------
    ucb : float or ndarray
        At least the empirical mean, at most 1.

    Examples
    --------
    >>> ucb = upper_confidence_bound(np.full(100, 0.1), delta=0.1, bound="hoeffding")
    >>> round(float(ucb), 4)
    0.2073
    """
    delta = check_level(delta, "delta")
    losses = np.atleast_2d(np.asarray(losses, dtype=np.float64))
    n = losses.shape[-1]
    mean = losses.mean(axis=-1)
    if bound == "wsr":
        ordered = losses if order is None else losses[:, np.asarray(order)]
        out = _invert_pvalue(
            mean, delta, lambda level: np.exp(-np.max(_wsr_log_wealth(ordered, level, delta),
                                                      axis=-1))
        )
    else:
        out = upper_confidence_bound_from_mean(mean, n, delta=delta, bound=bound)
    return out if out.size > 1 else float(out[0])


def upper_confidence_bound_from_mean(mean, n: int, *, delta: float, bound: str):
    """Upper confidence bound from the mean risk alone (Hoeffding and Hoeffding-Bentkus).

    Parameters
    ----------
    mean : float or array_like
        Empirical mean risk(s) of ``n`` losses in [0, 1].
    n : int
        Number of losses.
    delta : float
        Error level in (0, 1).
    bound : {"hoeffding", "hoeffding_bentkus"}
        Bounds that depend on the data only through the mean (WSR does not).

    Returns
    -------
    ucb : ndarray

    Examples
    --------
    >>> round(float(upper_confidence_bound_from_mean(0.1, 100, delta=0.1,
    ...                                              bound="hoeffding")[0]), 4)
    0.2073
    """
    delta = check_level(delta, "delta")
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    if bound == "hoeffding":
        return np.minimum(1.0, mean + np.sqrt(np.log(1.0 / delta) / (2.0 * n)))
    if bound != "hoeffding_bentkus":
        raise ValueError(
            f"bound must be 'hoeffding', 'hoeffding_bentkus' or 'wsr'; got {bound!r}"
        )
    return _invert_pvalue(mean, delta, lambda level: hoeffding_bentkus_pvalue(mean, n, level))


def _invert_pvalue(mean, delta, pvalue):
    """Smallest level at which ``pvalue(level) <= delta``, by bisection above the mean."""
    lo, hi = mean.copy(), np.ones_like(mean)
    for _ in range(60):  # bisection to ~1e-18: the p-value falls as the level rises
        mid = 0.5 * (lo + hi)
        rejected = pvalue(mid) <= delta
        hi = np.where(rejected, mid, hi)
        lo = np.where(rejected, lo, mid)
    return hi
