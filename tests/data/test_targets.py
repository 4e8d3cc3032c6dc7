"""Tests of mlic.data.targets: label lists per image, equal to the dense matrix they stand for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlic.data.targets import LabelLists
from mlic.errors import ConfigError, SchemaError
from mlic.losses import auto_pos_weight, label_priors

DENSE = st.tuples(st.integers(0, 8), st.integers(1, 7)).flatmap(
    lambda shape: arrays(np.int8, shape, elements=st.sampled_from([-1, 0, 1]))
)


@settings(max_examples=200, deadline=None)
@given(DENSE)
def test_from_dense_round_trips_and_counts(dense):
    lists = LabelLists.from_dense(dense)
    assert lists.shape == dense.shape
    np.testing.assert_array_equal(lists.dense(), dense)
    assert (lists.values != lists.fill).all()  # only entries that differ from the fill are listed
    counts = lists.counts()
    for key, value in (("positive", 1), ("negative", 0), ("unknown", -1)):
        np.testing.assert_array_equal(counts[key], (dense == value).sum(0))


@settings(max_examples=200, deadline=None)
@given(DENSE, st.data())
def test_take_equals_dense_row_selection(dense, data):
    lists = LabelLists.from_dense(dense)
    rows = data.draw(st.lists(st.integers(0, max(0, len(dense) - 1)), max_size=10)) if len(dense) else []
    np.testing.assert_array_equal(lists.take(rows).dense(), dense[rows])
    np.testing.assert_array_equal(lists.dense(rows), dense[rows])
    for i in rows:
        indices, values = lists.row(i)
        expected = np.flatnonzero(dense[i] != lists.fill)
        np.testing.assert_array_equal(indices, expected)
        np.testing.assert_array_equal(values, dense[i, expected])


def test_fill_is_unknown_when_most_entries_are_unknown():
    dense = np.array([[1, -1, -1, -1], [-1, 0, -1, -1]], dtype=np.int8)
    lists = LabelLists.from_dense(dense)
    assert lists.fill == -1 and len(lists.indices) == 2
    np.testing.assert_array_equal(lists.dense(), dense)


def test_from_lists_with_unknowns_and_verified_negatives():
    lists = LabelLists.from_lists([[3, 0], [], [1]], 4, unknown=[[2], [0, 1], []])
    np.testing.assert_array_equal(lists.dense(), [[1, 0, -1, 1], [-1, -1, 0, 0], [0, 1, 0, 0]])
    positives_only = LabelLists.from_lists([[0], [2]], 3, negatives=[[1], []], fill=-1)
    np.testing.assert_array_equal(positives_only.dense(), [[1, 0, -1], [-1, -1, 1]])


def test_from_lists_rejects_contradictions_and_bad_indices():
    with pytest.raises(SchemaError, match="image 1 lists a label twice"):
        LabelLists.from_lists([[0], [1, 1]], 3)
    with pytest.raises(SchemaError, match="image 0"):
        LabelLists.from_lists([[0]], 3, unknown=[[0]])
    with pytest.raises(SchemaError, match=r"indices must lie in \[0, 3\)"):
        LabelLists.from_lists([[3]], 3)
    with pytest.raises(SchemaError, match="2 rows where 1"):
        LabelLists.from_lists([[0]], 3, unknown=[[], []])
    with pytest.raises(SchemaError, match="fill value"):
        LabelLists(3, [0], [], [], fill=1)
    with pytest.raises(SchemaError, match="must be 1"):
        LabelLists.from_dense(np.array([[2]]))


def test_lists_are_small_where_the_dense_matrix_is_not():
    rng = np.random.default_rng(0)
    n, n_labels = 20_000, 10_000
    positives = [rng.choice(n_labels, size=5, replace=False) for _ in range(n)]
    lists = LabelLists.from_lists(positives, n_labels)
    assert lists.nbytes < 1_000_000  # the dense int8 matrix would be 200 MB
    assert lists.counts()["positive"].sum() == 5 * n


@pytest.mark.parametrize("hidden_as", ["unknown", "negative"])
def test_hide_positives_hides_that_share_and_nothing_else(hidden_as):
    rng = np.random.default_rng(1)
    dense = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(200, 6), p=[0.1, 0.6, 0.3])
    lists = LabelLists.from_dense(dense)
    hidden = lists.hide_positives(0.5, hidden_as=hidden_as, seed=3).dense()
    was_positive = dense == 1
    now_hidden = was_positive & (hidden != 1)
    assert now_hidden.sum() == round(0.5 * was_positive.sum())
    assert (hidden[now_hidden] == (-1 if hidden_as == "unknown" else 0)).all()
    np.testing.assert_array_equal(hidden[~was_positive], dense[~was_positive])
    again = lists.hide_positives(0.5, hidden_as=hidden_as, seed=3).dense()
    np.testing.assert_array_equal(again, hidden)  # seeded
    np.testing.assert_array_equal(lists.hide_positives(0.0).dense(), dense)
    assert (lists.hide_positives(1.0, hidden_as=hidden_as).dense() != 1).all()


def test_hide_positives_checks_its_arguments():
    lists = LabelLists.from_dense(np.eye(3, dtype=np.int8))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        lists.hide_positives(1.5)
    with pytest.raises(ConfigError, match="'unknown', 'negative'"):
        lists.hide_positives(0.5, hidden_as="zero")


def test_loss_statistics_from_lists_equal_those_from_the_matrix():
    rng = np.random.default_rng(2)
    dense = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(50, 7), p=[0.2, 0.6, 0.2])
    lists = LabelLists.from_dense(dense)
    np.testing.assert_array_equal(auto_pos_weight(lists, 10.0), auto_pos_weight(dense, 10.0))
    np.testing.assert_array_equal(label_priors(lists), label_priors(dense))


@settings(max_examples=100, deadline=None)
@given(DENSE, st.randoms(use_true_random=False))
def test_from_entries_in_any_order_and_select_equal_the_matrix(dense, random):
    rows, cols = np.nonzero(dense != 0)
    order = list(range(len(rows)))
    random.shuffle(order)
    lists = LabelLists.from_entries(rows[order], cols[order], dense[rows, cols][order], *dense.shape)
    np.testing.assert_array_equal(lists.dense(), dense)
    positives = lists.select(lists.values == 1, fill=0).dense()
    np.testing.assert_array_equal(positives, (dense == 1).astype(np.int8))


def test_concatenated_lists_are_the_rows_one_after_another_whatever_their_fill():
    a = np.array([[1, 0, -1], [0, 0, 1]], dtype=np.int8)
    b = np.array([[-1, -1, 1], [-1, -1, -1], [1, -1, -1]], dtype=np.int8)  # mostly unknown: fill -1
    lists = LabelLists.concat([LabelLists.from_dense(a), LabelLists.from_dense(b)])
    assert np.array_equal(lists.dense(), np.concatenate([a, b])) and lists.fill == 0
    with pytest.raises(SchemaError, match="same labels"):
        LabelLists.concat([LabelLists.from_dense(a), LabelLists.from_dense(a[:, :2])])
