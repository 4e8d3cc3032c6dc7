"""benchmarks/calibration.py on the tiny run: the figures it prints hold together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import benchmark_script
from mlic.artifact import save_artifact
from mlic.data.images import Preprocessing
from mlic.models import ModelConfig, build_classifier
from mlic.schema import LabelSchema
from mlic.training.transfer import attach_transfer


@pytest.fixture(scope="module")
def calibration():
    with benchmark_script("calibration") as module:
        yield module


@pytest.mark.parametrize("fit", [None, "auto", "temperature"])
def test_calibration_keeps_decisions_and_map_and_says_what_it_measured(calibration, tiny_run, fit):
    figures = calibration.measure(tiny_run, "demo", "run", fit, {})
    assert figures["decisions_changed"] == 0
    assert figures["mAP_calibrated"] == pytest.approx(figures["mAP_uncalibrated"], abs=1e-4)
    assert figures["test_images"] > 0 and figures["decisions"] == figures["test_images"] * 10
    if fit == "temperature":
        assert figures["method"] == "temperature" and figures["fitted_here"]
    else:  # auto, at training (None) or refitted here: the record says why, and the method follows it
        assert figures["chosen_by"]["kept"] == (figures["method"] == "temperature")
    if figures["method"] is None:
        assert figures["calibrated"] == figures["uncalibrated"]


def test_without_own_votes_leaves_the_validation_images_out_of_the_bank(calibration, tmp_path):
    """Training appends the validation images to the bank last: those rows go, the training rows stay."""
    torch.manual_seed(0)
    schema = LabelSchema(("cat", "dog"))
    pre = Preprocessing(image_size=(32, 32), hflip=False)
    model = build_classifier(schema, ModelConfig(), mean=pre.mean, std=pre.std).eval()
    embeddings = torch.randn(10, model.backbone.num_features)
    labels = np.eye(2, dtype=np.int8)[np.arange(10) % 2]
    attach_transfer(model, {"k": 3, "temperature": 0.05, "alpha": 0.5}, embeddings, labels)
    save_artifact(tmp_path, model, pre, np.full(2, 0.5))
    transfer = calibration.without_own_votes(tmp_path, 4).model.transfer
    assert transfer.bank.shape[0] == transfer.bank_labels.shape[0] == 6
    torch.testing.assert_close(transfer.bank, model.transfer.bank[:6])
    torch.testing.assert_close(transfer.bank_labels, model.transfer.bank_labels[:6])
