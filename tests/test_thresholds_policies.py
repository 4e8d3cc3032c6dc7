"""Decision policies: fixed, global, per-label (rare-label fallback, min precision), top-k."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score

from mlic.errors import ConfigError
from mlic.thresholds import UNREACHABLE, Decision, choose_thresholds, global_threshold


def data(seed: int = 0, n: int = 120, n_labels: int = 6, unknown: float = 0.1):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.3).astype(np.int8)
    scores = np.clip(0.35 * y + rng.random((n, n_labels)) * 0.75, 0, 1).round(3).astype(np.float32)
    y[rng.random((n, n_labels)) < unknown] = -1
    return y, scores


def micro_f1_at(y, scores, t):
    known = y >= 0
    return f1_score(y[known], scores[known] >= t, zero_division=0)


@pytest.mark.parametrize("seed", range(4))
def test_global_threshold_attains_the_best_micro_f1(seed):
    y, scores = data(seed)
    t = global_threshold(y, scores)
    best = max(micro_f1_at(y, scores, c) for c in np.unique(scores[y >= 0]))
    assert micro_f1_at(y, scores, t) == pytest.approx(best)


def test_fixed_policy_and_its_range():
    y, scores = data()
    assert (choose_thresholds(y, scores, "fixed", threshold=0.3).thresholds == 0.3).all()
    with pytest.raises(ConfigError, match="threshold"):
        choose_thresholds(y, scores, "fixed", threshold=1.5)


def test_rare_labels_fall_back_to_the_global_threshold():
    y, scores = data(unknown=0.0)
    y[:, 0] = 0
    y[:2, 0] = 1  # two positives: rarer than min_positives=3
    decision = choose_thresholds(y, scores, "per-label", min_positives=3)
    assert decision.thresholds[0] == pytest.approx(global_threshold(y, scores))
    relaxed = choose_thresholds(y, scores, "per-label", min_positives=1)
    assert relaxed.thresholds[0] != pytest.approx(global_threshold(y, scores))
    for j in range(1, y.shape[1]):
        assert decision.thresholds[j] == relaxed.thresholds[j]


def test_labels_without_positives_keep_one_half():
    y, scores = data(unknown=0.0)
    y[:, 1] = 0
    assert choose_thresholds(y, scores, "per-label").thresholds[1] == 0.5


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("p", [0.7, 0.95])
def test_min_precision_gives_the_best_f1_among_precise_enough_thresholds(seed, p):
    y, scores = data(seed)
    decision = choose_thresholds(y, scores, "per-label", min_precision=p, min_positives=1)
    for j, t in enumerate(decision.thresholds):
        known = y[:, j] >= 0
        truth, s = y[known, j], scores[known, j]
        ok = [c for c in np.unique(s) if precision_score(truth, s >= c, zero_division=0) >= p]
        if t == UNREACHABLE:
            assert not ok  # no threshold reaches the precision
            continue
        assert precision_score(truth, s >= t, zero_division=0) >= p
        assert f1_score(truth, s >= t) == pytest.approx(max(f1_score(truth, s >= c) for c in ok))


def test_top_k_decides_k_labels_per_image():
    y, scores = data()
    decision = choose_thresholds(y, scores, "top-k", k=2)
    assert (decision.decide(scores).sum(axis=1) == 2).all()
    with pytest.raises(ConfigError, match="k between 1 and 6"):
        choose_thresholds(y, scores, "top-k", k=0)


def test_bad_policies_and_parameters_are_named():
    y, scores = data()
    with pytest.raises(ConfigError, match="did you mean 'per-label'"):
        choose_thresholds(y, scores, "perlabel")
    with pytest.raises(ConfigError, match="min_precision"):
        choose_thresholds(y, scores, "global", min_precision=0.9)
    with pytest.raises(ConfigError, match="min_precision"):
        choose_thresholds(y, scores, "per-label", min_precision=1.5)


def test_decision_serialises_its_parameters():
    d = Decision("top-k", np.full(3, 0.5), k=2)
    assert d.to_dict() == {"policy": "top-k", "k": 2, "min_precision": None, "min_positives": None}


def test_shrinkage_pulls_each_label_toward_the_global_threshold_by_its_positives():
    y, scores = data(n=200)
    glob = global_threshold(y, scores)
    own = choose_thresholds(y, scores, "per-label", min_positives=1).thresholds
    shrunk = choose_thresholds(y, scores, "per-label", shrinkage=10.0)
    n_pos = (y == 1).sum(axis=0)
    np.testing.assert_allclose(shrunk.thresholds, (n_pos * own + 10.0 * glob) / (n_pos + 10.0))
    assert shrunk.to_dict()["shrinkage"] == 10.0
    # no shrinkage is the label's own optimum; infinite shrinkage is the global threshold
    np.testing.assert_allclose(choose_thresholds(y, scores, "per-label", shrinkage=0.0).thresholds, own)
    np.testing.assert_allclose(choose_thresholds(y, scores, "per-label", shrinkage=1e12).thresholds, glob)


def test_a_label_without_positives_takes_the_global_threshold_under_shrinkage():
    y, scores = data(n=200)
    y[:, 2] = np.where(y[:, 2] == 1, 0, y[:, 2])
    shrunk = choose_thresholds(y, scores, "per-label", shrinkage=10.0)
    assert shrunk.thresholds[2] == pytest.approx(global_threshold(y, scores))


def cross_validated_f1(y, scores, name, options, folds=5, seed=0):
    """A naive re-derivation of the auto rule's figures: fit on the other folds, decide each fold."""
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    decided = np.zeros(y.shape, dtype=bool)
    for f in range(folds):
        fit = choose_thresholds(y[fold != f], scores[fold != f], name, **options)
        decided[fold == f] = scores[fold == f] >= fit.thresholds
    known = y >= 0
    micro = f1_score(y[known], decided[known], zero_division=0)
    per_label = [f1_score(y[known[:, j], j], decided[known[:, j], j], zero_division=0)
                 for j in range(y.shape[1]) if (y[:, j] == 1).any()]  # fmt: skip
    return micro, float(np.mean(per_label))


@pytest.mark.parametrize("seed", range(3))
def test_auto_chooses_the_best_cross_validated_rule_that_loses_nothing_against_one_half(seed):
    y, scores = data(seed, n=300)
    decision = choose_thresholds(y, scores, "auto", seed=seed)
    figures = decision.chosen_by["candidates"]
    options = {"fixed": {}, "global": {}, "per-label": {"shrinkage": 10.0}}
    for name, opts in options.items():
        micro, macro = cross_validated_f1(y, scores, name, opts, seed=seed)
        assert figures[name]["micro"] == pytest.approx(micro, abs=1e-6)
        assert figures[name]["macro"] == pytest.approx(macro, abs=1e-6)
    base = figures["fixed"]
    chosen = figures[decision.policy]
    assert chosen["micro"] >= base["micro"] and chosen["macro"] >= base["macro"]
    qualified = [f for f in figures.values() if f["micro"] >= base["micro"] and f["macro"] >= base["macro"]]
    assert chosen["micro"] + chosen["macro"] == pytest.approx(max(f["micro"] + f["macro"] for f in qualified))
    # refitted on every image with the chosen rule
    refit = choose_thresholds(y, scores, decision.policy, **options[decision.policy])
    np.testing.assert_allclose(decision.thresholds, refit.thresholds)
    assert decision.to_dict()["chosen_by"]["candidates"] == figures


def test_auto_keeps_one_half_when_the_scores_are_already_calibrated_at_it():
    """Scores that separate at 0.5 exactly: no fitted rule can beat 0.5 out of fold, so 0.5 stays."""
    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(np.int8)
    scores = np.where(y == 1, 0.6, 0.4) + rng.normal(0, 0.02, y.shape)
    assert choose_thresholds(y, scores, "auto").policy == "fixed"


def test_auto_with_one_image_keeps_one_half():
    decision = choose_thresholds(np.array([[1, 0]]), np.array([[0.9, 0.2]]), "auto")
    assert decision.policy == "fixed" and decision.chosen_by["rule"] == "too few images"


def test_shrinkage_goes_with_the_per_label_policy_only():
    y, scores = data()
    with pytest.raises(ConfigError, match="shrinkage"):
        choose_thresholds(y, scores, "global", shrinkage=5.0)
    with pytest.raises(ConfigError, match="shrinkage"):
        choose_thresholds(y, scores, "per-label", shrinkage=-1.0)
