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
