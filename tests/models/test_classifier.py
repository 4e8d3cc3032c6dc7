"""Tests of mlic.models.classifier: logits in the schema's layout, normalisation inside, the model config."""

from __future__ import annotations

import json

import pytest
import torch

from mlic.models import (
    Classifier,
    ModelConfig,
    build_classifier,
)
from mlic.schema import Attribute, LabelSchema

LABELS_ONLY = LabelSchema(("a", "b", "c", "d"))


ATTRIBUTES_ONLY = LabelSchema(attributes=(Attribute("size", ("s", "m", "l")), Attribute("on", ("no", "yes"))))


MIXED = LabelSchema(("a", "b"), (Attribute("size", ("s", "m", "l")),))


BACKBONES = ["mlic_cnn", "mlic_cnn_wide", "resnet10t"]


def images(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)


# -- classifier ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schema", [LABELS_ONLY, ATTRIBUTES_ONLY, MIXED], ids=["labels", "attributes", "mixed"]
)
def test_logits_shape(schema):
    torch.manual_seed(0)
    model = build_classifier(schema).eval()
    assert isinstance(model, Classifier) and model.schema is schema
    with torch.no_grad():
        logits = model(images(3))
    assert logits.shape == (3, schema.num_outputs) and logits.dtype == torch.float32


@pytest.mark.parametrize(
    "backbone",
    [
        *BACKBONES,
        "mobilenetv3_small_050",
    ],
)
def test_classifier_on_each_backbone(backbone):
    torch.manual_seed(0)
    model = build_classifier(MIXED, ModelConfig(backbone=backbone)).eval()
    with torch.no_grad():
        logits = model(images(2, 64))
    assert logits.shape == (2, MIXED.num_outputs)


def test_uint8_input_equals_float_input():
    torch.manual_seed(0)
    model = build_classifier(MIXED).eval()
    x = images(4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.float()), rtol=0, atol=0)


def test_normalisation_is_inside_the_model():
    mean, std = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)
    model = build_classifier(MIXED, mean=mean, std=std)
    x = images(2)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)
    # The normalisation constants are not weights: they come from the preprocessing config.
    assert not any("pixel" in k for k in model.state_dict())
    # Different constants give different logits from the same weights.
    other = build_classifier(MIXED)
    other.load_state_dict(model.state_dict())
    model.eval()
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), other(x))


def test_classifier_returns_logits_not_probabilities():
    torch.manual_seed(0)
    model = build_classifier(LABELS_ONLY).eval()
    with torch.no_grad():
        model.head.fc.bias.fill_(5.0)  # logits well above 1
        logits = model(images(2))
    assert (logits > 1).any()


def test_model_config_round_trip():
    config = ModelConfig(backbone="mlic_cnn_wide", head_kwargs={"dropout": 0.2}, drop_rate=0.1)
    data = json.loads(json.dumps(config.to_dict()))
    assert data == {
        "backbone": "mlic_cnn_wide",
        "head": "linear",
        "head_kwargs": {"dropout": 0.2},
        "in_chans": 3,
        "drop_rate": 0.1,
    }
    assert ModelConfig.from_dict(data) == config
    assert ModelConfig.from_dict({"backbone": "resnet10t", "unknown_key": 1}) == ModelConfig(
        backbone="resnet10t"
    )


def test_model_config_is_applied():
    config = ModelConfig(backbone="mlic_cnn_wide", head_kwargs={"dropout": 0.2}, drop_rate=0.1)
    model = build_classifier(MIXED, config)
    assert model.config is config
    assert model.backbone.num_features == 512 and model.backbone.drop.p == 0.1
    assert model.head.drop.p == 0.2
    assert model.head.fc.in_features == 512 and model.head.fc.out_features == MIXED.num_outputs


@pytest.mark.parametrize("head", ["linear", "ml-decoder"])
def test_start_from_priors_sets_the_label_biases_to_their_log_odds(head):
    torch.manual_seed(0)
    model = build_classifier(MIXED, ModelConfig(head=head))
    bias = model.head.output_bias
    attributes_before = bias[MIXED.label_slice.stop :].detach().clone()
    assert model.start_from_priors([0.01, 0.5])
    assert torch.allclose(torch.sigmoid(bias[MIXED.label_slice]), torch.tensor([0.01, 0.5]))
    assert torch.equal(bias[MIXED.label_slice.stop :], attributes_before)


def test_start_from_priors_clips_priors_of_zero_and_one_and_skips_heads_without_biases():
    model = build_classifier(LABELS_ONLY)
    assert model.start_from_priors([0.0, 1.0, 0.2, 0.3])
    assert torch.isfinite(model.head.output_bias).all()
    assert not build_classifier(LABELS_ONLY, ModelConfig(head="csra")).start_from_priors([0.1] * 4)
    with pytest.raises(ValueError, match="expected 4 label priors"):
        model.start_from_priors([0.1, 0.2])
