"""mlic.metrics checked against scikit-learn, against naive loops, and by properties."""

from __future__ import annotations

import json

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
    average_precision,
    check_inputs,
    evaluate_arrays,
    label_counts,
    mean_average_precision,
    multilabel_scores,
    subset_accuracy,
)
from mlic.schema import Attribute, LabelSchema


def make_case(name: str, seed: int = 0, n: int = 60, n_labels: int = 7):
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


CASES = ["random", "ties", "zero_column", "single_sample", "all_positive_column"]


def sk_ap(y, s):
    """scikit-learn's AP per label over known entries; NaN without a known positive."""
    out = []
    for j in range(y.shape[1]):
        m = y[:, j] >= 0
        out.append(skm.average_precision_score(y[m, j], s[m, j]) if (y[m, j] == 1).any() else np.nan)
    return np.array(out)


# -- average precision ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [*CASES, "unknowns"])
def test_average_precision_matches_sklearn(case):
    y, s = make_case(case)
    np.testing.assert_allclose(average_precision(y, s), sk_ap(y, s), rtol=0, atol=1e-9)


def test_average_precision_hand_example_with_ties():
    # Scores 0.8 tie between a positive and a negative: one threshold, precision 2/3 there.
    y = np.array([[1], [1], [0], [0]])
    s = np.array([[0.9], [0.8], [0.8], [0.1]])
    assert average_precision(y, s)[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_nan_without_positive_and_one_with_only_positives():
    y = np.array([[0, 1, -1], [0, 1, 0], [0, 1, 0]])
    ap = average_precision(y, np.random.default_rng(1).random((3, 3)))
    assert np.isnan(ap[0]) and ap[1] == 1.0 and np.isnan(ap[2])


def test_unknown_entries_do_not_matter():
    y, s = make_case("unknowns", seed=3)
    s2 = s.copy()
    s2[y == -1] = np.random.default_rng(0).random(int((y == -1).sum()))
    np.testing.assert_allclose(average_precision(y, s), average_precision(y, s2), atol=1e-12)


def test_average_precision_blocks_agree(monkeypatch):
    import mlic.metrics as m

    y, s = make_case("unknowns", seed=4)
    whole = average_precision(y, s)
    monkeypatch.setattr(m, "_BLOCK_ELEMENTS", 2 * y.shape[0])  # two columns per block
    np.testing.assert_array_equal(average_precision(y, s), whole)


def test_mean_average_precision():
    y, s = make_case("zero_column")
    ap = sk_ap(y, s)
    assert mean_average_precision(y, s) == pytest.approx(np.nanmean(ap), abs=1e-12)
    assert np.isnan(mean_average_precision(np.zeros((3, 2), int), np.ones((3, 2))))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int8, (n, 3), elements=st.sampled_from([-1, 0, 1])),
            hnp.arrays(np.float64, (n, 3), elements=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
        )
    )
)
def test_average_precision_property_matches_sklearn(arrays):
    y, s = arrays
    np.testing.assert_allclose(average_precision(y, s), sk_ap(y, s), rtol=0, atol=1e-9)
    # Reordering the samples does not change AP.
    perm = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_allclose(average_precision(y[perm], s[perm]), average_precision(y, s), atol=1e-12)


# -- thresholded scores -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threshold", [0.5, "per_label"])
def test_multilabel_scores_match_sklearn(case, threshold):
    y, s = make_case(case)
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
    y, s = make_case("unknowns", seed=5)
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
    y, s = make_case("random")
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


def test_attribute_scores():
    y, probs = make_attributes()
    y[:5, 0] = -1
    y[:, 1] = -1
    r = attribute_scores(y, probs, ["size", "colour"])
    m = y[:, 0] >= 0
    assert r["size"]["accuracy"] == pytest.approx(skm.accuracy_score(y[m, 0], probs[0][m].argmax(1)))
    assert r["size"]["support"] == 45
    assert np.isnan(r["colour"]["accuracy"]) and r["colour"]["support"] == 0


def one_hot(y, n_classes):
    return np.concatenate([np.eye(c, dtype=int)[y[:, j]] for j, c in enumerate(n_classes)], axis=1)


def test_subset_accuracy_matches_sklearn_without_unknowns():
    y, s = make_case("random", n=50, n_labels=3)
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


# -- the report -----------------------------------------------------------------------------------
def test_evaluate_arrays_labels_and_attributes():
    schema = LabelSchema(("a", "b", "c"), (Attribute("size", ("s", "m", "l")), Attribute("tone", ("x", "y"))))
    y, s = make_case("zero_column", n=40, n_labels=3)
    ya, probs = make_attributes(n=40)
    r = evaluate_arrays(schema, y, s, ya, probs, np.array([0.5, 0.4, 0.6]))
    json.dumps(r, allow_nan=False)
    assert set(r) == {
        "n_samples", "mAP", "micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision",
        "macro_recall", "hamming_loss", "subset_accuracy", "attributes", "per_label",
        "labels_without_positives",
        # added with all_metrics:
        "weighted_mAP", "macro_auroc", "samples_precision", "samples_recall", "samples_f1",
        "CP", "CR", "CF1", "OP", "OR", "OF1", "label_subset_accuracy", "jaccard_samples",
        "lrap", "ranking_loss", "coverage_error", "one_error", "precision_at_1", "precision_at_3",
        "precision_at_5", "labels_without_negatives",
    }  # fmt: skip
    assert r["n_samples"] == 40 and r["labels_without_positives"] == ["b", "c"]
    assert r["per_label"]["c"]["ap"] is None and r["per_label"]["c"]["f1"] is None
    assert r["per_label"]["b"]["threshold"] == 0.4 and r["per_label"]["a"]["f1"] is not None
    assert isinstance(r["per_label"]["a"]["support"], int)
    m = multilabel_scores(y, s, [0.5, 0.4, 0.6])
    assert r["macro_f1"] == pytest.approx(m["macro_f1"]) and r["mAP"] == pytest.approx(m["mAP"])
    assert r["attributes"]["size"]["support"] == 40
    pa = np.stack([p.argmax(1) for p in probs], axis=1)
    assert r["subset_accuracy"] == pytest.approx(subset_accuracy(y, s >= [0.5, 0.4, 0.6], ya, pa))
    a = all_metrics(y, s, [0.5, 0.4, 0.6], ya, probs)
    for key in ("lrap", "one_error", "CF1", "jaccard_samples", "macro_auroc", "precision_at_3"):
        assert r[key] == pytest.approx(a[key])
    assert r["per_label"]["a"]["auroc"] == pytest.approx(a["per_label"]["auroc"][0])
    assert r["per_label"]["c"]["auroc"] is None and r["labels_without_negatives"] == []
    size = r["attributes"]["size"]
    assert size["confusion_matrix"] == a["attributes"][0]["confusion_matrix"].tolist()
    assert (
        isinstance(size["confusion_matrix"][0][0], int) and size["macro_f1"] == a["attributes"][0]["macro_f1"]
    )


def test_evaluate_arrays_labels_only_and_attributes_only():
    y, s = make_case("random", n=20, n_labels=2)
    r = evaluate_arrays(LabelSchema(("a", "b")), y, s, None, None, 0.5)
    json.dumps(r, allow_nan=False)
    assert r["attributes"] == {} and r["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, s >= 0.5))
    ya, probs = make_attributes(n=20)
    schema = LabelSchema((), (Attribute("size", ("s", "m", "l")), Attribute("tone", ("x", "y"))))
    r = evaluate_arrays(schema, None, None, ya, probs, None)
    json.dumps(r, allow_nan=False)
    assert r["mAP"] is None and r["macro_f1"] is None and r["per_label"] == {}
    assert r["lrap"] is None and r["labels_without_negatives"] == []
    assert r["subset_accuracy"] == pytest.approx(
        np.mean((ya == np.stack([p.argmax(1) for p in probs], 1)).all(1))
    )
    assert r["n_samples"] == 20 and set(r["attributes"]) == {"size", "tone"}
    r = evaluate_arrays(schema, np.zeros((20, 0), int), np.zeros((20, 0)), ya, probs, None)
    assert r["mAP"] is None


def test_evaluate_arrays_checks_against_the_schema():
    schema = LabelSchema(("a", "b"), (Attribute("size", ("s", "m", "l")),))
    y, s = make_case("random", n=10, n_labels=3)
    ya, probs = make_attributes(n=10, classes=(3,))
    with pytest.raises(DataError, match="expected"):
        evaluate_arrays(schema, y, s, ya, probs, 0.5)
    with pytest.raises(DataError, match="expected arrays for"):
        evaluate_arrays(schema, y[:, :2], s[:, :2], None, None, 0.5)
    with pytest.raises(DataError, match="classes per attribute"):
        evaluate_arrays(schema, y[:, :2], s[:, :2], ya, [np.hstack([probs[0], probs[0]])], 0.5)


# -- input errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: average_precision(np.array([1, 0]), np.array([0.2, 0.3])), r"y_true must be a 2-D array"),
        (lambda: average_precision(np.ones((3, 2)), np.ones((3, 3))), r"y_score has shape \(3, 3\)"),
        (lambda: average_precision([[1, 2]], [[0.1, 0.2]]), r"y_true must hold 1 \(present\).*2 at \[0, 1\]"),
        (lambda: average_precision([[1, 0.5]], [[0.1, 0.2]]), r"y_true must hold .*found 0.5"),
        (lambda: average_precision([[1, 0]], [[np.nan, 0.2]]), r"y_score must hold finite scores; found nan"),
        (lambda: average_precision([[1, 0]], [["a", "b"]]), r"y_score must hold real numbers; got dtype"),
        (lambda: multilabel_scores([[1, 0]], [[0.1, 0.2]], [0.5]), r"thresholds must be .*= \[2\]"),
        (lambda: multilabel_scores([[1, 0]], [[0.1, 0.2]], np.nan), r"thresholds must not hold NaN"),
        (lambda: label_counts([[1, 0]], [[2, 0]]), r"y_pred must hold 0 or 1"),
        (lambda: attribute_scores([[3]], [np.ones((1, 3))], ["a"]), r"y_true\[:, 0\] holds class 3.*below 3"),
        (lambda: attribute_scores([[0]], [np.ones((1, 3))] * 2, ["a"]), r"probs has 2 arrays; expected one"),
        (lambda: attribute_scores([[0]], [np.ones((1, 3))], ["a", "b"]), r"names has 2 names"),
        (lambda: attribute_scores([[-2]], [np.ones((1, 3))], ["a"]), r"y_true must hold class indices"),
        (lambda: attribute_scores([[0.0]], [np.ones((1, 3))], ["a"]), r"y_true must hold integers"),
        (lambda: attribute_scores([[0], [1]], [np.ones((1, 3))], ["a"]), r"different numbers of samples"),
        (lambda: subset_accuracy([[1]], [[True]], [[0]], [[0], [1]]), r"attr_pred has shape"),
    ],
)  # fmt: skip
def test_errors_name_the_argument_and_expectation(call, match):
    with pytest.raises(DataError, match=match):
        call()


def test_check_inputs_returns_clean_arrays():
    c = check_inputs(y_true=[[1.0, -1.0]], y_score=np.array([[1, 0]]), y_pred=[[1, 0]], thresholds=0.3)
    assert c["y_true"].dtype == np.int8 and c["y_score"].dtype == np.float64 and c["y_pred"].dtype == bool
    np.testing.assert_array_equal(c["thresholds"], [0.3, 0.3])
    assert check_inputs(y_score=np.ones((2, 2), np.float32))["y_score"].dtype == np.float32
    assert isinstance(DataError("x"), ValueError)


@pytest.mark.parametrize("module", ["_attributes", "_classification", "_ranking", "_summary"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"mlic.metrics.{module}"))
    assert result.failed == 0 and (result.attempted > 0 or module == "_classification")
