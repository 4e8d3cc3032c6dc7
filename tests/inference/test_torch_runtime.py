"""Tests of mlic.inference.torch_runtime: the artifact's PyTorch network, its weights, eval mode."""

from __future__ import annotations

import pytest
import torch

from mlic.inference import precision
from mlic.inference.torch_runtime import Bfloat16Network, torch_model
from mlic.models import Classifier


def test_the_torch_runtime_is_the_artifacts_classifier_in_eval_mode(make_artifact):
    made = make_artifact(seed=3)
    model = torch_model(made.artifact)
    assert not model.training
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(images), made.model(images), rtol=0, atol=0)


def test_bf16_runs_the_same_network_under_autocast_and_returns_float32_logits(make_artifact):
    # Bfloat16Network runs on any CPU (emulated where bf16 is not native): this test needs no AVX-512
    made = make_artifact(seed=4)
    model = Bfloat16Network(torch_model(made.artifact), torch.device("cpu"))
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        logits, expected = model(images), made.model(images)
    assert logits.dtype == torch.float32 and logits.shape == expected.shape
    assert (logits - expected).abs().max() < 0.05 * expected.abs().max()  # bf16 keeps 8 bits of mantissa
    assert logits.ne(expected).any()  # it really ran in bf16


def test_torch_model_gives_the_bf16_network_only_where_the_cpu_runs_bf16(make_artifact, monkeypatch):
    made = make_artifact(seed=4)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert isinstance(torch_model(made.artifact, precision="bf16"), Bfloat16Network)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    with pytest.warns(UserWarning, match="running float32 instead of bf16"):
        assert isinstance(torch_model(made.artifact, precision="bf16"), Classifier)
