"""The guarantees themselves, checked statistically (fixed seeds, stated tolerances).

- RCPS (intervals): tiles are drawn i.i.d. from a population whose true risk at any lam is known
  in closed form, so each repetition checks R(lam_hat) > alpha exactly; the violation rate must
  be at most delta + 3 Monte-Carlo standard errors.
- CRC and conformal (all methods): random calibration/test splits of a fixed pool of tiles are
  exchangeable, so the mean test risk over splits must be at most alpha (or 1 - beta) + 3
  standard errors of that mean.
- CRC also satisfies a deterministic leave-one-out identity, tested exactly.
"""

import numpy as np
import pytest
from scipy import special

from napari_im2im_uq.calibration import (
    calibrate_intervals,
    calibrate_mask,
    calibrate_segmentation,
    calibrate_trust_mask,
)
from napari_im2im_uq.calibration.evaluation import held_out_losses, risk_over_splits
from napari_im2im_uq.data import shared_data_root, tem_calibration_tiles

# ----------------------------------------------------------------------------- RCPS, exact risk
ETA = 0.4  # heuristic width = true scale * exp(N(0, ETA^2)): a misspecified heuristic
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def true_risk(lam):
    """P(|z| > lam * k) with z ~ N(0, 1), k = exp(ETA * N(0, 1)): the population miscoverage."""
    k = np.exp(ETA * _NODES)
    return float(np.sum(_WEIGHTS * special.erfc(lam * k / np.sqrt(2))))


def draw_tiles(rng, n, shape=(4, 4)):
    scale = rng.lognormal(0.0, 0.5, size=(n, *shape))
    width = scale * np.exp(ETA * rng.normal(size=scale.shape))
    f = rng.normal(size=scale.shape)
    truth = f + scale * rng.normal(size=scale.shape)
    return f, f - width, f + width, truth


@pytest.mark.parametrize("bound", ["hoeffding_bentkus", "wsr", "hoeffding"])
@pytest.mark.parametrize("n", [40, 160])
def test_rcps_violation_rate_is_at_most_delta(bound, n):
    rng = np.random.default_rng(n + len(bound))
    alpha, delta, reps = 0.15, 0.2, 200
    violations, risks = 0, []
    for rep in range(reps):
        res = calibrate_intervals(*draw_tiles(rng, n), alpha=alpha, delta=delta, bound=bound,
                                  seed=rep)
        risk = true_risk(res.lam)
        risks.append(risk)
        violations += risk > alpha
    rate = violations / reps
    assert rate <= delta + 3 * np.sqrt(delta * (1 - delta) / reps)
    assert np.mean(risks) < alpha  # and the bound is not vacuous: some risk is taken
    assert np.mean(risks) > (alpha / 20 if bound == "hoeffding" else alpha / 4)


@pytest.mark.parametrize("n", [19, 60])
def test_crc_intervals_mean_risk_is_at_most_alpha(n):
    rng = np.random.default_rng(100 + n)
    alpha, reps = 0.1, 400
    risks = [true_risk(calibrate_intervals(*draw_tiles(rng, n), alpha=alpha, rule="crc").lam)
             for _ in range(reps)]
    assert np.mean(risks) <= alpha + 3 * np.std(risks) / np.sqrt(reps)
    assert np.mean(risks) > 0.4 * alpha  # and close to alpha: CRC is tight


# ----------------------------------------------------------------------- CRC / conformal, splits
@pytest.fixture(scope="module")
def pool():
    return tem_calibration_tiles(size=512, tile=32, seed=3)  # 256 tiles of 32 x 32


def split_risks(pool, method, n_cal, n_splits, **kwargs):
    def cal(idx):
        d = {k: v[idx] for k, v in pool.items()}
        if method == "intervals":
            return calibrate_intervals(d["prediction"], d["lower"], d["upper"], d["truth"],
                                       **kwargs)
        if method == "trust_mask":
            return calibrate_trust_mask(d["sigma"], d["prediction"], d["truth"],
                                        data_range=(0, 1), curve_points=0, **kwargs)
        if method == "mask":
            return calibrate_mask(d["mask_scores"], d["prediction"], d["truth"], **kwargs)
        return calibrate_segmentation(d["probabilities"], d["labels"], **kwargs)

    def evaluate(res, idx):
        d = {k: v[idx] for k, v in pool.items()}
        if method == "segmentation":
            return held_out_losses(res, scores=d["probabilities"], labels=d["labels"])
        keys = {"intervals": ("prediction", "lower", "upper", "truth"),
                "trust_mask": ("sigma", "prediction", "truth"),
                "mask": ("mask_scores", "prediction", "truth")}[method]
        return held_out_losses(res, **{k: d[k] for k in keys})

    n_tiles = pool["truth"].shape[0]
    return risk_over_splits(cal, evaluate, n_tiles, n_cal=n_cal, n_splits=n_splits, seed=n_cal)


@pytest.mark.parametrize(
    ("method", "kwargs", "level"),
    [
        ("intervals", {"alpha": 0.1, "rule": "crc"}, 0.1),
        ("trust_mask", {"alpha": 0.35}, 0.35),
        ("mask", {"alpha": 0.02, "beta": 0.8}, 0.2),
        ("mask", {"alpha": 0.03, "rule": "crc", "data_range": (0, 1)}, 0.03),
        ("segmentation", {"alpha": 0.1}, 0.1),
        ("segmentation", {"alpha": 0.2, "loss": "coverage_ratio", "tau": 0.9}, 0.2),
    ],
)
@pytest.mark.parametrize("n_cal", [40, 120])
def test_mean_test_risk_over_random_splits(pool, method, kwargs, level, n_cal):
    out = split_risks(pool, method, n_cal, 60, **kwargs)
    risks = out["risk"]
    se = np.std(risks) / np.sqrt(risks.size)
    assert risks.mean() <= level + 3 * se + 1e-12, (risks.mean(), se)


def test_rcps_segmentation_violation_rate_on_splits(pool):
    # a large test side keeps the split's test risk close to the pool risk
    out = split_risks(pool, "segmentation", 120, 60, alpha=0.15, rule="rcps", delta=0.2)
    assert out["violation_rate"] <= 0.2 + 3 * np.sqrt(0.2 * 0.8 / 60)


# ---------------------------------------------------------------------- leave-one-out identity
def loo_average(losses_at, fit, n_plus_one):
    """(1 / (n + 1)) sum_j L_j(lam fitted without j)."""
    total = 0.0
    for j in range(n_plus_one):
        keep = np.delete(np.arange(n_plus_one), j)
        total += losses_at(fit(keep), j)
    return total / n_plus_one


@pytest.mark.parametrize("method", ["intervals", "trust_mask", "segmentation", "mask"])
def test_crc_leave_one_out_identity_holds_exactly(method):
    rng = np.random.default_rng({"intervals": 1, "trust_mask": 2, "segmentation": 3,
                                 "mask": 4}[method])
    for _ in range(30):
        m = int(rng.integers(12, 30))
        alpha = float(rng.uniform(1.2 / m, 0.4))
        if method == "intervals":
            f, lo, up, y = draw_tiles(rng, m, shape=(3, 3))

            def fit(k):
                return calibrate_intervals(f[k], lo[k], up[k], y[k], alpha=alpha, rule="crc")

            def loss(res, j):
                return held_out_losses(res, prediction=f[j:j + 1], lower=lo[j:j + 1],
                                   upper=up[j:j + 1], truth=y[j:j + 1])[0]
        elif method == "trust_mask":
            y = rng.random((m, 3, 3))
            f = np.clip(y + rng.normal(scale=0.3, size=y.shape), 0, 1)
            s = np.abs(y - f) + rng.normal(scale=0.1, size=y.shape)

            def fit(k):
                return calibrate_trust_mask(s[k], f[k], y[k], alpha=alpha, data_range=(0, 1),
                                            curve_points=0)

            def loss(res, j):
                return held_out_losses(res, sigma=s[j:j + 1], prediction=f[j:j + 1],
                                   truth=y[j:j + 1])[0]
        elif method == "segmentation":
            logits = rng.normal(scale=1.5, size=(m, 3, 3, 3))
            p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            lab = rng.integers(0, 3, size=(m, 3, 3))

            def fit(k):
                return calibrate_segmentation(p[k], lab[k], alpha=alpha)

            def loss(res, j):
                return held_out_losses(res, scores=p[j:j + 1], labels=lab[j:j + 1])[0]
        else:
            y = rng.random((m, 3, 3))
            f = np.clip(y + rng.normal(scale=0.3, size=y.shape), 0, 1)
            ms = rng.random(y.shape)

            def fit(k):
                return calibrate_mask(ms[k], f[k], y[k], alpha=alpha, rule="crc",
                                      data_range=(0, 1))

            def loss(res, j):
                return held_out_losses(res, mask_scores=ms[j:j + 1], prediction=f[j:j + 1],
                                   truth=y[j:j + 1])[0]
        assert loo_average(loss, fit, m) <= alpha + 1e-9


# ------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_validity_on_real_tem(tmp_path):
    root = shared_data_root()
    if root is None:
        pytest.skip("../shared/data not found: real-data validity is checked in CI only")
    from napari_im2im_uq.data import load_em_drosophila

    raw = load_em_drosophila(stack=1, slices=range(14, 20))["raw"]
    pool = tem_calibration_tiles(raw[:, :512, :512], tile=64)  # 6 slices x 64 tiles
    for method, kwargs, level in [
        ("intervals", {"alpha": 0.1, "rule": "crc"}, 0.1),
        ("trust_mask", {"alpha": 0.4}, 0.4),
    ]:
        out = split_risks(pool, method, 150, 25, **kwargs)
        se = np.std(out["risk"]) / np.sqrt(out["risk"].size)
        assert out["risk"].mean() <= level + 3 * se
    out = split_risks(pool, "intervals", 200, 25, alpha=0.1, delta=0.2)
    assert out["violation_rate"] <= 0.2 + 3 * np.sqrt(0.2 * 0.8 / 25)
