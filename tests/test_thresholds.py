"""mlic.thresholds against brute force (scikit-learn's F1), by hand and by properties, and its policies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import f1_score, precision_score

from mlic.errors import ConfigError, DataError
from mlic.metrics import blocks, precision_recall_f1
from mlic.thresholds import (
    UNREACHABLE,
    Decision,
    apply_thresholds,
    balanced,
    best_f1_thresholds,
    choose_balance,
    choose_thresholds,
    global_threshold,
    label_priors,
    resampled_criterion,
    simplest_within_one_se,
    top_k,
)


def make_case(name: str, seed: int = 0, n: int = 50, n_labels: int = 6):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.3).astype(np.int8)
    s = np.clip(0.5 * y + 0.8 * rng.random((n, n_labels)), 0, 1)
    if name == "ties":
        s = np.round(s, 1)
    elif name == "unknowns":
        y[rng.random(y.shape) < 0.3] = -1
        s = np.round(s, 2)
    elif name == "float32":
        s = s.astype(np.float32)
    return y, s


def brute_force_best_f1(y, s):
    """Per label: the highest F1 over every candidate threshold (each distinct known score)."""
    best = []
    for j in range(y.shape[1]):
        m = y[:, j] >= 0
        yt, sc = y[m, j], s[m, j]
        best.append(max(f1_score(yt, sc >= c, zero_division=0) for c in np.unique(sc)))
    return np.array(best)


def f1_at(y, s, thresholds):
    out = []
    for j in range(y.shape[1]):
        m = y[:, j] >= 0
        out.append(f1_score(y[m, j], s[m, j] >= thresholds[j], zero_division=0))
    return np.array(out)


@pytest.mark.parametrize("case", ["random", "ties", "unknowns", "float32"])
def test_thresholds_attain_the_brute_force_maximum(case):
    y, s = make_case(case)
    t = best_f1_thresholds(y, s)
    assert t.dtype == np.float64 and t.shape == (y.shape[1],)
    np.testing.assert_allclose(f1_at(y, s, t), brute_force_best_f1(y, s), atol=1e-12)


@pytest.mark.parametrize("case", ["random", "ties", "unknowns", "float32"])
def test_midpoint_rule(case):
    y, s = make_case(case, seed=1)
    t = best_f1_thresholds(y, s)
    for j in range(y.shape[1]):
        known = np.unique(s[y[:, j] >= 0, j])  # ascending distinct known scores
        above, below = known[known >= t[j]], known[known < t[j]]
        lowest_positive = above.min()  # the lowest score predicted present
        if below.size:
            assert t[j] == pytest.approx((lowest_positive + below.max()) / 2, abs=1e-7)
        else:
            assert t[j] == lowest_positive


def test_hand_examples():
    y = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, -1]])
    s = np.array([[0.9, 0.9, 0.9], [0.8, 0.8, 0.8], [0.3, 0.7, 0.3], [0.1, 0.6, 0.1]])
    t = best_f1_thresholds(y, s)
    assert t[0] == pytest.approx(0.55)  # between 0.8 (last positive) and 0.3
    # label 1: F1 ties at 2/3 between cutting after 0.9 and after 0.6: the higher threshold wins
    assert t[1] == pytest.approx(0.85)
    assert t[2] == pytest.approx(0.55)  # the unknown 0.1 is ignored; 0.3 is the next known score


def test_threshold_is_the_score_itself_when_nothing_is_lower():
    y = np.array([[1], [1], [1]])
    s = np.array([[0.9], [0.4], [0.7]])
    assert best_f1_thresholds(y, s)[0] == 0.4


def test_adjacent_floats_keep_the_decision():
    lo = np.float32(0.5)
    hi = np.nextafter(lo, np.float32(1))
    y = np.array([[1], [0]])
    s = np.array([[hi], [lo]], dtype=np.float32)
    t = best_f1_thresholds(y, s)
    np.testing.assert_array_equal(apply_thresholds(s, t), y == 1)
    np.testing.assert_array_equal(s >= t.astype(np.float32), y == 1)


def test_default_for_labels_without_positives():
    y = np.array([[0, -1, 1], [0, -1, 0], [0, -1, 0]])
    s = np.array([[0.2, 0.9, 0.8], [0.1, 0.1, 0.1], [0.3, 0.5, 0.2]])
    np.testing.assert_allclose(best_f1_thresholds(y, s), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(best_f1_thresholds(y, s, default=0.7), [0.7, 0.7, 0.5])
    np.testing.assert_array_equal(best_f1_thresholds(np.zeros((0, 2), int), np.zeros((0, 2))), [0.5, 0.5])


def test_single_sample():
    np.testing.assert_allclose(best_f1_thresholds([[1, 0]], [[0.3, 0.6]]), [0.3, 0.5])


def test_blocks_agree(monkeypatch):
    y, s = make_case("unknowns", seed=2)
    whole = best_f1_thresholds(y, s)
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", y.shape[0])  # one column per block
    np.testing.assert_array_equal(best_f1_thresholds(y, s), whole)


def numpy_best_f1(yt, sc):
    """Highest F1 of one label's known entries over every candidate threshold."""
    n_pos = (yt == 1).sum()
    best = 0.0
    for c in np.unique(sc):
        tp = ((sc >= c) & (yt == 1)).sum()
        fp = ((sc >= c) & (yt == 0)).sum()
        best = max(best, 2 * tp / (tp + fp + n_pos))
    return best


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int8, (n, 3), elements=st.sampled_from([-1, 0, 1])),
            hnp.arrays(np.float64, (n, 3), elements=st.sampled_from([0.0, 0.2, 0.25, 0.5, 0.9, 1.0])),
        )
    )
)
def test_property_thresholds_attain_max_f1_and_ignore_unknowns(arrays):
    y, s = arrays
    t = best_f1_thresholds(y, s)
    for j in range(y.shape[1]):
        m = y[:, j] >= 0
        yt, sc = y[m, j], s[m, j]
        if not (yt == 1).any():
            assert t[j] == 0.5
            continue
        pred = sc >= t[j]
        tp, fp = (pred & (yt == 1)).sum(), (pred & (yt == 0)).sum()
        assert 2 * tp / (tp + fp + (yt == 1).sum()) == pytest.approx(numpy_best_f1(yt, sc), abs=1e-12)
        # The known entries alone give the same threshold: unknowns have no say.
        assert best_f1_thresholds(yt[:, None], sc[:, None])[0] == t[j]


# -- fixed thresholds and top-k -------------------------------------------------------------------
def test_apply_thresholds():
    s = np.array([[0.2, 0.5], [0.7, 0.1]])
    np.testing.assert_array_equal(apply_thresholds(s, 0.5), [[False, True], [True, False]])
    np.testing.assert_array_equal(apply_thresholds(s, [0.1, 0.6]), [[True, False], [True, False]])
    assert apply_thresholds(s, 0.5).dtype == bool
    with pytest.raises(DataError, match=r"thresholds must be .*\[n_labels\] = \[2\]"):
        apply_thresholds(s, [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="y_score must hold finite scores"):
        apply_thresholds([[np.inf, 0.1]], 0.5)


def naive_top_k(s, k):
    out = np.zeros(s.shape, dtype=bool)
    for i, row in enumerate(s):
        for j in sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]:
            out[i, j] = True
    return out


@pytest.mark.parametrize("k", [0, 1, 2, 4, 5])
def test_top_k_matches_naive_with_ties(k):
    s = np.round(np.random.default_rng(0).random((30, 5)), 1)
    s[0] = 0.5  # a row of ties
    out = top_k(s, k)
    np.testing.assert_array_equal(out, naive_top_k(s, k))
    assert (out.sum(axis=1) == k).all()


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  elements=st.sampled_from([0.0, 0.3, 0.5, 1.0])), st.data())  # fmt: skip
def test_property_top_k(s, data):
    k = data.draw(st.integers(0, s.shape[1]))
    np.testing.assert_array_equal(top_k(s, k), naive_top_k(s, k))


@pytest.mark.parametrize(("k", "match"), [(-1, r"k must be an integer in \[0, n_labels\] = \[0, 3\]"),
                                           (4, r"got 4"), (1.5, r"k must be an integer")])  # fmt: skip
def test_top_k_rejects_bad_k(k, match):
    with pytest.raises(DataError, match=match):
        top_k(np.zeros((2, 3)), k)


def test_input_errors():
    with pytest.raises(DataError, match=r"y_true must hold 1 \(present\), 0 \(absent\) or -1"):
        best_f1_thresholds([[2]], [[0.5]])
    with pytest.raises(DataError, match=r"y_score has shape \(1, 2\) but y_true has shape \(1, 1\)"):
        best_f1_thresholds([[1]], [[0.5, 0.2]])
    with pytest.raises(DataError, match=r"y_score must hold finite scores; found nan at \[0, 0\]"):
        best_f1_thresholds([[1]], [[np.nan]])
    with pytest.raises(DataError, match=r"y_score must be a 2-D array"):
        top_k(np.zeros(3), 1)


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
    qualified = [k for k, f in figures.items() if f["micro"] >= base["micro"] and f["macro"] >= base["macro"]]
    best = max((figures[k]["micro"] + figures[k]["macro"]) / 2 for k in qualified)
    for name in qualified:  # each qualified rule's gap to the best, and the SE it is measured against
        gap = best - (figures[name]["micro"] + figures[name]["macro"]) / 2
        assert figures[name]["behind_best"] == pytest.approx(gap, abs=1e-5) and figures[name]["se"] >= 0
    # the one-SE rule: the chosen one is within its SE of the best, every simpler qualified one is not
    assert chosen["behind_best"] <= chosen["se"]
    simpler = qualified[: qualified.index(decision.policy)]
    assert all(figures[k]["behind_best"] > figures[k]["se"] for k in simpler)
    # refitted on every image with the chosen rule
    refit = choose_thresholds(y, scores, decision.policy, **options[decision.policy])
    np.testing.assert_allclose(decision.thresholds, refit.thresholds)
    assert decision.to_dict()["chosen_by"]["candidates"] == figures


def test_auto_leaves_one_half_when_the_scores_are_clearly_off_it():
    """Positives score 0.25-0.45 and negatives 0-0.2: every fitted rule beats 0.5 far beyond its noise."""
    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(np.int8)
    scores = np.where(y == 1, 0.25, 0.0) + rng.random(y.shape) * 0.2
    decision = choose_thresholds(y, scores, "auto")
    assert decision.policy == "global"  # per-label is no better: the simpler one is kept
    assert decision.chosen_by["candidates"]["fixed"]["behind_best"] > 0.5


def test_resampled_criterion_with_every_image_once_is_the_pooled_figure():
    y, scores = data(3, n=150)
    decided = scores >= 0.5
    pooled = [precision_recall_f1(y, decided, average=a)["f1"] for a in ("micro", "macro")]
    once = resampled_criterion(y, decided, np.ones((1, len(y)), dtype=np.int64))
    assert once[0] == pytest.approx(sum(pooled) / 2, abs=1e-6)
    twice = resampled_criterion(y, decided, np.full((1, len(y)), 2))  # doubling every image changes nothing
    assert twice[0] == pytest.approx(once[0], abs=1e-6)


def test_one_se_rule_keeps_the_simpler_rule_unless_the_gain_exceeds_its_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 200)
    simple = 0.80 + noise
    close = simple + 0.004 + rng.normal(0, 0.01, 200)  # gains 0.004 with an SE of the difference of ~0.01
    far = simple + 0.05 + rng.normal(0, 0.01, 200)
    chosen, behind = simplest_within_one_se(
        {"fixed": 0.80, "global": 0.804}, {"fixed": simple, "global": close}
    )
    assert chosen == "fixed" and behind["global"] == (0.0, 0.0)
    assert behind["fixed"][0] == pytest.approx(0.004) and behind["fixed"][1] > 0.004
    chosen, _ = simplest_within_one_se({"fixed": 0.80, "global": 0.85}, {"fixed": simple, "global": far})
    assert chosen == "global"
    chosen, _ = simplest_within_one_se({"fixed": 0.80, "global": 0.804, "per-label": 0.85},
                                       {"fixed": simple, "global": close, "per-label": far})  # fmt: skip
    assert chosen == "per-label"


def test_auto_keeps_one_half_when_the_scores_are_already_calibrated_at_it():
    """Scores that separate at 0.5 exactly: no fitted rule can beat 0.5 out of fold, so 0.5 stays."""
    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(np.int8)
    scores = np.where(y == 1, 0.6, 0.4) + rng.normal(0, 0.02, y.shape)
    assert choose_thresholds(y, scores, "auto").policy == "fixed"


def test_auto_with_one_image_keeps_one_half():
    decision = choose_thresholds(np.array([[1, 0]]), np.array([[0.9, 0.2]]), "auto")
    assert decision.policy == "fixed" and decision.chosen_by["rule"] == "too few images"


def test_auto_without_labels_decides_nothing():  # data with attributes only
    decision = choose_thresholds(np.zeros((40, 0), dtype=int), np.zeros((40, 0)), "auto")
    assert decision.policy == "fixed" and decision.thresholds.shape == (0,)
    assert decision.chosen_by == {"rule": "no labels"}


def test_shrinkage_goes_with_the_per_label_policy_only():
    y, scores = data()
    with pytest.raises(ConfigError, match="shrinkage"):
        choose_thresholds(y, scores, "global", shrinkage=5.0)
    with pytest.raises(ConfigError, match="shrinkage"):
        choose_thresholds(y, scores, "per-label", shrinkage=-1.0)


# -- top-k balance: rare labels are not drowned by frequent ones ----------------------------------------


def drowned_case(seed: int = 0, n: int = 400):
    """Label 0 on every image, scored high; labels 1-5 rare, scored 0.3 on their positives, 0.1 else."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 6), dtype=np.int8)
    y[:, 0] = 1
    y[np.arange(n), rng.integers(1, 6, n)] = rng.random(n) < 0.5
    s = np.where(y == 1, 0.3, 0.1) + 0.02 * rng.random((n, 6))
    s[:, 0] = 0.9
    s[:, 1] += 0.4 * (rng.random(n) < 0.5)  # label 1 is also fairly likely on images without it
    return y, s


def test_label_priors_are_shares_of_known_entries_with_half_a_positive_at_least():
    np.testing.assert_allclose(label_priors([3, 0, 5], [10, 4, 5]), [0.3, 0.125, 1.0])
    np.testing.assert_allclose(label_priors([0], [0]), [0.5])


def test_balanced_divides_by_prior_to_the_power():
    s = np.array([[0.8, 0.2]])
    np.testing.assert_allclose(balanced(s, np.array([0.64, 0.04]), 0.5), [[1.0, 1.0]])
    np.testing.assert_array_equal(balanced(s, None, 0.5), s)
    np.testing.assert_array_equal(balanced(s, np.array([0.64, 0.04]), 0.0), s)


def test_choose_balance_lets_rare_labels_into_the_top_k():
    y, s = drowned_case()
    priors = label_priors((y == 1).sum(axis=0), np.full(6, len(y)))
    balance, how = choose_balance(y, s, priors, k=1)
    assert balance > 0 and how["k"] == 1
    assert how["CF1"][str(balance)] > how["CF1"]["0.0"] + 0.1
    by_score = Decision("top-k", np.full(6, 0.5), k=1)
    fair = Decision("top-k", np.full(6, 0.5), k=1, priors=priors, balance=balance)
    assert by_score.decide(s)[:, 0].all()  # ranking by score: the frequent label takes every slot
    assert fair.decide(s)[:, 1:].any(axis=0).all()  # balanced: every rare label is chosen somewhere
    assert fair.top(s, 2).sum(axis=1).tolist() == [2] * len(y)


def test_choose_balance_keeps_ranking_by_score_when_it_is_already_fair():
    rng = np.random.default_rng(1)
    y = np.eye(5, dtype=np.int8)[rng.choice(5, 300, p=[0.6, 0.2, 0.1, 0.05, 0.05])]  # one label each
    s = np.where(y == 1, 0.9, 0.1) + 0.05 * rng.random(y.shape)  # and it always scores highest
    priors = label_priors((y == 1).sum(axis=0), np.full(5, len(y)))
    balance, how = choose_balance(y, s, priors, k=1)
    assert balance == 0.0 and set(how["CF1"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
