"""Multi-label segmentation sets calibrated by conformal risk control (Mossina et al. 2024).

Each pixel's set is ``{k : p_k >= 1 - lam}`` plus the top-1 class (LAC sets); it grows with lam.
The comparison is computed as ``1 - p_k <= lam`` in float64 at calibration and at application
alike, so a class is in a set exactly when the calibration counted it. Losses (all in [0, 1]):

- "binary": 1 if any labelled pixel's true class is outside its set (Eq. 13);
- "coverage_ratio": 1 if the covered fraction of labelled pixels is below ``tau`` (Eq. 14);
- "miscoverage": the uncovered fraction of labelled pixels (Eq. 15);
- "weighted_miscoverage": ``1 - sum_k w_k cov_k / sum_k w_k`` over the classes present in the
  tile, cov_k the covered fraction of class k's pixels (Eq. 16).
"""

from __future__ import annotations

import numpy as np

from .._validation import (
    as_tiles,
    check_choice,
    check_level,
    check_valid_block,
    is_dask,
    tile_blocks,
)
from . import _fraction
from ._apply import SEGMENTATION_SCORES, segmentation_scores
from ._common import fraction_curve, tile_phrase
from ._result import CalibrationResult

_STORE_BYTES = 1 << 30  # critical values of lazy inputs kept in memory up to this size

__all__ = ["calibrate_segmentation", "segmentation_scores"]

_LOSSES = ("binary", "coverage_ratio", "miscoverage", "weighted_miscoverage")
_SCORES = SEGMENTATION_SCORES
_RULES = ("crc", "rcps")


def _critical_values(s, labels, valid):
    """Per-pixel critical values: 0 for the top-1 class, else 1 - p_true; -inf if unlabelled."""
    top = np.argmin(s, axis=1)
    safe = np.where(valid, labels, 0)
    s_true = np.take_along_axis(s, safe[:, None], axis=1)[:, 0]
    crit = np.where(top == safe, 0.0, s_true)
    return np.where(valid, crit, -np.inf)


def calibrate_segmentation(scores, labels, *, alpha, scores_are="probabilities",
                           loss="miscoverage", tau=None, class_weights=None, ignore_label=None,
                           rule="crc", delta=0.1, bound="hoeffding_bentkus", seed=0, curve=True):
    """Calibrate multi-label segmentation sets ``{k : p_k >= 1 - lam}`` plus the top-1 class.

    Parameters
    ----------
    scores : array_like, shape (n, K, rows, columns)
        Per-class probabilities or logits, one calibration tile per leading index.
    labels : array_like of int, shape (n, rows, columns)
        True class of each pixel in [0, K), or ``ignore_label`` where not annotated.
    alpha : float
        Tolerated risk in (0, 1).
    scores_are : {"probabilities", "logits"}
        What ``scores`` holds; never guessed (probabilities that do not sum to 1 are refused).
    loss : {"miscoverage", "binary", "coverage_ratio", "weighted_miscoverage"}
    tau : float, optional
        Minimum covered fraction for "coverage_ratio", in (0, 1].
    class_weights : array_like of K floats, optional
        Weights for "weighted_miscoverage" (default: all 1).
    ignore_label : int, optional
        Label value of unannotated pixels (e.g. 0 in a napari Labels layer where 0 means "not
        annotated"; then classes are the other values minus one — map them before calling).
    rule : {"crc", "rcps"}
        Conformal risk control (expectation) or RCPS (high probability, with ``delta``, ``bound``).
    delta, bound, seed
        As in :func:`calibrate_intervals`, for ``rule="rcps"``.
    curve : bool, default True
        As in :func:`calibrate_intervals`: compute the risk curve.

    Returns
    -------
    CalibrationResult
        ``method="segmentation"``; apply with ``prediction_sets(scores)`` and ``varisco(scores)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(40, 3, 8, 8))
    >>> labels = logits.argmax(axis=1)
    >>> labels[:, ::4, ::4] = rng.integers(0, 3, size=labels[:, ::4, ::4].shape)
    >>> res = calibrate_segmentation(logits, labels, alpha=0.05, scores_are="logits")
    >>> 0 <= res.lam <= 1
    True
    """
    alpha = check_level(alpha, "alpha")
    check_choice(scores_are, "scores_are", _SCORES)
    check_choice(loss, "loss", _LOSSES)
    check_choice(rule, "rule", _RULES)
    if rule == "rcps":
        delta = check_level(delta, "delta")
        check_choice(bound, "bound", ("hoeffding", "hoeffding_bentkus", "wsr"))
    if loss == "coverage_ratio":
        tau = check_level(tau, "tau", allow_one=True)
    elif tau is not None:
        raise ValueError(f"tau is only used with loss='coverage_ratio'; got tau={tau!r} with "
                         f"loss={loss!r}")
    scores = as_tiles(scores, "scores", ndim_min=3)
    labels = as_tiles(labels, "labels")
    if scores.ndim != labels.ndim + 1 or tuple(scores.shape[:1]) + tuple(scores.shape[2:]) != \
            tuple(labels.shape):
        raise ValueError(
            "scores must have shape (n, K, *tile) for labels of shape (n, *tile); got scores "
            f"{tuple(scores.shape)} and labels {tuple(labels.shape)}"
        )
    if labels.dtype.kind not in "iub":
        raise ValueError(f"labels must hold integers; got dtype {labels.dtype}")
    n, k = int(scores.shape[0]), int(scores.shape[1])
    if k < 2:
        raise ValueError(f"scores must have at least 2 classes on axis 1; got {k}")
    weights_k = None
    if loss == "weighted_miscoverage":
        weights_k = np.ones(k) if class_weights is None else np.asarray(class_weights, float)
        if weights_k.shape != (k,) or np.any(weights_k < 0) or not np.all(np.isfinite(weights_k)):
            raise ValueError(f"class_weights must be {k} non-negative numbers; got {class_weights!r}")
    elif class_weights is not None:
        raise ValueError("class_weights is only used with loss='weighted_miscoverage'")

    def blocks():
        for start, b in tile_blocks(n, {"s": scores, "y": labels}, block_tiles=16):
            y = np.asarray(b["y"]).astype(np.int64)
            valid = np.ones(y.shape, bool) if ignore_label is None else y != ignore_label
            bad = valid & ((y < 0) | (y >= k))
            if bad.any():
                raise ValueError(
                    f"labels must be in [0, {k}) (or ignore_label={ignore_label!r}); got "
                    f"{np.unique(y[bad])[:5].tolist()} in tile {start + int(np.nonzero(bad)[0][0])}"
                )
            check_valid_block(valid, start)
            s = segmentation_scores(b["s"], scores_are=scores_are, axis=1)
            crit = _critical_values(s, y, valid)
            m = y.shape[0]
            crit = crit.reshape(m, -1)
            vflat = valid.reshape(m, -1)
            count = vflat.sum(axis=1)
            if loss == "miscoverage":
                yield start, crit, (1.0 / count)[:, None]
            elif loss == "weighted_miscoverage":
                yflat = np.where(vflat, y.reshape(m, -1), 0)
                per_class = np.stack([np.bincount(yflat[i][vflat[i]], minlength=k)
                                      for i in range(m)])  # (m, K) pixel counts
                present_w = np.where(per_class > 0, weights_k[None, :], 0.0).sum(axis=1)
                if np.any(present_w <= 0):
                    i = int(np.flatnonzero(present_w <= 0)[0])
                    raise ValueError(f"class_weights give zero total weight to the classes of tile "
                                     f"{start + i}; weighted miscoverage is undefined there")
                cnt = np.take_along_axis(per_class, yflat, axis=1).astype(float)
                w = weights_k[yflat] / (present_w[:, None] * np.maximum(cnt, 1))
                yield start, crit, np.where(vflat, w, 0.0)
            elif loss == "binary":
                yield start, crit.max(axis=1, keepdims=True), np.ones((m, 1))
            else:  # coverage_ratio: the covered fraction reaches tau at the need-th value
                need = np.ceil(tau * count).astype(np.int64)
                # the same comparison as the loss: covered / count < tau
                need = np.where((need - 1) / count >= tau, need - 1, need)
                need = np.where(need / count < tau, need + 1, need)
                ordered = np.sort(crit, axis=1)[:, ::-1][:, ::-1]  # ascending, -inf first
                first_valid = crit.shape[1] - count
                pick = np.clip(first_valid + need - 1, 0, crit.shape[1] - 1)
                per_tile = np.where(need <= 0, 0.0, ordered[np.arange(m), pick])
                yield start, per_tile[:, None], np.ones((m, 1))

    # lazy inputs are read once: the critical values are kept (8 bytes a pixel) and replayed by
    # the controller and the risk curve; beyond _STORE_BYTES each pass reads them again
    stream = (is_dask(scores) or is_dask(labels)) and labels.size * 8 > _STORE_BYTES
    fl = _fraction.FractionLoss(blocks, n) if stream else _fraction.FractionLoss.cached(blocks, n)
    order = None
    if rule == "crc":
        lam = _fraction.crc(fl, alpha)
    else:
        lam, order = _fraction.rcps(fl, alpha, delta, bound=bound, seed=seed)
    lam = float(min(lam, 1.0))
    at_hat = fl.tile_losses([lam])[:, 0]
    risk = float(at_hat.mean())
    if curve:
        curve = fraction_curve(fl, lam, at_hat, rule=rule, alpha=alpha, delta=delta,
                               bound=bound, order=order)
    tile = tile_phrase(labels.shape[1:])
    what = {
        "coverage_ratio": f"a new tile covers less than {tau or 1:.0%} of its labelled pixels "
                          f"with probability at most {alpha:.1%}",
        "miscoverage": f"at most {alpha:.1%} of a new tile's labelled pixels have their true class "
                       "outside their set",
        "weighted_miscoverage": f"the class-weighted fraction of a new tile's labelled pixels "
                                f"outside their set is at most {alpha:.1%}",
        "binary": f"a new tile has at least one pixel whose true class is outside its set with "
                  f"probability at most {alpha:.1%}",
    }[loss]
    if rule == "crc":
        guarantee = (f"On average over the calibration draw and a new {tile} tile from the same "
                     f"population as the {n} calibration tiles, {what}.")
    else:
        guarantee = (f"With probability at least {1 - delta:.0%} over the draw of the {n} "
                     f"calibration tiles, in expectation over a new {tile} tile, {what}.")
    guarantee += " It holds for tiles exchangeable with the calibration tiles."
    return CalibrationResult(
        method="segmentation",
        lam=lam,
        alpha=alpha,
        delta=delta if rule == "rcps" else None,
        n=n,
        rule=rule,
        bound=bound if rule == "rcps" else None,
        valid=True,
        guarantee=guarantee,
        loss=loss,
        loss_bound=1.0,
        tile_shape=tuple(int(s) for s in labels.shape[1:]),
        empirical_risk=risk,
        curve=curve or {},
        params={"scores_are": scores_are, "tau": tau, "n_classes": k,
                "class_weights": None if weights_k is None else weights_k.tolist(),
                "ignore_label": ignore_label, "seed": int(seed)},
    )
