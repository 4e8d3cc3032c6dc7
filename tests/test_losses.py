"""Tests of mlic.losses against naive re-derivations of their formulas, with masking and degenerate cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlic.errors import ConfigError
from mlic.losses import SchemaLoss, WeightedBCE, create_label_loss, list_losses
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


# -- WeightedBCE -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_weighted_bce_matches_the_naive_formula(seed):
    logits, targets = make_case(seed)
    assert (targets == -1).any() and (targets == 1).any() and (targets == 0).any()
    loss = WeightedBCE()(logits, targets)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(naive_weighted_bce(logits, targets), rel=1e-5)


@pytest.mark.parametrize(("pos_weight", "neg_weight"), [(3.0, 1.0), (1.0, 0.25), (2.5, 0.5)])
def test_weighted_bce_scalar_weights(pos_weight, neg_weight):
    logits, targets = make_case(1)
    loss = WeightedBCE(pos_weight, neg_weight)(logits, targets)
    assert loss.item() == pytest.approx(naive_weighted_bce(logits, targets, pos_weight, neg_weight), rel=1e-5)


def test_weighted_bce_per_label_weights():
    logits, targets = make_case(2)
    pos_weight = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.5])
    neg_weight = torch.tensor([0.1, 1.0, 3.0, 1.0, 0.7])
    loss = WeightedBCE(pos_weight, neg_weight)(logits, targets)
    assert loss.item() == pytest.approx(naive_weighted_bce(logits, targets, pos_weight, neg_weight), rel=1e-5)
    # Per-label weights act per column: equal weights in every column equal the scalar weight.
    same = WeightedBCE(torch.full((5,), 2.0), torch.full((5,), 0.5))(logits, targets)
    assert same.item() == pytest.approx(WeightedBCE(2.0, 0.5)(logits, targets).item(), rel=1e-6)


def test_weighted_bce_with_unit_weights_is_torch_bce_sum_over_batch():
    logits, targets = make_case(3, b=8, unknown=0.0)
    assert not (targets == -1).any()
    expected = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum") / 8
    torch.testing.assert_close(WeightedBCE()(logits, targets), expected)


def test_weighted_bce_pos_weight_matches_torch_pos_weight():
    logits, targets = make_case(4, unknown=0.0)
    pos_weight = torch.tensor([1.0, 2.0, 3.0, 0.5, 1.0])
    expected = (
        F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=pos_weight, reduction="sum")
        / logits.shape[0]
    )
    torch.testing.assert_close(WeightedBCE(pos_weight)(logits, targets), expected)


def test_weighted_bce_is_summed_over_labels_and_averaged_over_images():
    logits, targets = make_case(5, b=4, n_labels=3, unknown=0.0)
    loss = WeightedBCE()(logits, targets)
    # Twice the labels (the same columns repeated): twice the loss. Twice the images: the same loss.
    wide = WeightedBCE()(torch.cat([logits, logits], 1), torch.cat([targets, targets], 1))
    tall = WeightedBCE()(torch.cat([logits, logits], 0), torch.cat([targets, targets], 0))
    torch.testing.assert_close(wide, 2 * loss)
    torch.testing.assert_close(tall, loss)


def test_unknown_targets_get_zero_gradient_and_do_not_change_the_loss():
    logits, targets = make_case(6, unknown=0.4)
    unknown = targets == -1
    assert unknown.any() and (~unknown).any()
    x = logits.clone().requires_grad_(True)
    loss = WeightedBCE(2.0, 0.5)(x, targets)
    loss.backward()
    assert (x.grad[unknown] == 0).all()
    assert (x.grad[~unknown] != 0).all()
    changed = logits.clone()
    changed[unknown] = torch.randn(int(unknown.sum()), generator=torch.Generator().manual_seed(0)) * 50
    assert WeightedBCE(2.0, 0.5)(changed, targets).item() == loss.item()


def test_all_unknown_is_zero_loss_and_zero_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    loss = WeightedBCE()(x, torch.full((3, 4), -1, dtype=torch.int8))
    assert loss.item() == 0.0
    loss.backward()
    assert (x.grad == 0).all()


def test_empty_batch_is_zero_not_nan():
    loss = WeightedBCE()(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int8))
    assert loss.item() == 0.0


def test_weighted_bce_is_stable_for_extreme_logits():
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]], requires_grad=True)
    targets = torch.tensor([[1, 0, 0, 1]], dtype=torch.int8)
    loss = WeightedBCE()(logits, targets)
    loss.backward()
    # Right answers cost ~0 (e^-100); wrong ones cost 100 each.
    assert torch.isfinite(loss) and loss.item() == pytest.approx(200.0, rel=1e-6)
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad, torch.tensor([[0.0, 0.0, 1.0, -1.0]]))


def test_weighted_bce_gradcheck():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 0, -1, 1], [0, -1, 1, 0], [1, 1, 0, -1]], dtype=torch.int8)
    loss = WeightedBCE(torch.tensor([1.0, 2.0, 0.5, 3.0]), 0.75)
    assert torch.autograd.gradcheck(lambda x: loss(x, targets), (logits,))


def test_weighted_bce_analytic_gradient():
    """d/dx of the loss is (w_n (1-y) sigmoid(x) - w_p y (1 - sigmoid(x))) / B on known entries."""
    logits, targets = make_case(8)
    x = logits.clone().requires_grad_(True)
    WeightedBCE(2.0, 0.5)(x, targets).backward()
    p, y, known = torch.sigmoid(logits), (targets == 1).float(), (targets != -1).float()
    expected = known * (0.5 * (1 - y) * p - 2.0 * y * (1 - p)) / logits.shape[0]
    torch.testing.assert_close(x.grad, expected)


# -- registry --------------------------------------------------------------------------------------
def test_create_label_loss():
    assert "bce" in list_losses()
    loss = create_label_loss("bce", pos_weight=2.0)
    assert isinstance(loss, WeightedBCE) and loss.pos_weight.item() == 2.0
    assert isinstance(create_label_loss(), WeightedBCE)


def test_create_label_loss_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown loss 'bc'; did you mean 'bce'\? \(valid: bce") as info:
        create_label_loss("bc")
    for name in list_losses():
        assert name in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown loss 'zzzz' \(valid: "):
        create_label_loss("zzzz")


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
