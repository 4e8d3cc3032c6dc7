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


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_the_optimizer_runs_the_backbone_at_its_share_of_the_rate_and_decays_no_bias(scale):
    from mlic.models import ModelConfig, build_classifier
    from mlic.schema import LabelSchema
    from mlic.training.module import build_optimizer

    model = build_classifier(LabelSchema(("a", "b")), ModelConfig())
    optimizer = build_optimizer(model, 0.01, 0.05, scale)
    backbone = {id(p) for p in model.backbone.parameters()}
    seen = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen += 1
            assert group["lr"] == pytest.approx(0.01 * (scale if id(p) in backbone else 1.0))
            assert group["weight_decay"] == (0.0 if p.ndim <= 1 else 0.05)
    assert seen == len(list(model.parameters()))
