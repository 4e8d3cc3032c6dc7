"""Tests of mlic.auditing.ranking: thresholds and suggestions checked against a naive loop, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlic.auditing.ranking import KINDS, PRIOR_POSITIVES, label_thresholds, logit, rank_suggestions
from mlic.data.targets import LabelLists
from mlic.errors import ConfigError, DataError


def case(n: int = 80, n_labels: int = 7, seed: int = 0, fill: int = 0, nan: bool = True):
    """Targets with unknowns (and a label without positives), scores that follow them, some NaN scores."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.3).astype(np.int8)
    y[:, 2] = 0  # no positives: no missing threshold
    y[rng.random(y.shape) < 0.1] = -1
    if fill == -1:
        y[rng.random(y.shape) < 0.5] = -1
    p = np.clip(np.where(y == 1, 0.7, 0.15) + rng.normal(0, 0.2, y.shape), 0, 1).astype(np.float32)
    if nan:
        p[3] = np.nan  # an unreadable image
        p[rng.random(y.shape) < 0.02] = np.nan
    lists = LabelLists.from_dense(y)
    assert lists.fill == fill
    return y, p, lists


def naive_thresholds(y, p, m=PRIOR_POSITIVES):
    """Loops: a label's positives' mean with m more at the mean of all labels'; its negatives' mean."""
    every = [
        p[i, j] for i in range(len(y)) for j in range(y.shape[1]) if y[i, j] == 1 and not math.isnan(p[i, j])
    ]
    pooled = np.mean(every)
    missing, wrong = [], []
    for j in range(y.shape[1]):
        pos = [p[i, j] for i in range(len(y)) if y[i, j] == 1 and not math.isnan(p[i, j])]
        neg = [p[i, j] for i in range(len(y)) if y[i, j] == 0 and not math.isnan(p[i, j])]
        if not pos:
            missing.append(np.nan)
        else:
            missing.append(pooled if math.isinf(m) else (sum(pos) + m * pooled) / (len(pos) + m))
        wrong.append(np.mean(neg) if neg else np.nan)
    return np.array(missing), np.array(wrong)


def naive_suggestions(y, p, min_confidence):
    """Every candidate pair by loops: (score, image, label, kind)."""
    missing, wrong = naive_thresholds(y, p)
    cut = -math.inf if min_confidence is None else math.log(min_confidence)
    out = []
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            if math.isnan(p[i, j]):
                continue
            if y[i, j] != 1 and not math.isnan(missing[j]):
                s = float(logit(np.float64(p[i, j])) - logit(missing[j]))
                kind = 0
            elif y[i, j] == 1 and not math.isnan(wrong[j]):
                s = float(logit(wrong[j]) - logit(np.float64(p[i, j])))
                kind = 1
            else:
                continue
            if s >= cut:
                out.append((s, i, j, kind))
    return sorted(out, key=lambda t: (-t[0], t[1], t[2]))


@pytest.mark.parametrize("fill", [0, -1])
@pytest.mark.parametrize("m", [PRIOR_POSITIVES, 0.0, 5.0])
def test_thresholds_match_a_naive_loop(fill, m):
    y, p, lists = case(fill=fill)
    th = label_thresholds(p, lists, prior_positives=m)
    missing, wrong = naive_thresholds(y, p, m)
    np.testing.assert_allclose(th.missing, missing, rtol=1e-5)
    np.testing.assert_allclose(th.wrong, wrong, rtol=1e-5)
    assert np.isnan(th.missing[2])
    finite = ~np.isnan(p)
    assert th.positives.tolist() == ((y == 1) & finite).sum(0).tolist()
    assert th.negatives.tolist() == ((y == 0) & finite).sum(0).tolist()


@pytest.mark.parametrize("fill", [0, -1])
@pytest.mark.parametrize("min_confidence", [0.5, 0.05, None])
def test_suggestions_match_a_naive_loop(fill, min_confidence, monkeypatch):
    import mlic.auditing.ranking as ranking

    monkeypatch.setattr(ranking, "BLOCK_ENTRIES", 50)  # many blocks: the merge across blocks is exercised
    y, p, lists = case(fill=fill)
    expected = naive_suggestions(y, p, min_confidence)
    limit = None if min_confidence is not None else 1000
    got = rank_suggestions(p, lists, min_confidence=min_confidence, limit=limit)
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(got.score, [e[0] for e in expected], rtol=1e-4, atol=1e-4)
    assert got.kind.tolist() == [e[3] for e in expected]
    assert set(zip(got.image.tolist(), got.label.tolist())) == {(e[1], e[2]) for e in expected}
    assert got.given.tolist() == [int(y[i, j]) for i, j in zip(got.image, got.label)]
    np.testing.assert_allclose(got.probability, p[got.image, got.label])
    assert (np.diff(got.score) <= 1e-9).all()


def test_a_limit_keeps_the_best_of_each_kind(monkeypatch):
    import mlic.auditing.ranking as ranking

    monkeypatch.setattr(ranking, "BLOCK_ENTRIES", 30)
    y, p, lists = case(n=200, seed=3)
    everything = naive_suggestions(y, p, None)
    got = rank_suggestions(p, lists, min_confidence=None, limit=25)
    for k in (0, 1):
        want = [e[0] for e in everything if e[3] == k][:25]
        np.testing.assert_allclose(np.sort(got.score[got.kind == k])[::-1], want, rtol=1e-4, atol=1e-4)
    only = rank_suggestions(p, lists, min_confidence=None, limit=5, kinds=("wrong",))
    assert len(only) == 5 and set(only.kind.tolist()) == {1}
    assert len(rank_suggestions(p, lists, min_confidence=None, limit=0)) == 0


def test_order_of_images_does_not_change_the_suggestions():
    y, p, lists = case(seed=1, nan=False)
    perm = np.random.default_rng(0).permutation(len(y))
    a = rank_suggestions(p, lists)
    b = rank_suggestions(p[perm], LabelLists.from_dense(y[perm]))
    assert {(int(i), int(j)) for i, j in zip(a.image, a.label)} == {
        (int(perm[i]), int(j)) for i, j in zip(b.image, b.label)
    }


def test_a_label_with_many_positives_is_judged_by_its_own_scores():
    """Label 1's positives all score low: with enough of them, its missing positive ranks with label 0's."""
    y = np.zeros((40, 2), np.int8)
    y[:10, 0] = 1
    y[:10, 1] = 1
    p = np.full((40, 2), 0.02, np.float32)
    p[:10, 0], p[:10, 1] = 0.9, 0.2  # label 1's positives score 0.2 only
    p[20, 0], p[21, 1] = 0.9, 0.2  # one missing positive each, at its label's typical positive score
    s = rank_suggestions(p, LabelLists.from_dense(y), prior_positives=0)  # 10 positives weigh as thousands
    top = {(int(i), int(j)) for i, j in zip(s.image[:2], s.label[:2])}
    assert top == {(20, 0), (21, 1)}
    assert s.kind[:2].tolist() == [0, 0] and s.confidence[:2].tolist() == [1.0, 1.0]
    # a single global cut at 0.5 would have missed (21, 1)
    assert p[21, 1] < 0.5
    assert s.table["likely_missing"].tolist() == [1, 1]


def test_a_rare_label_the_model_barely_finds_does_not_flood_the_top():
    """Label 1 has 3 positives scored 0.06 among negatives scored 0.05-0.08: by its own mean (0.06) its
    negatives would look at least as likely missing as label 0's hidden positives; pooled, they do not."""
    rng = np.random.default_rng(0)
    truth = np.zeros((400, 2), bool)
    truth[:200, 0] = True
    truth[:3, 1] = True
    given = truth.copy()
    hidden = np.arange(140, 200)  # 30% of label 0's positives not given
    given[hidden, 0] = False
    p = np.where(truth, 0.0, rng.uniform(0.0, 0.05, truth.shape)).astype(np.float32)
    p[:200, 0] = rng.uniform(0.6, 0.8, 200)
    p[:, 1] = rng.uniform(0.05, 0.08, len(p))
    p[:3, 1] = 0.06
    lists = LabelLists.from_dense(given.astype(np.int8))
    pooled = rank_suggestions(p, lists, min_confidence=None, limit=len(hidden), kinds=("missing",))
    assert set(pooled.image.tolist()) == set(hidden.tolist()) and set(pooled.label.tolist()) == {0}
    own = rank_suggestions(
        p, lists, min_confidence=None, limit=len(hidden), kinds=("missing",), prior_positives=0
    )
    assert (own.label == 1).sum() > len(hidden) // 2  # most of the top N: the flood the pooling stops
    assert pooled.thresholds.missing[1] > 0.5 > own.thresholds.missing[1]


def test_wrong_positive_ranks_first():
    y = np.zeros((30, 1), np.int8)
    y[:10] = 1
    p = np.full((30, 1), 0.05, np.float32)
    p[:10] = 0.95
    p[4] = 0.01  # given, but scored like the negatives
    s = rank_suggestions(p, LabelLists.from_dense(y))
    assert (int(s.image[0]), KINDS[s.kind[0]], int(s.given[0])) == (4, "wrong", 1)
    assert s.table["given_positives"].tolist() == [10]
    assert s.table["suspected_wrong_rate"][0] == pytest.approx(0.1)


def test_estimated_missing_rate_is_near_the_hidden_share():
    """A model trained with 30% of the positives missing scores true positives near 0.7 (Elkan and Noto)."""
    rng = np.random.default_rng(0)
    truth = rng.random((4000, 3)) < 0.3
    given = truth & (rng.random(truth.shape) >= 0.3)
    p = np.where(truth, np.clip(rng.normal(0.7, 0.05, truth.shape), 0, 1), 0.01).astype(np.float32)
    s = rank_suggestions(p, LabelLists.from_dense(given.astype(np.int8)))
    np.testing.assert_allclose(s.table["estimated_missing_rate"], 0.3, atol=0.04)


def test_bad_scores_and_bounds_are_refused():
    _, p, lists = case()
    with pytest.raises(DataError, match="shape"):
        rank_suggestions(p[:, :3], lists)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        rank_suggestions(p * 3, lists)
    with pytest.raises(DataError, match="floating"):
        rank_suggestions((p > 0.5).astype(np.int8), lists)
    with pytest.raises(ConfigError, match="min_confidence or a limit"):
        rank_suggestions(p, lists, min_confidence=None)
    with pytest.raises(ConfigError, match="min_confidence"):
        rank_suggestions(p, lists, min_confidence=0)
    with pytest.raises(ConfigError, match="kinds"):
        rank_suggestions(p, lists, kinds=("absent",))
    with pytest.raises(ConfigError, match="prior_positives"):
        rank_suggestions(p, lists, prior_positives=-1)
