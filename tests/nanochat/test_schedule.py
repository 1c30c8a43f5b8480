"""nanochat's learning-rate and Muon-momentum schedules (schedule.py)."""
import numpy as np
import pytest

from nanochat.schedule import lr_multiplier, muon_momentum


def test_lr_multiplier_known_values():
    # 10 steps, 20% warm-up (2 steps), 30% warm-down (3 steps) to 0.1.
    got = [lr_multiplier(s, 10, warmup_ratio=0.2, warmdown_ratio=0.3, final_lr_frac=0.1) for s in range(11)]
    want = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.4, 0.1]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # nanochat's defaults: no warm-up, last 20% decays linearly to 0.
    assert lr_multiplier(0, 100) == 1.0
    assert lr_multiplier(80, 100) == 1.0
    assert lr_multiplier(90, 100) == pytest.approx(0.5)
    assert lr_multiplier(100, 100) == 0.0
    # Phase lengths are rounded as in nanochat: round(0.25 * 10) == 2.
    assert lr_multiplier(1, 10, warmup_ratio=0.25, warmdown_ratio=0.0) == 1.0
    assert lr_multiplier(10, 10, warmdown_ratio=0.0) == 1.0


@pytest.mark.parametrize("args", [(-1, 10), (11, 10), (0, 0), (1.5, 10), (0, 10, -0.1), (0, 10, 0.0, 1.5),
                                  (0, 10, 0.6, 0.6), (0, 10, 0.0, 0.2, 2.0)])
def test_lr_multiplier_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        lr_multiplier(*args)


def test_muon_momentum_warmup():
    assert muon_momentum(0) == pytest.approx(0.85)
    assert muon_momentum(150) == pytest.approx(0.90)
    assert muon_momentum(300) == pytest.approx(0.95)
    assert muon_momentum(10_000) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        muon_momentum(-1)
