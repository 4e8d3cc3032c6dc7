"""Tests of mlic.auditing.ranking: thresholds and suggestions checked against a naive loop, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlic.auditing.ranking import KINDS, label_thresholds, logit, rank_suggestions
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


def naive_thresholds(y, p):
    missing, wrong = [], []
    for j in range(y.shape[1]):
        pos = [p[i, j] for i in range(len(y)) if y[i, j] == 1 and not math.isnan(p[i, j])]
        neg = [p[i, j] for i in range(len(y)) if y[i, j] == 0 and not math.isnan(p[i, j])]
        missing.append(np.mean(pos) if pos else np.nan)
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
def test_thresholds_match_a_naive_loop(fill):
    y, p, lists = case(fill=fill)
    th = label_thresholds(p, lists)
    missing, wrong = naive_thresholds(y, p)
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


def test_each_label_is_judged_by_its_own_scores():
    """Label 1's scores are all low (a rare, hard label): its missing positive still ranks with label 0's."""
    y = np.zeros((40, 2), np.int8)
    y[:10, 0] = 1
    y[:10, 1] = 1
    p = np.full((40, 2), 0.02, np.float32)
    p[:10, 0], p[:10, 1] = 0.9, 0.2  # label 1's positives score 0.2 only
    p[20, 0], p[21, 1] = 0.9, 0.2  # one missing positive each, at its label's typical positive score
    s = rank_suggestions(p, LabelLists.from_dense(y))
    top = {(int(i), int(j)) for i, j in zip(s.image[:2], s.label[:2])}
    assert top == {(20, 0), (21, 1)}
    assert s.kind[:2].tolist() == [0, 0] and s.confidence[:2].tolist() == [1.0, 1.0]
    # a single global cut at 0.5 would have missed (21, 1)
    assert p[21, 1] < 0.5
    assert s.table["likely_missing"].tolist() == [1, 1]


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
