"""Tests of mlic.losses.schema_loss: the label loss plus a cross-entropy per attribute, masked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlic.losses import (
    SchemaLoss,
    SPLCLoss,
    WeightedBCE,
)
from mlic.schema import Attribute, LabelSchema


def naive_weighted_bce(logits, targets, pos_weight=1.0, neg_weight=1.0) -> float:
    """Sum over each image's known labels of the weighted BCE, averaged over images; plain Python floats."""
    b, n_labels = logits.shape
    pw = [float(pos_weight)] * n_labels if isinstance(pos_weight, float | int) else pos_weight.tolist()
    nw = [float(neg_weight)] * n_labels if isinstance(neg_weight, float | int) else neg_weight.tolist()
    total = 0.0
    for i in range(b):
        for j in range(n_labels):
            y, x = int(targets[i, j]), float(logits[i, j])
            if y == -1:
                continue
            p = 1.0 / (1.0 + math.exp(-x))
            total += -(pw[j] * y * math.log(p) + nw[j] * (1 - y) * math.log(1 - p))
    return total / b


def make_case(seed: int = 0, b: int = 6, n_labels: int = 5, unknown: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n_labels, generator=g) * 2
    targets = (torch.rand(b, n_labels, generator=g) < 0.4).to(torch.int8)
    targets[torch.rand(b, n_labels, generator=g) < unknown] = -1
    return logits, targets


# -- SchemaLoss ------------------------------------------------------------------------------------
MIXED = LabelSchema(("a", "b", "c"), (Attribute("size", ("s", "m", "l")), Attribute("on", ("no", "yes"))))


def naive_cross_entropy(logits, targets) -> float:
    """Mean over known targets of -log softmax(logits)[target]."""
    terms = []
    for row, t in zip(logits.tolist(), targets.tolist()):
        if t == -1:
            continue
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        terms.append(log_z - row[t])
    return sum(terms) / len(terms)


def test_schema_loss_is_label_loss_plus_cross_entropy_per_attribute():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, MIXED.num_outputs, generator=g)
    labels = torch.tensor([[1, 0, -1], [0, 0, 1], [1, 1, 1], [-1, 0, 0], [0, 1, 0]], dtype=torch.int8)
    attributes = torch.tensor([[0, 1], [2, -1], [-1, 0], [1, 1], [2, -1]])
    out = SchemaLoss(MIXED)(logits, labels, attributes)
    expected_labels = naive_weighted_bce(logits[:, :3], labels)
    expected_attributes = naive_cross_entropy(logits[:, 3:6], attributes[:, 0]) + naive_cross_entropy(
        logits[:, 6:8], attributes[:, 1]
    )
    assert out["labels"].item() == pytest.approx(expected_labels, rel=1e-5)
    assert out["attributes"].item() == pytest.approx(expected_attributes, rel=1e-5)
    assert out["loss"].item() == pytest.approx(expected_labels + expected_attributes, rel=1e-5)
    assert not out["labels"].requires_grad and not out["attributes"].requires_grad


def test_schema_loss_uses_the_given_label_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, MIXED.num_outputs, generator=g)
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.int8)
    attributes = torch.full((4, 2), -1)
    out = SchemaLoss(MIXED, WeightedBCE(3.0, 0.2))(logits, labels, attributes)
    assert out["labels"].item() == pytest.approx(
        naive_weighted_bce(logits[:, :3], labels, 3.0, 0.2), rel=1e-5
    )


def test_schema_loss_gradient_masks_unknowns():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, MIXED.num_outputs, generator=g, requires_grad=True)
    labels = torch.tensor([[1, -1, 0], [0, 1, -1], [-1, 0, 1]], dtype=torch.int8)
    attributes = torch.tensor([[0, -1], [-1, 1], [2, -1]])
    SchemaLoss(MIXED)(x, labels, attributes)["loss"].backward()
    label_grad = x.grad[:, :3]
    assert (label_grad[labels == -1] == 0).all() and (label_grad[labels != -1] != 0).all()
    assert (x.grad[1, 3:6] == 0).all()  # size unknown in row 1
    assert (x.grad[0, 6:8] == 0).all() and (x.grad[2, 6:8] == 0).all()  # "on" unknown in rows 0 and 2
    assert (x.grad[0, 3:6] != 0).all() and (x.grad[1, 6:8] != 0).all()


def test_an_attribute_column_all_unknown_contributes_zero():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, MIXED.num_outputs, generator=g, requires_grad=True)
    labels = torch.zeros(4, 3, dtype=torch.int8)
    attributes = torch.tensor([[0, -1], [1, -1], [2, -1], [0, -1]])
    out = SchemaLoss(MIXED)(x, labels, attributes)
    assert torch.isfinite(out["loss"])
    assert out["attributes"].item() == pytest.approx(
        naive_cross_entropy(x[:, 3:6].detach(), attributes[:, 0])
    )
    out["loss"].backward()
    assert (x.grad[:, 6:8] == 0).all()
    # Every target unknown: loss 0, finite, with zero gradient.
    x.grad = None
    out = SchemaLoss(MIXED)(x, torch.full((4, 3), -1, dtype=torch.int8), torch.full((4, 2), -1))
    assert out["loss"].item() == 0.0 and out["attributes"].item() == 0.0
    out["loss"].backward()
    assert x.grad is None or (x.grad == 0).all()


def test_schema_loss_attributes_only():
    schema = LabelSchema(attributes=(Attribute("size", ("s", "m", "l")),))
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 3, generator=g)
    targets = torch.tensor([[0], [2], [-1], [1]])
    out = SchemaLoss(schema)(logits, torch.zeros(4, 0, dtype=torch.int8), targets)
    assert out["labels"].item() == 0.0
    expected = F.cross_entropy(logits[[0, 1, 3]], targets[[0, 1, 3], 0])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["attributes"].item() == pytest.approx(naive_cross_entropy(logits, targets[:, 0]), rel=1e-5)


def test_schema_loss_labels_only():
    schema = LabelSchema(("a", "b"))
    logits, targets = make_case(9, b=4, n_labels=2)
    out = SchemaLoss(schema)(logits, targets, torch.zeros(4, 0, dtype=torch.int64))
    assert out["attributes"].item() == 0.0
    torch.testing.assert_close(out["loss"], WeightedBCE()(logits, targets))


def test_schema_loss_computes_in_float32_for_half_logits():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, MIXED.num_outputs, generator=g)
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=torch.int8)
    attributes = torch.tensor([[0, 1], [1, 0], [2, 1]])
    low = SchemaLoss(MIXED)(logits.bfloat16(), labels, attributes)["loss"]
    assert low.dtype == torch.float32
    full = SchemaLoss(MIXED)(logits.bfloat16().float(), labels, attributes)["loss"]
    assert low.item() == full.item()


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


def test_schema_loss_set_epoch_reaches_splc():
    schema = LabelSchema(("a", "b"))
    loss = SchemaLoss(schema, SPLCLoss())
    loss.set_epoch(3)
    assert loss.label_loss.epoch == 3
    SchemaLoss(schema).set_epoch(3)  # a loss without epochs: nothing to do


def test_schema_loss_accepts_a_policy_name_and_keeps_its_outputs():
    logits, targets = make_case(2, n_labels=3)
    attributes = torch.randint(-1, 3, (6, 2), generator=torch.Generator().manual_seed(0))
    attributes[:, 1] = attributes[:, 1].clamp(max=1)
    full = torch.cat([logits, torch.randn(6, 5, generator=torch.Generator().manual_seed(1))], 1)
    out = SchemaLoss(MIXED, missing="negative")(full, targets, attributes)
    assert set(out) == {"loss", "labels", "attributes"}
    expected = naive_loss("bce", {}, logits, torch.where(targets == -1, 0, targets))
    assert out["labels"].item() == pytest.approx(expected, rel=1e-5)
    default = SchemaLoss(MIXED)(full, targets, attributes)
    assert out["attributes"].item() == default["attributes"].item()
    assert SchemaLoss(MIXED)(full.double(), targets, attributes)["loss"].dtype == torch.float64
