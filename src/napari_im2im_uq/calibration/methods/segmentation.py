"""Registry entry: conformal segmentation sets and varisco (Mossina et al. 2024)."""

from __future__ import annotations

import numpy as np

from .. import drift
from .._apply import per_pixel
from .._schema import Param
from ..metrics import activation_ratio
from ..segmentation import calibrate_segmentation
from ._base import Method, Product
from ._report import floats, fmt


class _Segmentation(Method):
    """Multi-label prediction sets ``{k : p_k >= 1 - lam}`` plus the top-1 class."""

    name = "segmentation"
    title = "segmentation sets (varisco)"
    needs = ("probabilities",)
    producers = "a segmentation model (tem-membrane-seg)"
    rules = ("crc", "rcps")
    options = frozenset({"delta", "bound", "seed"})
    truth = "labels"
    class_axis = True
    x_label = "lam"
    tile_keys = ("scores", "labels")
    plots = ("set_sizes",)
    losses = ("miscoverage", "binary", "coverage_ratio", "weighted_miscoverage")
    lam_range = (0.0, 1.0)  # 1 - p_k <= lam
    params_schema = {
        "scores_are": Param("choice", choices=("probabilities", "logits")),
        "tau": Param("number", required=False, nullable=True, lo=0.0, hi=1.0, lo_open=True),
        "n_classes": Param("integer", lo=1),
        "class_weights": Param("numbers", required=False, nullable=True, lo=0.0),
        "ignore_label": Param("integer", required=False, nullable=True),
        "seed": Param("integer", required=False, lo=0),
    }

    def check_consistency(self, fields):
        p, loss = fields["params"], fields["loss"]
        if loss == "coverage_ratio" and p.get("tau") is None:
            return [("params.tau", "a number in (0, 1] for loss 'coverage_ratio'", None)]
        weights = p.get("class_weights")
        if loss == "weighted_miscoverage" and (weights is None or len(weights) != p["n_classes"]):
            return [("params.class_weights", f"{p['n_classes']} non-negative numbers (one per "
                                             "class) for loss 'weighted_miscoverage'",
                     None if weights is None else f"{len(weights)} numbers")]
        return []

    def inputs(self, arrays, *, sigma=None):
        return {"scores": arrays["probabilities"]}

    def prepare_tiles(self, tiles):
        """Check the labels (0 = not annotated, k + 1 = class k), drop unannotated tiles."""
        lab = np.asarray(tiles["truth"]).astype(np.int64)
        if lab.size and lab.min() < 0:
            raise ValueError(f"truth labels must be >= 0 (0 = not annotated); got {lab.min()}")
        keep = (lab > 0).any(axis=(1, 2))
        out = {k: v[keep] for k, v in tiles.items() if k != "truth"}
        lab = lab[keep]
        k = int(np.shape(tiles["scores"])[1])
        if lab.size and lab.max() > k:
            raise ValueError(
                f"truth labels must be 0 (not annotated) or 1..{k} (class k - 1 of the model's "
                f"{k} classes); got the label {int(lab.max())}"
            )
        out["labels"] = lab - 1  # label k + 1 is class k; 0 (not annotated) becomes -1
        return out, keep

    def calibrate(self, tiles, *, alpha, delta=0.1, rule=None, bound="hoeffding_bentkus",
                  beta=0.9, distance="l1", data_range=None, seed=0):
        rule = self.check_rule(rule)
        return calibrate_segmentation(tiles["scores"], tiles["labels"], alpha=alpha,
                                      ignore_label=-1, rule=rule, delta=delta, bound=bound,
                                      seed=seed)

    def drift_features(self, tiles):
        """Top-class probability, entropy and foreground fraction of each tile."""
        p = np.clip(np.asarray(tiles["scores"], dtype=np.float64), 0.0, 1.0)  # (n, K, rows, cols)
        out = drift.score_features(p.max(axis=1), "max probability")
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
        out["entropy mean"] = entropy.reshape(len(p), -1).mean(axis=1)
        out["foreground fraction"] = (p.argmax(axis=1) > 0).reshape(len(p), -1).mean(axis=1)
        return out

    def products(self, result, arrays, *, sigma=None, show_bounds=False):
        # (K, planes, rows, cols) or (K, rows, cols); dask scores give dask products, block by
        # block with the class axis whole (every product is per pixel)
        scores = arrays["probabilities"]
        k = scores.shape[0]

        def per_plane(block, func):
            out = func(np.moveaxis(block if block.ndim == 4 else block[:, None], 0, 1))
            return out if block.ndim == 4 else out[0]  # planes as tiles: (Z, K, Y, X)

        def size(block):
            return per_plane(block, lambda s: np.asarray(result.prediction_sets(s))
                             .sum(axis=1).astype(np.uint8))

        def var(block):
            return per_plane(block, lambda s: np.asarray(result.varisco(s), dtype=np.float32))

        def seg(block):
            return (block.argmax(axis=0) + 1).astype(np.uint8)

        return [
            Product("segmentation", per_pixel(seg, scores, dtype=np.uint8), "segmentation",
                    kind="labels"),
            Product("prediction set size", per_pixel(size, scores, dtype=np.uint8), "set_size",
                    limits=(0.0, float(k))),
            Product("varisco", per_pixel(var, scores, dtype=np.float32), "varisco",
                    limits=(0.0, 1.0)),
        ]

    def held_out_losses(self, result, tiles):
        sets = np.asarray(result.prediction_sets(tiles["scores"]))
        labels = np.asarray(tiles["labels"]).astype(np.int64)
        ignore = result.params.get("ignore_label")
        valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
        safe = np.where(valid, labels, 0)
        covered = np.take_along_axis(sets, safe[:, None], axis=1)[:, 0]
        n = labels.shape[0]
        cov = np.where(valid, covered, False).reshape(n, -1).sum(axis=1)
        count = valid.reshape(n, -1).sum(axis=1)
        loss = result.loss
        if loss == "miscoverage":
            return 1.0 - cov / count
        if loss == "binary":
            return (cov < count).astype(np.float64)
        if loss == "coverage_ratio":
            return (cov / count < result.params["tau"]).astype(np.float64)
        k = result.params["n_classes"]
        w = np.asarray(result.params["class_weights"], dtype=np.float64)
        out = np.empty(n)
        for i in range(n):
            yi, ci = safe[i][valid[i]], covered[i][valid[i]]
            per_class = np.bincount(yi, minlength=k)
            hit = np.bincount(yi, weights=ci.astype(float), minlength=k)
            present = per_class > 0
            frac = np.where(present, hit / np.maximum(per_class, 1), 0.0)
            out[i] = 1.0 - (w[present] * frac[present]).sum() / w[present].sum()
        return out

    def recalibrate(self, result, tiles):
        p = result.params
        return calibrate_segmentation(
            tiles["scores"], tiles["labels"], alpha=result.alpha, scores_are=p["scores_are"],
            loss=result.loss, tau=p.get("tau"), class_weights=p.get("class_weights"),
            ignore_label=p.get("ignore_label"), rule=result.rule,
            **self.risk_control_options(result),
            curve=False,  # diagnostics read lam only
        )

    def pixel_key(self, result):
        return "labels"

    def merge_valid(self, result, tiles):
        """Held-out ``valid`` becomes the ignore label in ``labels`` (checked tiles)."""
        if "valid" not in tiles:
            return tiles
        ignore = result.params.get("ignore_label")
        if ignore is None:
            raise ValueError(
                "tiles['valid'] cannot be used with a segmentation calibrated without an "
                "ignore_label; mark unannotated pixels in tiles['labels'] instead"
            )
        tiles = dict(tiles)
        tiles["labels"] = np.where(tiles.pop("valid"), tiles["labels"], ignore)
        return tiles

    def held_out_words(self, result):
        return f"{result.loss.replace('_', ' ')} of the prediction sets"

    def metrics(self, result, tiles, losses):
        scores, labels = tiles["scores"], tiles["labels"]
        ignore = result.params.get("ignore_label")
        valid = None if ignore is None else labels != ignore
        sets = np.asarray(result.prediction_sets(scores))
        k = int(sets.shape[1])
        counts = sets.sum(axis=1)  # (n, rows, cols): classes in each pixel's set
        n = counts.shape[0]
        ratio = activation_ratio(sets, valid=valid)
        per_tile = counts.reshape(n, -1).mean(axis=1)
        hist = np.bincount(counts.ravel(), minlength=k + 1)[1:]
        return {
            "activation_ratio": floats(ratio),
            "mean_activation_ratio": float(ratio.mean()),
            "set_size": floats(per_tile),
            "mean_set_size": float(per_tile.mean()),
            "set_size_counts": {"size": list(range(1, k + 1)), "count": [int(c) for c in hist]},
            "varisco_mean": floats(per_tile / k),
            "ambiguous_fraction": float(np.mean(counts > 1)),
            "n_classes": k,
        }

    def summary(self, result, metrics):
        m = metrics
        return [
            ("activation ratio", f"{fmt(m['mean_activation_ratio'])} classes per labelled pixel"),
            ("set size", f"{fmt(m['mean_set_size'])} classes per pixel on average; "
                         f"{m['ambiguous_fraction']:.1%} of pixels hold more than one class"),
        ]


ENTRY = _Segmentation()
