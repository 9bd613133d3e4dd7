"""The streaming kernels of the calibration core give the same numbers as the plain expressions.

The fast paths (row-chunked plain critical values, per-tile counts, stats updated after the exact
window instead of recomputed) must not change any result; these tests pin them to the
whole-array expressions they replace and to the lazy path, which recomputes everything.
"""

import numpy as np
import pytest

from napari_im2im_uq.calibration import _fraction, calibrate_intervals, intervals
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
