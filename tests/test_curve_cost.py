"""The risk curve costs nothing when it is not asked for (a regression of the one-pass core)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_im2im_uq.calibration import calibrate_trust_mask, trust_mask


def test_a_trust_mask_without_curve_makes_no_pass_for_it(monkeypatch):
    rng = np.random.default_rng(0)
    pred = rng.random((20, 16, 16))
    truth = np.clip(pred + 0.1 * rng.standard_normal(pred.shape), 0, 1)
    sigma = np.abs(truth - pred) + 0.02 * rng.random(pred.shape)
    full = calibrate_trust_mask(sigma, pred, truth, alpha=0.3, data_range=(0, 1))

    def boom(*args, **kwargs):
        raise AssertionError("a pass over the tiles for a curve nobody asked for")

    monkeypatch.setattr(trust_mask, "_tile_losses_at", boom)
    bare = calibrate_trust_mask(sigma, pred, truth, alpha=0.3, data_range=(0, 1), curve_points=0)
    assert bare.lam == full.lam
    assert bare.curve["lam"] == [full.lam]
    i = full.curve["lam"].index(full.lam)
    assert bare.curve["risk"][0] == pytest.approx(full.curve["risk"][i], abs=1e-15)
