"""Tests of mlic.inference.torch_runtime: the artifact's PyTorch network, its weights, eval mode."""

from __future__ import annotations

import torch

from mlic.inference.torch_runtime import torch_model


def test_the_torch_runtime_is_the_artifacts_classifier_in_eval_mode(make_artifact):
    made = make_artifact(seed=3)
    model = torch_model(made.artifact)
    assert not model.training
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(images), made.model(images), rtol=0, atol=0)
