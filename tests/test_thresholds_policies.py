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
