"""The streaming kernels of the calibration core give the same numbers as the plain expressions.

The fast paths (row-chunked plain critical values, per-tile counts, stats updated after the exact
window instead of recomputed) must not change any result; these tests pin them to the
whole-array expressions they replace and to the lazy path, which recomputes everything.
"""

import numpy as np
import pytest

from napari_im2im_uq.calibration import (
    _fraction,
    calibrate_intervals,
    calibrate_trust_mask,
    intervals,
    trust_mask,
)
from napari_im2im_uq.calibration.intervals import interval_critical_values


def awkward_case(rng, n=6, shape=(37, 41), dtype=np.float64):
    """Ties, y == f, zero widths on either side, 1-ulp differences and valid holes."""
    f = np.round(rng.normal(size=(n, *shape)) * 8) / 8
    lw = rng.gamma(2.0, 0.3, size=f.shape)
    uw = rng.gamma(2.0, 0.3, size=f.shape)
    lw[rng.random(f.shape) < 0.05] = 0.0
    uw[rng.random(f.shape) < 0.05] = 0.0
    y = f + np.round(rng.normal(size=f.shape) * 16) / 16
    y = np.where(rng.random(f.shape) < 0.1, f, y)
    f, lw, uw, y = (a.astype(dtype) for a in (f, lw, uw, y))
    ulp = rng.random(f.shape) < 0.05
    y[ulp] = np.nextafter(f[ulp], np.where(rng.random(ulp.sum()) < 0.5, -np.inf, np.inf)
                          .astype(dtype))
    valid = rng.random(f.shape) < 0.8
    valid.reshape(n, -1)[:, 0] = True
    return f, f - lw, f + uw, y, valid


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16])
@pytest.mark.parametrize("holes", [False, True])
def test_plain_block_matches_the_plain_quotient(dtype, holes, monkeypatch):
    monkeypatch.setattr(intervals, "_CHUNK", 256)  # several chunks per row
    rng = np.random.default_rng(0)
    f, lo, up, y, valid = awkward_case(rng, dtype=np.float64)
    if dtype == np.int16:
        f, lo, up, y = (np.round(a * 16).astype(np.int16) for a in (f, lo, up, y))
        lo, up = np.minimum(lo, f), np.maximum(up, f)
    else:
        f, lo, up, y = (a.astype(dtype) for a in (f, lo, up, y))
        lo, up = np.minimum(lo, f), np.maximum(up, f)
    v = valid if holes else None
    got = intervals._plain_block(f, lo, up, y, v)
    want = interval_critical_values(f, lo, up, y, exact=False).reshape(f.shape[0], -1)
    if holes:
        want[~valid.reshape(f.shape[0], -1)] = -np.inf
    np.testing.assert_array_equal(got, want)


def test_plain_block_hands_bad_inputs_to_the_checked_path():
    f = np.zeros((2, 3, 3))
    ok = (f, f - 1, f + 1, f + 0.5)
    assert intervals._plain_block(*ok, None) is not None
    for k, value in ((3, np.nan), (3, np.inf), (0, np.inf), (1, -np.inf), (2, np.inf),
                     (1, 0.5), (2, -0.5)):
        bad = [a.copy() for a in ok]
        bad[k][1, 2, 2] = value
        assert intervals._plain_block(*bad, None) is None, (k, value)
        # a bad value at a pixel that does not count is ignored
        valid = np.ones(f.shape, bool)
        valid[1, 2, 2] = False
        assert intervals._plain_block(*bad, valid) is not None, (k, value)


def _old_stats(blocks, n):
    """The whole-block statistics the streaming kernels replace."""
    w_inf = w_pos = 0.0
    cmax = 0.0
    per_tile = max(8, _fraction._SUBSAMPLE // max(n, 1))
    sub_v, sub_w = [], []
    for _, crit, weight in blocks:
        inf = np.isposinf(crit)
        w_inf += float(np.count_nonzero(inf, axis=1) @ weight[:, 0])
        w_pos += float(np.count_nonzero(crit > 0, axis=1) @ weight[:, 0])
        cmax = max(cmax, float(np.max(np.where(inf, -np.inf, crit))))
        stride = max(1, crit.shape[1] // per_tile)
        cs = crit[:, ::stride]
        ws = np.broadcast_to(weight, crit.shape)[:, ::stride]
        keep = (cs > 0) & np.isfinite(cs)
        sub_v.append(cs[keep])
        sub_w.append(ws[keep])
    sub_v, sub_w = np.concatenate(sub_v), np.concatenate(sub_w)
    order = np.argsort(-sub_v, kind="stable")
    return w_inf, w_pos, cmax, sub_v[order], sub_w[order]


def _random_blocks(rng, n=9, d=5000, block=4):
    crit = rng.gamma(2.0, 0.5, size=(n, d))
    crit[rng.random(crit.shape) < 0.02] = np.inf
    crit[rng.random(crit.shape) < 0.05] = 0.0
    crit[rng.random(crit.shape) < 0.1] = -np.inf  # pixels that do not count
    crit = np.round(crit * 64) / 64  # ties
    counted = np.isfinite(crit) | np.isposinf(crit)
    weight = (1.0 / counted.sum(axis=1))[:, None]
    return [(s, crit[s : s + block], weight[s : s + block]) for s in range(0, n, block)]


def test_streaming_stats_and_bracket_match_the_whole_block_expressions(monkeypatch):
    monkeypatch.setattr(_fraction, "_CHUNK", 700)
    rng = np.random.default_rng(1)
    blocks = _random_blocks(rng)
    n = 9
    loss = _fraction.FractionLoss(lambda: iter(blocks), n)
    w_inf, w_pos, cmax, (sub_v, sub_w) = loss._stats()
    old = _old_stats(blocks, n)
    assert (w_inf, w_pos, cmax) == old[:3]
    np.testing.assert_array_equal(sub_v, old[3])
    np.testing.assert_array_equal(sub_w, old[4])
    for lo, hi in ((0.5, 0.75), (0.0, 10.0), (1.0, 1.0), (2.0, 1.0), (-np.inf, np.inf)):
        w_hi, w_lo, collected = loss._bracket_pass(lo, hi)
        want_hi = want_in = 0.0
        vals, wts = [], []
        for _, crit, weight in blocks:
            above = crit > hi
            inside = (crit > lo) & ~above
            want_hi += float(np.count_nonzero(above, axis=1) @ weight[:, 0])
            want_in += float(np.count_nonzero(inside, axis=1) @ weight[:, 0])
            vals.append(crit[inside])
            wts.append(np.broadcast_to(weight, crit.shape)[inside])
        assert (w_hi, w_lo) == (want_hi, want_hi + want_in)
        np.testing.assert_array_equal(collected[0], np.concatenate(vals))
        np.testing.assert_array_equal(collected[1], np.concatenate(wts))
    lams = [0.0, 0.25, 1.0, 3.0, np.inf]
    want = np.concatenate([
        np.stack([np.where(crit > lam, np.broadcast_to(weight, crit.shape), 0.0).sum(axis=1)
                  for lam in lams], axis=1) for _, crit, weight in blocks])
    np.testing.assert_array_equal(loss.tile_losses(lams), want)


def test_bracket_pass_stops_collecting_past_the_limit(monkeypatch):
    monkeypatch.setattr(_fraction, "_COLLECT_LIMIT", 300)
    blocks = _random_blocks(np.random.default_rng(2))
    loss = _fraction.FractionLoss(lambda: iter(blocks), 9)
    for lo, hi in ((0.0, 10.0), (1.0, 1.02), (3.0, 3.3), (3.5, 10.0)):
        count = sum(int(np.count_nonzero((crit > lo) & (crit <= hi))) for _, crit, _ in blocks)
        collected = loss._bracket_pass(lo, hi)[2]
        if count > 300:
            assert collected is None
        else:
            assert collected[0].size == count


@pytest.mark.parametrize(("rule", "bound"), [("crc", None), ("rcps", "hoeffding"),
                                             ("rcps", "hoeffding_bentkus")])
@pytest.mark.parametrize("holes", [False, True])
def test_in_memory_result_equals_the_recomputing_lazy_path(rule, bound, holes):
    """In memory, stats are updated after the exact window; lazily they are recomputed."""
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(3)
    f, lo, up, y, valid = awkward_case(rng, n=12, shape=(20, 20))
    v = valid if holes else None
    for alpha in (0.15, 0.3, 0.5):
        kwargs = dict(alpha=alpha, delta=0.1, rule=rule, bound=bound or "hoeffding")
        try:
            eager = calibrate_intervals(f, lo, up, y, valid=v, block_tiles=4, **kwargs)
        except ValueError:  # infeasible for this alpha
            continue
        lazy = [da.from_array(a, chunks=(4, 20, 20)) for a in (f, lo, up, y)]
        lv = None if v is None else da.from_array(v, chunks=(4, 20, 20))
        assert calibrate_intervals(*lazy, valid=lv, **kwargs).to_dict() == eager.to_dict()


def test_window_at_the_largest_value_recomputes_the_stats():
    """lam_hat at the largest critical value: the stats' maximum is itself refined."""
    rng = np.random.default_rng(4)
    n = 200
    f = rng.normal(size=(n, 3, 3))
    y = f + rng.normal(size=f.shape)
    w = np.full(f.shape, 10.0)
    w[0, 0, 0] = 1e-3  # one far value: covering it needs the largest lam
    res = calibrate_intervals(f, f - w, f + w, y, alpha=1.05 / (n + 1), rule="crc")
    crit = interval_critical_values(f, f - w, f + w, y)
    assert res.lam == crit.max()
    assert max(res.curve["lam"]) == crit.max()


# ---------------------------------------------------------------------------- trust mask
def trust_case(rng, n=40, shape=(64, 64), ties=False):
    truth = rng.random((n, *shape)).astype(np.float32)
    pred = np.clip(truth + rng.normal(scale=0.1, size=truth.shape), 0, 1).astype(np.float32)
    sigma = np.abs(truth.astype(np.float64) - pred) + rng.normal(scale=0.03, size=truth.shape)
    if ties:
        sigma = np.round(sigma * 50) / 50
        pred = np.where(rng.random(pred.shape) < 0.2, truth, pred)  # zero errors
    return sigma, pred, truth


def _brute_t(sigma, D, alpha, B):
    """Eq. (1) over every observed sigma value (vectorised Algorithm 2)."""
    n = sigma.shape[0]
    s, d = sigma.reshape(n, -1), D.reshape(n, -1)
    values = np.unique(s)
    ok = [np.max(d, axis=1, where=s <= t, initial=0.0).sum() + B <= alpha * (n + 1) + 1e-12
          for t in values]
    ok = np.array(ok)
    if ok.all():
        return np.inf
    fail = np.flatnonzero(~ok)[0]
    return values[fail - 1] if fail else -np.inf


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("curve_points", [0, 3])
def test_top_sets_equal_the_bracketed_lazy_path_and_brute_force(ties, curve_points):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(10)
    sigma, pred, truth = trust_case(rng, ties=ties)
    D = np.abs(truth.astype(np.float64) - pred)
    small = [x[:20, :12, :12] for x in (sigma, pred, truth, D)]
    for alpha in (0.08, 0.15, 0.3, 0.6):
        eager = calibrate_trust_mask(sigma, pred, truth, alpha=alpha, data_range=(0, 1),
                                     curve_points=curve_points, block_tiles=7)
        lazy = [da.from_array(x, chunks=(7, 64, 64)) for x in (sigma, pred, truth)]
        assert calibrate_trust_mask(*lazy, alpha=alpha, data_range=(0, 1),
                                    curve_points=curve_points).to_dict() == eager.to_dict()
        got = calibrate_trust_mask(*small[:3], alpha=alpha, data_range=(0, 1),
                                   curve_points=curve_points)
        assert got.lam == _brute_t(small[0], small[3], alpha, 1.0)


def test_top_sets_retry_and_fall_back_without_changing_the_answer(monkeypatch):
    rng = np.random.default_rng(11)
    sigma, pred, truth = trust_case(rng)
    kwargs = dict(alpha=0.12, data_range=(0, 1), curve_points=0)
    want = calibrate_trust_mask(sigma, pred, truth, **kwargs).to_dict()
    calls = []
    collect = trust_mask._collect_top
    monkeypatch.setattr(trust_mask, "_collect_top",
                        lambda *a: calls.append(1) or collect(*a))
    # a first top set far too small: its t* is too high, the levels are lowered and retried
    monkeypatch.setattr(trust_mask, "_TOP_SHARE", 1 / 4096)
    assert calibrate_trust_mask(sigma, pred, truth, **kwargs).to_dict() == want
    assert calls  # the retry collected again
    # top sets past the limit: the bracketed search answers
    monkeypatch.setattr(trust_mask, "_TOP_SHARE", 1 / 128)
    monkeypatch.setattr(trust_mask, "_TOP_LIMIT", 10)
    bracketed = []
    solve = trust_mask._solve_bracketed
    monkeypatch.setattr(trust_mask, "_solve_bracketed",
                        lambda *a: bracketed.append(1) or solve(*a))
    assert calibrate_trust_mask(sigma, pred, truth, **kwargs).to_dict() == want
    assert bracketed


def test_scan_hands_bad_inputs_to_the_checked_path():
    rng = np.random.default_rng(12)
    sigma, pred, truth = trust_case(rng, n=3, shape=(8, 8))

    def scan(s, p, y, data_range=(0, 1), bound=1.0):
        return trust_mask._scan_pointwise(s, p, y, 3, bound, data_range, 2, store=False)

    assert scan(sigma, pred, truth) is not None
    bad = sigma.copy()
    bad[2, 3, 3] = np.nan
    assert scan(bad, pred, truth) is None
    bad = truth.copy()
    bad[1, 0, 0] = 1.5
    assert scan(sigma, pred, bad) is None
    assert scan(sigma, pred, bad, data_range=None, bound=2.0) is not None
    assert scan(sigma, pred, bad, data_range=None, bound=0.4) is None  # D above B
    bad[1, 0, 0] = np.nan
    assert scan(sigma, pred, bad, data_range=None, bound=2.0) is None


def test_largest_below_and_record_sweep_match_plain_expressions():
    rng = np.random.default_rng(13)
    s = np.round(rng.normal(size=(5, 3000)) * 40) / 40  # ties
    blocks = [s[:2], s[2:]]
    for t in (-5.0, -0.5, 0.0, 0.3, 9.0):
        below = s[s < t]
        want = below.max() if below.size else -np.inf
        assert trust_mask._largest_below(lambda: iter(blocks), t, -np.inf) == want
        if below.size:
            assert trust_mask._largest_below(lambda: iter(blocks), t, below.min()) == want
    # the record sweep against the sweep over every candidate it replaces
    n = 6
    cand_tile = np.sort(rng.integers(0, n, size=4000))
    cand_t = np.round(rng.random(4000) * 30) / 30
    cand_d = np.round(rng.random(4000) * 20) / 20
    base = np.round(rng.random(n) * 10) / 20
    for threshold in (base.sum() + 0.3, base.sum() + 2.0, base.sum() + 4.5):
        got = trust_mask._sweep(cand_t, cand_d, cand_tile, base, threshold)
        order = np.lexsort((cand_t, cand_tile))
        t, d, tile = cand_t[order], cand_d[order], cand_tile[order]
        jumps, run_all = np.zeros(t.size), np.zeros(t.size)
        cuts = np.flatnonzero(np.r_[True, tile[1:] != tile[:-1], True])
        for a, b in zip(cuts[:-1], cuts[1:]):
            run = np.maximum.accumulate(np.maximum(d[a:b], base[tile[a]]))
            jumps[a:b] = run - np.r_[base[tile[a]], run[:-1]]
            run_all[a:b] = run
        o = np.argsort(t, kind="stable")
        total = base.sum() + np.cumsum(jumps[o])
        over = np.flatnonzero(np.r_[t[o][1:] != t[o][:-1], True] & (total > threshold))
        if not over.size:
            assert got is None
            continue
        assert got[0] == t[o][over[0]]
        for best in (got[0], np.nextafter(got[0], -np.inf)):
            want_l, got_l = base.copy(), base.copy()
            np.maximum.at(want_l, tile[t <= best], run_all[t <= best])
            np.maximum.at(got_l, got[2][got[1] <= best], got[3][got[1] <= best])
            np.testing.assert_array_equal(got_l, want_l)
