"""Tests of mlic.losses against naive re-derivations of their formulas, with masking and degenerate cases."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlic.errors import ConfigError
from mlic.losses import (
    AsymmetricLoss,
    FocalLoss,
    HillLoss,
    IgnoreMissing,
    NegativeMissing,
    SchemaLoss,
    SelectiveMissing,
    SPLCLoss,
    WeightedBCE,
    auto_pos_weight,
    create_label_loss,
    create_missing_policy,
    label_priors,
    list_losses,
    list_missing_policies,
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


PW = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.5])
NW = torch.tensor([0.1, 1.0, 3.0, 1.0, 0.7])
CASES = [
    ("bce", {}),
    ("bce", {"pos_weight": PW, "neg_weight": 0.5, "label_smoothing": 0.1}),
    ("focal", {}),
    ("focal", {"gamma": 1.5, "alpha": 0.25, "pos_weight": PW, "label_smoothing": 0.2}),
    ("asl", {}),
    ("asl", {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.1, "neg_weight": NW, "label_smoothing": 0.1}),
    ("asl", {"gamma_neg": 3.0, "clip": 0.0}),
    ("hill", {}),
    ("hill", {"lamb": 2.0, "margin": 1.0, "gamma": 2.0, "neg_weight": NW, "label_smoothing": 0.1}),
    ("splc", {}),
    ("splc", {"tau": 0.7, "margin": 0.5, "gamma": 1.0, "pos_weight": 2.0, "label_smoothing": 0.1}),
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seed", range(2))
def test_every_loss_matches_its_naive_formula(name, kw, seed):
    logits, targets = make_case(seed, n_labels=5)
    logits = logits.double()
    loss = create_label_loss(name, **kw)
    value = loss(logits, targets)
    assert value.dtype == torch.float64 and value.shape == ()
    assert value.item() == pytest.approx(naive_loss(name, kw, logits, targets), rel=1e-9, abs=1e-12)
    weight = torch.rand(logits.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = naive_loss(name, kw, logits, targets, weight=weight)
    assert loss(logits, targets, weight).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_every_loss_gradcheck(name, kw):
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64) * 2
    targets = torch.tensor([[1, 0, -1, 1, 0], [0, -1, 1, 0, 0], [1, 1, 0, -1, 0]], dtype=torch.int8)
    weight = torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.5
    loss = create_label_loss(name, **kw)
    if name == "splc":
        loss.set_epoch(5)  # with the correction active
    x = logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, targets), (x,))
    assert torch.autograd.gradcheck(lambda x: loss(x, targets, weight), (x,))


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_every_loss_gives_unknowns_exactly_zero_gradient(name, kw):
    logits, targets = make_case(6, n_labels=5, unknown=0.4)
    unknown = targets == -1
    loss = create_label_loss(name, **kw)
    if name == "splc":
        loss.set_epoch(1)
    x = logits.clone().requires_grad_(True)
    value = loss(x, targets)
    value.backward()
    assert (x.grad[unknown] == 0).all()
    assert (x.grad[~unknown] != 0).any()
    for fill in (100.0, -100.0, 1e4, 0.0):
        changed = logits.clone()
        changed[unknown] = fill
        assert loss(changed, targets).item() == value.item()


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_loss_is_finite_for_extreme_logits(name, kw, dtype):
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0, 30.0]] * 2, dtype=dtype, requires_grad=True)
    targets = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 0, 1]], dtype=torch.int8)
    loss = create_label_loss(name, **kw)
    if name == "splc":
        loss.set_epoch(1)
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


# -- degenerate cases --------------------------------------------------------------------------------
def test_focal_with_gamma_0_and_no_alpha_is_bce():
    logits, targets = make_case(1, n_labels=5)
    for kw in ({}, {"pos_weight": PW, "neg_weight": NW, "label_smoothing": 0.2}):
        torch.testing.assert_close(
            FocalLoss(gamma=0.0, **kw)(logits, targets), WeightedBCE(**kw)(logits, targets)
        )


def test_focal_alpha_one_half_is_half_bce():
    logits, targets = make_case(2)
    torch.testing.assert_close(
        FocalLoss(gamma=0.0, alpha=0.5)(logits, targets), WeightedBCE()(logits, targets) / 2
    )


def test_asl_with_gammas_0_and_clip_0_is_bce():
    logits, targets = make_case(3, n_labels=5)
    for kw in ({}, {"pos_weight": PW, "label_smoothing": 0.1}):
        asl = AsymmetricLoss(gamma_pos=0.0, gamma_neg=0.0, clip=0.0, **kw)
        torch.testing.assert_close(asl(logits, targets), WeightedBCE(**kw)(logits, targets))


def test_asl_with_equal_gammas_and_clip_0_is_focal():
    logits, targets = make_case(4)
    asl = AsymmetricLoss(gamma_pos=2.0, gamma_neg=2.0, clip=0.0)
    torch.testing.assert_close(asl(logits, targets), FocalLoss(gamma=2.0)(logits, targets))


def test_label_smoothing_bce_is_torch_bce_against_smoothed_targets():
    logits, targets = make_case(5, b=8, unknown=0.0)
    smoothed = targets.float() * 0.8 + 0.1
    expected = F.binary_cross_entropy_with_logits(logits, smoothed, reduction="sum") / 8
    torch.testing.assert_close(WeightedBCE(label_smoothing=0.2)(logits, targets), expected)


def test_hill_negative_term_is_minus_lambda_minus_p_times_p_squared():
    """The paper's negative term is -(lambda - p) p^2 (a log-likelihood-like term); the cost negates it."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g, dtype=torch.float64) * 3
    for lamb in (1.5, 2.0):
        p = torch.sigmoid(logits)
        _, l_neg = HillLoss(lamb=lamb).terms(logits, torch.zeros(4, 6, dtype=torch.int8))
        torch.testing.assert_close(-l_neg, -(lamb - p) * p**2)
        value = HillLoss(lamb=lamb)(logits, torch.zeros(4, 6, dtype=torch.int8))
        assert value.item() == pytest.approx(((lamb - p) * p**2).sum().item() / 4, rel=1e-12)
    # Positives: plain BCE by default.
    ones = torch.ones(4, 6, dtype=torch.int8)
    torch.testing.assert_close(HillLoss()(logits, ones), WeightedBCE()(logits, ones))


def test_hill_pulls_less_than_bce_on_confident_negatives():
    x = torch.tensor([[4.0]], requires_grad=True)  # p ~ 0.98 for a target 0: maybe a missing positive
    HillLoss()(x, torch.zeros(1, 1, dtype=torch.int8)).backward()
    hill_grad = x.grad.item()
    x.grad = None
    WeightedBCE()(x, torch.zeros(1, 1, dtype=torch.int8)).backward()
    assert 0 < hill_grad < x.grad.item() / 5


# -- ASL against timm --------------------------------------------------------------------------------
def timm_asl(**kwargs):
    cls = pytest.importorskip("timm.loss").AsymmetricLossMultiLabel
    if "reduction" in inspect.signature(cls).parameters:
        kwargs["reduction"] = "sum"  # newer timm; older versions always return -loss.sum()
    return cls(**kwargs)


@pytest.mark.parametrize(
    "kw",
    [
        {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05},
        {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05},
        {"gamma_pos": 2.0, "gamma_neg": 1.0, "clip": 0.2},
        {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0},
    ],
)
@pytest.mark.parametrize("detach", [False, True])
def test_asl_equals_timm_asymmetric_loss_multilabel(kw, detach):
    logits, targets = make_case(7, b=8, n_labels=6, unknown=0.0)
    logits = logits * 1.5
    reference = timm_asl(**kw, disable_torch_grad_focal_loss=detach)
    ours = AsymmetricLoss(**kw, detach_focal=detach)
    x_ref, x_ours = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    expected = reference(x_ref, targets.float())
    value = ours(x_ours, targets) * logits.shape[0]  # ours: sum over labels, mean over images
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    expected.backward()
    value.backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-6)


# -- SPLC ----------------------------------------------------------------------------------------------
def test_splc_corrects_confident_negatives_only_from_start_epoch():
    logits = torch.tensor([[3.0, -2.0, 0.2, 3.0], [1.0, 2.0, -1.0, 5.0]], dtype=torch.float64)
    targets = torch.tensor([[0, 0, 1, -1], [0, 1, 0, 0]], dtype=torch.int8)
    # sigmoid: 3 -> 0.95, 1 -> 0.73, 5 -> 0.99 exceed tau 0.6; -2, -1 do not; the -1 entry stays masked.
    loss = SPLCLoss(start_epoch=2)
    before = naive_loss("splc", {"start_epoch": 2}, logits, targets, epoch=0)
    assert loss(logits, targets).item() == pytest.approx(before, rel=1e-12)
    loss.set_epoch(1)
    assert loss(logits, targets).item() == pytest.approx(before, rel=1e-12)
    loss.set_epoch(2)
    after = naive_loss("splc", {"start_epoch": 2}, logits, targets, epoch=2)
    assert after != pytest.approx(before)
    assert loss(logits, targets).item() == pytest.approx(after, rel=1e-12)
    # The corrected entries are exactly those costed as positives: compare with explicit corrected targets
    # (margin only applies to original positives, so it is a loss with margin 0 on those entries).
    explicit = targets.clone()
    explicit[0, 0] = explicit[1, 0] = explicit[1, 3] = 1
    assert (loss.hard_targets(logits, targets) == (explicit == 1).double()).all()
    x = logits.clone().requires_grad_(True)
    loss(x, targets).backward()
    assert x.grad[0, 3] == 0


def test_schema_loss_set_epoch_reaches_splc():
    schema = LabelSchema(("a", "b"))
    loss = SchemaLoss(schema, SPLCLoss())
    loss.set_epoch(3)
    assert loss.label_loss.epoch == 3
    SchemaLoss(schema).set_epoch(3)  # a loss without epochs: nothing to do


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


def test_missing_policy_registry_errors():
    assert list_missing_policies() == ["ignore", "negative", "selective"]
    with pytest.raises(ConfigError, match=r"unknown missing-label policy 'negativ'; did you mean 'negative'"):
        create_missing_policy("negativ")
    with pytest.raises(ConfigError, match="needs train_targets"):
        create_missing_policy("selective")
    with pytest.raises(ConfigError, match=r"unknown options \['threshold'\]"):
        create_missing_policy("negative", threshold=0.5)
    with pytest.raises(ConfigError, match="missing_weight"):
        create_missing_policy("negative", missing_weight=-1.0)
    with pytest.raises(ConfigError, match="labels"):
        SelectiveMissing(torch.tensor([0.1, 0.9]))(torch.zeros(2, 3, dtype=torch.int8))


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


# == registry ============================================================================================
def test_registry_lists_every_loss():
    assert list_losses() == ["asl", "bce", "focal", "hill", "splc"]
    classes = {
        "bce": WeightedBCE,
        "focal": FocalLoss,
        "asl": AsymmetricLoss,
        "hill": HillLoss,
        "splc": SPLCLoss,
    }
    for name, cls in classes.items():
        assert type(create_label_loss(name)) is cls


@pytest.mark.parametrize("name", ["asl", "bce", "focal", "hill", "splc"])
def test_every_loss_takes_the_common_options(name):
    loss = create_label_loss(name, pos_weight=[1.0, 2.0], neg_weight=0.5, label_smoothing=0.1)
    assert loss.pos_weight.tolist() == [1.0, 2.0] and loss.label_smoothing == 0.1
    with pytest.raises(ConfigError, match=rf"loss '{name}' got unknown options \['gama', 'zzz'\]"):
        create_label_loss(name, gama=2.0, zzz=1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        create_label_loss(name, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="pos_weight"):
        create_label_loss(name, pos_weight=-1.0)


def test_loss_option_values_are_checked():
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ConfigError, match="alpha"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ConfigError, match="clip"):
        AsymmetricLoss(clip=1.0)
    with pytest.raises(ConfigError, match="tau"):
        SPLCLoss(tau=2.0)
    with pytest.raises(ConfigError, match="unknown loss 'hil'; did you mean 'hill'"):
        create_label_loss("hil")
