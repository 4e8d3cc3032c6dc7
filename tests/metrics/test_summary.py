"""Tests of mlic.metrics.summary: every figure at once, as arrays and as a JSON report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from mlic.errors import DataError
from mlic.metrics import (
    all_metrics,
    evaluate_arrays,
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


# -- attributes and whole samples -----------------------------------------------------------------
def make_attributes(seed=0, n=50, classes=(3, 2)):
    rng = np.random.default_rng(seed)
    y = np.stack([rng.integers(0, c, n) for c in classes], axis=1)
    probs = [rng.dirichlet(np.ones(c), n) for c in classes]
    return y, probs


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
