"""Tests of mlic.training.module: the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import pytest

from mlic.training import warmup_cosine


def test_learning_rate_schedule_warms_up_then_decays_to_zero():
    factors = np.array([warmup_cosine(s, 10, 100) for s in range(101)])
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert (np.diff(factors[10:]) <= 1e-12).all()
    assert factors[100] == pytest.approx(0.0, abs=1e-12)
