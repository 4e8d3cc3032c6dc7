"""Tests of mlic.losses.missing: the policies for unknown targets, and automatic positive weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlic.errors import ConfigError
from mlic.losses import (
    IgnoreMissing,
    NegativeMissing,
    SchemaLoss,
    SelectiveMissing,
    auto_pos_weight,
    create_label_loss,
    create_missing_policy,
    label_priors,
)
from mlic.schema import LabelSchema


def make_case(seed: int = 0, b: int = 6, n_labels: int = 5, unknown: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n_labels, generator=g) * 2
    targets = (torch.rand(b, n_labels, generator=g) < 0.4).to(torch.int8)
    targets[torch.rand(b, n_labels, generator=g) < unknown] = -1
    return logits, targets


# == every label loss against its formula, written out per element =================================
def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def naive_terms(name: str, kw: dict, x: float, t: int) -> tuple[float, float]:
    """(cost if present, cost if absent) of one entry with logit x and original target t, from the papers."""
    p = sig(x)
    if name == "bce":
        return -math.log(p), -math.log(1 - p)
    if name == "focal":
        g, a = kw.get("gamma", 2.0), kw.get("alpha")
        a_pos, a_neg = (1.0, 1.0) if a is None else (a, 1 - a)
        return -a_pos * (1 - p) ** g * math.log(p), -a_neg * p**g * math.log(1 - p)
    if name == "asl":
        gp, gn, clip = kw.get("gamma_pos", 0.0), kw.get("gamma_neg", 4.0), kw.get("clip", 0.05)
        pm = max(p - clip, 0.0)
        return -((1 - p) ** gp) * math.log(p), -(pm**gn) * math.log(1 - pm)
    if name == "hill":
        lamb, margin, g = kw.get("lamb", 1.5), kw.get("margin", 0.0), kw.get("gamma", 0.0)
        q = sig(x - margin)
        return -((1 - q) ** g) * math.log(q), (lamb - p) * p**2
    if name == "splc":
        margin, g = kw.get("margin", 1.0), kw.get("gamma", 2.0)
        q = sig(x - margin) if t == 1 else p
        return -((1 - q) ** g) * math.log(q), -(q**g) * math.log(1 - q)
    raise AssertionError(name)


def per_label(value, n_labels: int) -> list[float]:
    return value.tolist() if isinstance(value, torch.Tensor) else [float(value)] * n_labels


def naive_loss(name, kw, logits, targets, weight=None, epoch=0) -> float:
    """sum_ij w_ij (w_p y_s l+ + w_n (1 - y_s) l-) over known entries / B, in plain Python floats."""
    b, n_labels = logits.shape
    pw, nw = per_label(kw.get("pos_weight", 1.0), n_labels), per_label(kw.get("neg_weight", 1.0), n_labels)
    eps = kw.get("label_smoothing", 0.0)
    total = 0.0
    for i in range(b):
        for j in range(n_labels):
            t, x = int(targets[i, j]), float(logits[i, j])
            if t == -1:
                continue
            y = 1 if t == 1 else 0
            corrected = name == "splc" and epoch >= kw.get("start_epoch", 1) and sig(x) > kw.get("tau", 0.6)
            if t == 0 and corrected:
                y = 1
            ys = y * (1 - eps) + eps / 2
            l_pos, l_neg = naive_terms(name, kw, x, t)
            entry = pw[j] * ys * l_pos + nw[j] * (1 - ys) * l_neg
            total += entry * (1.0 if weight is None else float(weight[i, j]))
    return total / b


# == missing-label policies =============================================================================
def test_ignore_policy_is_identity_with_no_weight():
    _, targets = make_case(0)
    out, weight = IgnoreMissing()(targets)
    assert out is targets and weight is None


@pytest.mark.parametrize("missing_weight", [1.0, 0.3, 0.0])
def test_negative_policy_treats_unknowns_as_weighted_negatives(missing_weight):
    logits, targets = make_case(1, n_labels=5)
    policy = create_missing_policy("negative", missing_weight=missing_weight)
    assert isinstance(policy, NegativeMissing)
    out, weight = policy(targets)
    unknown = targets == -1
    assert (out[unknown] == 0).all() and (out[~unknown] == targets[~unknown]).all()
    assert (weight[unknown] == missing_weight).all() and (weight[~unknown] == 1).all()
    schema = LabelSchema(tuple("abcde"))
    value = SchemaLoss(schema, missing=policy)(logits.double(), targets, torch.zeros(6, 0))["labels"]
    naive_weight = torch.where(unknown, missing_weight, 1.0)
    expected = naive_loss("bce", {}, logits.double(), torch.where(unknown, 0, targets), weight=naive_weight)
    assert value.item() == pytest.approx(expected, rel=1e-9)
    if missing_weight == 0.0:  # weight 0: the same as ignoring them
        ignored = SchemaLoss(schema)(logits.double(), targets, torch.zeros(6, 0))["labels"]
        assert value.item() == pytest.approx(ignored.item(), rel=1e-12)


def test_selective_policy_ignores_unknowns_of_common_labels_only():
    train = np.array(
        [[1, 0, 1, -1], [1, 0, 0, -1], [0, 0, 0, -1], [-1, 1, 0, -1], [1, 0, -1, -1]], dtype=np.int8
    )
    priors = label_priors(train)
    torch.testing.assert_close(priors, torch.tensor([3 / 4, 1 / 5, 1 / 4, 1.0]))
    policy = create_missing_policy("selective", train_targets=train, threshold=0.25, missing_weight=0.5)
    assert isinstance(policy, SelectiveMissing)
    assert policy.ignored.tolist() == [True, False, True, True]
    targets = torch.tensor([[-1, -1, -1, -1], [1, 0, -1, 1]], dtype=torch.int8)
    out, weight = policy(targets)
    assert out.tolist() == [[-1, 0, -1, -1], [1, 0, -1, 1]]
    assert weight.tolist() == [[1.0, 0.5, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    # In the schema loss: the ignored unknowns get zero gradient, the label-1 unknown is a weighted negative.
    x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = SchemaLoss(LabelSchema(tuple("abcd")), missing=policy)(x, targets, torch.zeros(2, 0))
    out["loss"].backward()
    negative_grad = 0.5 * torch.sigmoid(x[0, 1]).item() / 2  # weight * p / B for a negative under BCE
    assert x.grad[targets == -1].tolist() == [0.0, pytest.approx(negative_grad), 0.0, 0.0, 0.0]
    default = create_missing_policy("selective", train_targets=train)
    assert default.threshold == 0.05 and default.missing_weight == 1.0


# == auto pos_weight ====================================================================================
def test_auto_pos_weight_is_negatives_over_positives_clipped():
    train = np.array(
        [[1, 0, 1, 0, -1], [0, 0, 1, 0, -1], [0, 0, 1, -1, -1], [0, 1, 0, -1, -1], [-1, 0, 1, 0, 1]],
        dtype=np.int8,
    )
    # label 0: 3 neg / 1 pos; label 1: 4 / 1; label 2: 1 / 4 -> clipped up to 1;
    # label 3: no positives -> max; label 4: 0 negatives / 1 positive -> 1.
    weight = auto_pos_weight(train)
    assert weight.dtype == torch.float32
    assert weight.tolist() == [3.0, 4.0, 1.0, 100.0, 1.0]
    assert auto_pos_weight(train, max_weight=3.5).tolist() == [3.0, 3.5, 1.0, 3.5, 1.0]
    loss = create_label_loss("bce", pos_weight="auto", train_targets=train, max_pos_weight=3.5)
    assert loss.pos_weight.tolist() == [3.0, 3.5, 1.0, 3.5, 1.0]
    focal = create_label_loss("focal", pos_weight="auto", train_targets=train)
    assert focal.pos_weight.tolist() == [3.0, 4.0, 1.0, 100.0, 1.0]


def test_auto_pos_weight_errors():
    with pytest.raises(ConfigError, match="needs train_targets"):
        create_label_loss("bce", pos_weight="auto")
    with pytest.raises(ConfigError, match="'balanced'"):
        create_label_loss("bce", pos_weight="balanced")
    with pytest.raises(ConfigError, match="-1, 0 or 1"):
        auto_pos_weight(np.array([[0, 2]]))
    with pytest.raises(ConfigError, match=r"\[N, L\]"):
        auto_pos_weight(np.array([0, 1]))
    with pytest.raises(ConfigError, match="max_weight"):
        auto_pos_weight(np.array([[0, 1]]), max_weight=0.5)
