"""Tests of mlic.models.outputs: logits become probabilities, a sigmoid per label, a softmax per attribute."""

from __future__ import annotations

import numpy as np
import torch

from mlic.models.outputs import probabilities
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("a", "b"), (Attribute("size", ("s", "m", "l")), Attribute("hue", ("x", "y"))))


def test_sigmoid_per_label_and_softmax_per_attribute_slice():
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0, 3.0, -1.0, 1.0], [-3.0, 0.5, 0.0, 0.0, 0.0, 5.0, 5.0]])
    probs = probabilities(SCHEMA, logits)
    np.testing.assert_allclose(probs.labels, torch.sigmoid(logits[:, :2]).numpy(), rtol=1e-6)
    np.testing.assert_allclose(probs.attributes[0], torch.softmax(logits[:, 2:5], 1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(probs.attributes[1], torch.softmax(logits[:, 5:], 1).numpy(), rtol=1e-6)
    assert [p.sum(axis=1).round(6).tolist() for p in probs.attributes] == [[1.0, 1.0], [1.0, 1.0]]


def test_rows_selects_labels_and_attributes_alike():
    probs = probabilities(SCHEMA, torch.randn(4, SCHEMA.num_outputs, dtype=torch.float64))
    assert probs.labels.dtype == np.float32
    picked = probs.rows(np.array([True, False, True, False]))
    np.testing.assert_array_equal(picked.labels, probs.labels[[0, 2]])
    np.testing.assert_array_equal(picked.attributes[1], probs.attributes[1][[0, 2]])


OTHER_SCHEMA = LabelSchema(
    ("cat", "dog", "bird", "fish"),
    (Attribute("size", ("s", "m", "l")), Attribute("indoor", ("no", "yes"))),
)


# -- probabilities ---------------------------------------------------------------------------------
def test_probabilities_sigmoid_and_softmax_per_attribute():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, OTHER_SCHEMA.num_outputs, generator=g) * 3
    probs = probabilities(OTHER_SCHEMA, logits)
    assert probs.labels.shape == (6, 4)
    np.testing.assert_allclose(probs.labels, 1 / (1 + np.exp(-logits[:, :4].numpy())), rtol=1e-5)
    assert [p.shape for p in probs.attributes] == [(6, 3), (6, 2)]
    for p, sl in zip(probs.attributes, OTHER_SCHEMA.attribute_slices):
        np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
        z = logits[:, sl].numpy()
        expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(p, expected, rtol=1e-5)
    # Softmax is per attribute: shifting one attribute's logits changes nothing, unlike the labels.
    shifted = logits.clone()
    shifted[:, 4:7] += 10
    again = probabilities(OTHER_SCHEMA, shifted)
    np.testing.assert_allclose(again.attributes[0], probs.attributes[0], rtol=1e-5)
    np.testing.assert_array_equal(again.labels, probs.labels)


def test_probabilities_of_half_logits_are_float32():
    probs = probabilities(OTHER_SCHEMA, torch.zeros(2, OTHER_SCHEMA.num_outputs, dtype=torch.bfloat16))
    assert probs.labels.dtype == np.float32
    np.testing.assert_array_equal(probs.labels, 0.5)
    np.testing.assert_allclose(probs.attributes[0], 1 / 3)
