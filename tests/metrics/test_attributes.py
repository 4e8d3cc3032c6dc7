"""Tests of mlic.metrics.attributes: accuracy, macro-F1 and confusion matrix, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn import metrics as skm

from mlic.metrics import (
    attribute_scores,
)


# -- attributes and whole samples -----------------------------------------------------------------
def make_attributes(seed=0, n=50, classes=(3, 2)):
    rng = np.random.default_rng(seed)
    y = np.stack([rng.integers(0, c, n) for c in classes], axis=1)
    probs = [rng.dirichlet(np.ones(c), n) for c in classes]
    return y, probs


def test_attribute_scores():
    y, probs = make_attributes()
    y[:5, 0] = -1
    y[:, 1] = -1
    r = attribute_scores(y, probs, ["size", "colour"])
    m = y[:, 0] >= 0
    assert r["size"]["accuracy"] == pytest.approx(skm.accuracy_score(y[m, 0], probs[0][m].argmax(1)))
    assert r["size"]["support"] == 45
    assert np.isnan(r["colour"]["accuracy"]) and r["colour"]["support"] == 0


# -- attributes -----------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 15).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(-1, 3)),
            hnp.arrays(np.float64, (n, 4), elements=st.sampled_from([0.0, 0.2, 0.5, 0.7])),
        )
    )
)
def test_attribute_figures_match_sklearn_on_known_targets(case):
    y, probs = case
    r = attribute_scores(y[:, None], [probs], ["a"])["a"]
    known = y >= 0
    assert r["support"] == int(known.sum())
    if not known.any():
        assert np.isnan(r["accuracy"]) and np.isnan(r["macro_f1"])
        assert (r["confusion_matrix"] == 0).all()
        return
    t, p = y[known], probs[known].argmax(axis=1)  # argmax ties: the first class, as numpy
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(t, p))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(t, p, average="macro", zero_division=0))
    np.testing.assert_array_equal(r["confusion_matrix"], skm.confusion_matrix(t, p, labels=range(4)))
