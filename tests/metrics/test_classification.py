"""Decision metrics and attributes of mlic.metrics against scikit-learn and naive loops.

With nothing unknown the reference is scikit-learn on the whole matrix; with
unknowns, scikit-learn on each label's (or sample's) known entries. The papers'
CP/CR/CF1/OP/OR/OF1 are checked against their definitions, written out in loops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from helpers import block_elements, targets_and_scores
from mlic.errors import DataError
from mlic.metrics import (
    all_metrics,
    hamming_loss,
    jaccard_samples,
    label_counts,
    multilabel_scores,
    papers_scores,
    precision_recall_f1,
    subset_accuracy,
)

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


def simple_case(name: str, seed: int = 0, n: int = 60, n_labels: int = 7):
    """Targets and scores for one named situation."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.3).astype(np.int8)
    s = np.clip(0.6 * y + 0.7 * rng.random((n, n_labels)), 0, 1)
    if name == "ties":
        s = np.round(s, 1)
    elif name == "zero_column":
        y[:, 1::3] = 0  # columns 1, 4, ...
        y[:, -1] = 0
    elif name == "single_sample":
        y, s = y[:1], s[:1]
    elif name == "unknowns":
        y[rng.random(y.shape) < 0.25] = -1
        y[:, 3] = -1  # a label with nothing known
        s = np.round(s, 1)
    elif name == "all_positive_column":
        y[:, 0] = 1
    return y, s


SIMPLE_CASES = ["random", "ties", "zero_column", "single_sample", "all_positive_column"]


def sk_ap(y, s):
    """scikit-learn's AP per label over known entries; NaN without a known positive."""
    out = []
    for j in range(y.shape[1]):
        m = y[:, j] >= 0
        out.append(skm.average_precision_score(y[m, j], s[m, j]) if (y[m, j] == 1).any() else np.nan)
    return np.array(out)


# -- thresholded scores -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", SIMPLE_CASES)
@pytest.mark.parametrize("threshold", [0.5, "per_label"])
def test_multilabel_scores_match_sklearn(case, threshold):
    y, s = simple_case(case)
    thr = 0.5 if threshold == 0.5 else np.linspace(0.3, 0.7, y.shape[1])
    pred = (s >= thr).astype(int)
    r = multilabel_scores(y, s, thr)
    with_pos = np.flatnonzero((y == 1).any(axis=0))
    for avg in ("micro", "macro"):
        labels = with_pos if avg == "macro" else None
        p, rec, f1, _ = skm.precision_recall_fscore_support(
            y, pred, average=avg, labels=labels, zero_division=0
        )
        assert r[f"{avg}_precision"] == pytest.approx(p, abs=1e-12)
        assert r[f"{avg}_recall"] == pytest.approx(rec, abs=1e-12)
        assert r[f"{avg}_f1"] == pytest.approx(f1, abs=1e-12)
    assert r["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert r["label_subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["mAP"] == pytest.approx(np.nanmean(sk_ap(y, s)), abs=1e-12)
    p, rec, f1, support = skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    per = r["per_label"]
    np.testing.assert_array_equal(per["support"], support)
    for key, ref in (("precision", p), ("recall", rec), ("f1", f1)):
        np.testing.assert_allclose(per[key][with_pos], ref[with_pos], atol=1e-12)
        assert np.isnan(np.delete(per[key], with_pos)).all()
    np.testing.assert_array_equal(per["threshold"], np.broadcast_to(thr, (y.shape[1],)))
    assert r["labels_without_positives"] == sorted(set(range(y.shape[1])) - set(with_pos.tolist()))


def test_multilabel_scores_with_unknowns_count_known_entries_only():
    y, s = simple_case("unknowns", seed=5)
    thr = 0.45
    r = multilabel_scores(y, s, thr)
    known = y >= 0
    yk, pk = y[known], (s >= thr)[known]  # known entries of every label, flattened
    assert r["micro_precision"] == pytest.approx(skm.precision_score(yk, pk, zero_division=0))
    assert r["micro_recall"] == pytest.approx(skm.recall_score(yk, pk, zero_division=0))
    assert r["micro_f1"] == pytest.approx(skm.f1_score(yk, pk, zero_division=0))
    assert r["hamming_loss"] == pytest.approx(1 - skm.accuracy_score(yk, pk))
    per_label = {"precision": [], "recall": [], "f1": []}
    for j in range(y.shape[1]):
        m = known[:, j]
        if not (y[m, j] == 1).any():
            continue
        yt, yp = y[m, j], s[m, j] >= thr
        per_label["precision"].append(skm.precision_score(yt, yp, zero_division=0))
        per_label["recall"].append(skm.recall_score(yt, yp, zero_division=0))
        per_label["f1"].append(skm.f1_score(yt, yp, zero_division=0))
    for key, values in per_label.items():
        assert r[f"macro_{key}"] == pytest.approx(np.mean(values))
    rows = [i for i in range(len(y)) if known[i].any()]
    naive = np.mean(
        [all((s[i, j] >= thr) == (y[i, j] == 1) for j in range(y.shape[1]) if known[i, j]) for i in rows]
    )
    assert r["label_subset_accuracy"] == pytest.approx(naive)
    assert 3 in r["labels_without_positives"]
    assert r["per_label"]["support"][3] == 0


def test_multilabel_scores_undefined_figures_are_nan():
    r = multilabel_scores(np.full((2, 2), -1), np.zeros((2, 2)), 0.5)
    for key in ("mAP", "macro_f1", "hamming_loss", "label_subset_accuracy"):
        assert np.isnan(r[key])
    assert r["micro_f1"] == 0.0  # zero_division=0, as in scikit-learn


def test_empty_inputs():
    r = multilabel_scores(np.zeros((3, 0), int), np.zeros((3, 0)), 0.5)
    assert np.isnan(r["mAP"]) and r["per_label"]["ap"].shape == (0,)
    r = multilabel_scores(np.zeros((0, 2), int), np.zeros((0, 2)), 0.5)
    assert np.isnan(r["hamming_loss"]) and r["labels_without_positives"] == [0, 1]


def test_label_counts_match_confusion_matrix():
    y, s = simple_case("random")
    pred = s >= 0.5
    c = label_counts(y, pred)
    mcm = skm.multilabel_confusion_matrix(y, pred)  # [L, 2, 2]: [[tn, fp], [fn, tp]]
    for key, (i, j) in {"tn": (0, 0), "fp": (0, 1), "fn": (1, 0), "tp": (1, 1)}.items():
        np.testing.assert_array_equal(c[key], mcm[:, i, j])
        assert c[key].dtype == np.int64
    y[0, :] = -1
    c2 = label_counts(y, pred.astype(int))
    total = sum(c2[k] for k in ("tp", "fp", "fn", "tn"))
    np.testing.assert_array_equal(total, (y >= 0).sum(axis=0))


# -- attributes and whole samples -----------------------------------------------------------------
def make_attributes(seed=0, n=50, classes=(3, 2)):
    rng = np.random.default_rng(seed)
    y = np.stack([rng.integers(0, c, n) for c in classes], axis=1)
    probs = [rng.dirichlet(np.ones(c), n) for c in classes]
    return y, probs


def one_hot(y, n_classes):
    return np.concatenate([np.eye(c, dtype=int)[y[:, j]] for j, c in enumerate(n_classes)], axis=1)


def test_subset_accuracy_matches_sklearn_without_unknowns():
    y, s = simple_case("random", n=50, n_labels=3)
    ya, probs = make_attributes(n=50)
    pred, pa = s >= 0.5, np.stack([p.argmax(1) for p in probs], axis=1)
    # Make about half the samples right everywhere, so the figure is not trivially 0.
    pred[::2], pa[::2] = y[::2] == 1, ya[::2]
    ref = skm.accuracy_score(
        np.concatenate([y, one_hot(ya, (3, 2))], axis=1), np.concatenate([pred, one_hot(pa, (3, 2))], axis=1)
    )
    assert subset_accuracy(y, pred, ya, pa) == pytest.approx(ref)
    assert subset_accuracy(y, pred, None, None) == pytest.approx(skm.accuracy_score(y, pred))
    assert subset_accuracy(None, None, ya, pa) == pytest.approx(np.mean((ya == pa).all(axis=1)))


def test_subset_accuracy_with_unknowns_matches_naive_loop():
    y = np.array([[1, -1], [-1, -1], [0, 1], [1, 0]])
    pred = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=bool)
    ya = np.array([[2], [-1], [-1], [0]])
    pa = np.array([[2], [0], [1], [1]])
    # sample 0 right, sample 1 has nothing known (left out), sample 2 wrong label, sample 3 wrong attribute
    assert subset_accuracy(y, pred, ya, pa) == pytest.approx(1 / 3)
    assert np.isnan(subset_accuracy(np.full((2, 2), -1), np.ones((2, 2)), None, None))
    with pytest.raises(DataError, match="both or neither"):
        subset_accuracy(y, None, ya, pa)
