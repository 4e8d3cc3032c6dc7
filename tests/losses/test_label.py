"""Tests of mlic.losses.label against naive re-derivations of their formulas, masking, degenerate cases."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from mlic.losses import (
    AsymmetricLoss,
    FocalLoss,
    HillLoss,
    SPLCLoss,
    WeightedBCE,
    create_label_loss,
)


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
