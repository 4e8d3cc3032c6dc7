"""Decision metrics and attributes of mlic.metrics against scikit-learn and naive loops.

With nothing unknown the reference is scikit-learn on the whole matrix; with
unknowns, scikit-learn on each label's (or sample's) known entries. The papers'
CP/CR/CF1/OP/OR/OF1 are checked against their definitions, written out in loops.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn import metrics as skm

from mlic.errors import DataError
from mlic.metrics import (
    all_metrics,
    attribute_scores,
    hamming_loss,
    jaccard_samples,
    papers_scores,
    precision_recall_f1,
)
from test_metrics_ranking import block_elements, targets_and_scores

TOL = 1e-9
# float64, as mlic compares them: a Python float would compare in float32 with float32 scores (NEP 50)
THRESHOLDS = st.sampled_from([0.5, -np.inf, np.inf, 0.0, 0.1, -0.0, 0.9, 1.0]).map(np.float64)


def quiet():
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore")
    return w


def naive_decisions(y, pred):
    """Every decision figure by its definition, in loops over the known entries."""
    n, n_labels = y.shape
    per = {"precision": [], "recall": [], "f1": []}
    TP = FP = FN = 0
    for j in range(n_labels):
        known = y[:, j] >= 0
        t, p = y[known, j] == 1, pred[known, j]
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        TP, FP, FN = TP + tp, FP + fp, FN + fn
        if t.any():
            per["precision"].append(tp / (tp + fp) if tp + fp else 0.0)
            per["recall"].append(tp / (tp + fn))
            per["f1"].append(2 * tp / (2 * tp + fp + fn))
    rows = {"precision": [], "recall": [], "f1": [], "jaccard": [], "right": []}
    wrong = known_total = 0
    for i in range(n):
        known = y[i] >= 0
        if not known.any():
            continue
        t, p = y[i, known] == 1, pred[i, known]
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        rows["precision"].append(tp / (tp + fp) if tp + fp else 0.0)
        rows["recall"].append(tp / (tp + fn) if tp + fn else 0.0)
        rows["f1"].append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        rows["jaccard"].append(tp / (tp + fp + fn) if tp + fp + fn else 0.0)
        rows["right"].append(fp + fn == 0)
        wrong, known_total = wrong + fp + fn, known_total + int(known.sum())

    def mean(v):
        return float(np.mean(v)) if len(v) else np.nan

    cp, cr = mean(per["precision"]), mean(per["recall"])
    op = TP / (TP + FP) if TP + FP else 0.0
    orr = TP / (TP + FN) if TP + FN else 0.0
    return {
        "CP": cp,
        "CR": cr,
        "CF1": np.nan if np.isnan(cp) else (2 * cp * cr / (cp + cr) if cp + cr else 0.0),
        "OP": op,
        "OR": orr,
        "OF1": 2 * op * orr / (op + orr) if op + orr else 0.0,
        "macro_f1": mean(per["f1"]),
        "samples_precision": mean(rows["precision"]),
        "samples_recall": mean(rows["recall"]),
        "samples_f1": mean(rows["f1"]),
        "jaccard_samples": mean(rows["jaccard"]),
        "label_subset_accuracy": mean(rows["right"]),
        "hamming_loss": wrong / known_total if known_total else np.nan,
    }


@settings(max_examples=100, deadline=None)
@given(targets_and_scores(max_n=10, max_labels=5), THRESHOLDS)
def test_decision_figures_match_the_definitions_with_unknowns(case, threshold):
    y, s, block = case
    pred = s >= threshold
    with block_elements(block):
        m = all_metrics(y, s, threshold)
    ref = naive_decisions(y, pred)
    for key, value in ref.items():
        np.testing.assert_allclose(m[key], value, rtol=0, atol=TOL, err_msg=key)
    # The dense functions on the decisions agree with all_metrics' sparse counting.
    assert papers_scores(y, pred) == pytest.approx({k: m[k] for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")},
                                                   nan_ok=True, abs=TOL)  # fmt: skip
    per = precision_recall_f1(y, pred)
    for key in ("precision", "recall", "f1", "support"):
        np.testing.assert_allclose(per[key], m["per_label"][key], atol=TOL)
    for avg in ("micro", "macro", "samples"):
        got = precision_recall_f1(y, pred, average=avg)
        assert got == pytest.approx({k: m[f"{avg}_{k}"] for k in got}, nan_ok=True, abs=TOL)
    assert hamming_loss(y, pred) == pytest.approx(m["hamming_loss"], nan_ok=True, abs=TOL)
    assert jaccard_samples(y, pred) == pytest.approx(m["jaccard_samples"], nan_ok=True, abs=TOL)


@settings(max_examples=100, deadline=None)
@given(targets_and_scores(max_n=10, max_labels=5, min_labels=2, unknowns=False), THRESHOLDS)
def test_without_unknowns_decision_figures_equal_sklearn(case, threshold):
    y, s, block = case
    pred = (s >= threshold).astype(int)
    with block_elements(block):
        m = all_metrics(y, s, threshold)
    with_pos = np.flatnonzero(y.any(axis=0))
    w = quiet()
    for avg in ("micro", "macro", "samples"):
        labels = with_pos if avg == "macro" else None
        if avg == "macro" and not with_pos.size:
            continue
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=avg, labels=labels, zero_division=0)
        assert [m[f"{avg}_{k}"] for k in ("precision", "recall", "f1")] == pytest.approx([p, r, f], abs=TOL)
    p, r, f, support = skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    for key, ref in (("precision", p), ("recall", r), ("f1", f)):
        np.testing.assert_allclose(m["per_label"][key][with_pos], ref[with_pos], atol=TOL)
    np.testing.assert_array_equal(m["per_label"]["support"], support)
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred), abs=TOL)
    assert m["label_subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    ref = skm.jaccard_score(y, pred, average="samples", zero_division=0)
    assert m["jaccard_samples"] == pytest.approx(ref, abs=TOL)
    mcm = skm.multilabel_confusion_matrix(y, pred)
    for key, (a, b) in {"tn": (0, 0), "fp": (0, 1), "fn": (1, 0), "tp": (1, 1)}.items():
        np.testing.assert_array_equal(m["per_label"][key], mcm[:, a, b])
    w.__exit__(None, None, None)


def test_per_label_thresholds_and_thresholds_below_every_positive():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 6)) < 0.3).astype(np.int8)
    y[rng.random(y.shape) < 0.2] = -1
    s = np.round(rng.random((40, 6)), 2).astype(np.float32)
    thresholds = np.array([-np.inf, 0.0, 0.3, 0.505, 1.0, np.inf])  # 0.505: not a float32
    m = all_metrics(y, s, thresholds)
    ref = naive_decisions(y, s >= thresholds)
    for key, value in ref.items():
        assert m[key] == pytest.approx(value, abs=TOL, nan_ok=True), key


def test_cf1_is_not_the_mean_of_per_label_f1():
    y = np.array([[1, 1], [0, 1], [0, 1], [0, 0]])
    pred = np.array([[1, 1], [1, 0], [1, 0], [0, 0]], dtype=bool)
    p = papers_scores(y, pred)
    # label 0: P 1/3, R 1, F1 1/2; label 1: P 1, R 1/3, F1 1/2
    assert p["CP"] == pytest.approx(2 / 3) and p["CR"] == pytest.approx(2 / 3)
    assert p["CF1"] == pytest.approx(2 / 3)  # 2 CP CR / (CP + CR)
    assert precision_recall_f1(y, pred, "macro")["f1"] == pytest.approx(0.5)  # the mean of F1
    assert p["OP"] == pytest.approx(2 / 4) and p["OR"] == pytest.approx(2 / 4) and p["OF1"] == 0.5


def test_precision_recall_f1_rejects_an_unknown_average():
    with pytest.raises(
        DataError, match=r"average must be None, 'micro', 'macro' or 'samples'; got 'weighted'"
    ):
        precision_recall_f1([[1]], [[1]], "weighted")


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


def test_all_metrics_carries_attributes_and_subset_accuracy():
    y = np.array([[1, 0], [0, 1], [1, -1]])
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.9]])
    attr_true = np.array([[0], [1], [-1]])
    attr_probs = [np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])]
    m = all_metrics(y, s, 0.5, attr_true, attr_probs)
    # sample 0 all right; sample 1 wrong attribute; sample 2 wrong label 0 (0.3 < 0.5)
    assert m["subset_accuracy"] == pytest.approx(1 / 3)
    assert m["label_subset_accuracy"] == pytest.approx(2 / 3)
    a = m["attributes"][0]
    assert a["accuracy"] == 0.5 and a["support"] == 2 and a["confusion_matrix"].tolist() == [[1, 0], [1, 0]]
    with pytest.raises(DataError, match="attr_true and attr_probs together"):
        all_metrics(y, s, 0.5, attr_true, None)
