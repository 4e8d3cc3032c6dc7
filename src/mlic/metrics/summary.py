"""Every figure in one call: :func:`all_metrics` (arrays) and :func:`evaluate_arrays` (a JSON report)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mlic.errors import DataError
from mlic.metrics import engine
from mlic.metrics.attributes import attribute_figures
from mlic.metrics.classification import decision_figures, exact_match, sparse_tally
from mlic.metrics.inputs import check_inputs
from mlic.metrics.ranking import check_k, label_figures, nanmean, sample_figures, weighted_mean

RANKING_KEYS = ("lrap", "ranking_loss", "coverage_error", "one_error")
LABEL_KEYS = (
    "mAP",
    "weighted_mAP",
    "macro_auroc",
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "samples_precision",
    "samples_recall",
    "samples_f1",
    "CP",
    "CR",
    "CF1",
    "OP",
    "OR",
    "OF1",
    "hamming_loss",
    "label_subset_accuracy",
    "jaccard_samples",
    *RANKING_KEYS,
)


def all_metrics(
    y_true: Any,
    y_score: Any,
    thresholds: Any = 0.5,
    attr_true: Any = None,
    attr_probs: Sequence[Any] | None = None,
    k: int | Sequence[int] = (1, 3, 5),
) -> dict[str, Any]:
    """The full set of label (and attribute) metrics in one call, sharing the work.

    One sweep over blocks of columns and one over blocks of rows (run on two
    threads) count, for each positive entry, the known negatives of its column
    and of its row scoring at or above it; every rank-based figure follows from
    these counts, and the decisions ``y_score >= thresholds`` are counted in the
    same column sweep. Unknown entries (-1) are left out of everything.

    Parameters
    ----------
    y_true : int array [n_samples, n_labels]
        1 present, 0 absent, -1 unknown.
    y_score : float array [n_samples, n_labels]
        Scores (probabilities); float32 is the fast path.
    thresholds : float or float array [n_labels], default 0.5
        A label is decided present when its score is at least its threshold,
        compared in float64 (as :func:`mlic.thresholds.apply_thresholds`).
    attr_true : int array [n_samples, n_attributes], optional
        Attribute class indices, -1 unknown.
    attr_probs : sequence of float arrays [n_samples, n_classes], optional
        One per attribute; decided by argmax.
    k : int or sequence of int, default (1, 3, 5)
        The k of ``precision_at_k``.

    Returns
    -------
    figures : dict
        Floats (NaN where undefined):

        - ``mAP``, ``weighted_mAP``: macro / support-weighted mean AP over labels
          with a known positive (:func:`~mlic.metrics.mean_average_precision`);
        - ``macro_auroc``: mean AUROC over labels with a known positive and a
          known negative (:func:`~mlic.metrics.roc_auc`);
        - ``micro_*``, ``macro_*``, ``samples_*`` precision / recall / F1,
          ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1``, ``hamming_loss``,
          ``label_subset_accuracy``, ``jaccard_samples``
          (:func:`~mlic.metrics.multilabel_scores`);
        - ``lrap``, ``ranking_loss``, ``coverage_error``, ``one_error``,
          ``precision_at_{k}`` for each k (:func:`~mlic.metrics.label_ranking_average_precision`
          and the functions beside it);

        and ``n_samples``, ``n_labels`` (ints); ``per_label``: arrays [n_labels]
        ``ap``, ``auroc``, ``precision``, ``recall``, ``f1``, ``support``,
        ``threshold``, ``tp``, ``fp``, ``fn``, ``tn``; ``labels_without_positives``
        (label indices with no known positive: no AP, AUROC, precision, recall
        or F1) and ``labels_without_negatives`` (no known negative: no AUROC),
        left out of the means rather than counted as 0; with attributes,
        ``attributes`` (one dict per attribute, see
        :func:`~mlic.metrics.attribute_scores`) and ``subset_accuracy`` (labels
        and attributes all right, :func:`~mlic.metrics.subset_accuracy`).

    Examples
    --------
    >>> m = all_metrics([[1, 0, 0], [0, 1, -1]], [[0.9, 0.2, 0.4], [0.3, 0.6, 0.8]], 0.5)
    >>> m["mAP"], m["one_error"], m["labels_without_positives"]
    (1.0, 0.0, [2])
    """
    ks = check_k(k)
    if (attr_true is None) != (attr_probs is None):
        raise DataError("all_metrics needs attr_true and attr_probs together, or neither")
    c = check_inputs(
        y_true=y_true, y_score=y_score, thresholds=thresholds, attr_true=attr_true, attr_probs=attr_probs
    )
    y, s, thr = c["y_true"], c["y_score"], c["thresholds"]
    n, n_labels = y.shape
    pos = engine.positives(y, s)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the row sweep beside the column sweep
        rows = pool.submit(engine.row_counts, y, s, pos)
        cc = engine.column_counts(y, s, pos, thr)
        rc = rows.result()
    tally = sparse_tally(pos, cc, thr)
    out: dict[str, Any] = {"n_samples": int(n), "n_labels": int(n_labels)}
    labels = label_figures(cc, pos, n)
    out["mAP"] = nanmean(labels["ap"])
    out["weighted_mAP"] = weighted_mean(labels["ap"], pos.per_col)
    out["macro_auroc"] = nanmean(labels["auroc"])
    decisions = decision_figures(tally)
    out |= {key: v for key, v in decisions.items() if key not in ("per_label", "labels_without_positives")}
    out |= sample_figures(rc, pos, n_labels, ks)
    out["per_label"] = {"ap": labels["ap"], "auroc": labels["auroc"]} | decisions["per_label"]
    out["per_label"]["threshold"] = thr
    out["labels_without_positives"] = decisions["labels_without_positives"]
    out["labels_without_negatives"] = np.flatnonzero(labels["negatives"] == 0).tolist()
    if "attr_true" in c:
        out["attributes"] = [
            attribute_figures(c["attr_true"][:, j], p) for j, p in enumerate(c["attr_probs"])
        ]
        attr_pred = _argmax(c["attr_probs"], n)
        out["subset_accuracy"] = exact_match(
            tally["known_rows"], tally["wrong_rows"], c["attr_true"], attr_pred
        )
    return out


def _argmax(probs: list[np.ndarray], n: int) -> np.ndarray:
    return np.stack([p.argmax(axis=1) for p in probs], axis=1) if probs else np.zeros((n, 0), np.int64)


def evaluate_arrays(
    schema: Any,
    label_true: Any,
    label_score: Any,
    attr_true: Any,
    attr_probs: Any,
    thresholds: Any,
    k: int | Sequence[int] = (1, 3, 5),
) -> dict[str, Any]:
    """All metrics of a model's outputs on one data set, as a JSON-serialisable dict.

    The figures of :func:`all_metrics` (labels decided by ``label_score >=
    thresholds``, attributes by argmax), keyed by the schema's names. Undefined
    figures are None, never NaN; the label figures are None when the schema has no
    labels.

    ``schema`` is a :class:`~mlic.schema.LabelSchema`; ``label_true``,
    ``label_score`` are [n_samples, n_labels] and ``attr_true`` [n_samples,
    n_attributes] as elsewhere here, ``attr_probs`` one [n_samples, n_classes] array
    per attribute (None where the schema has none); ``thresholds`` a float or
    [n_labels] (None: 0.5). Keys: ``n_samples``; the floats of :func:`all_metrics`
    (``mAP``, ``weighted_mAP``, ``macro_auroc``, ``micro_f1``, ``macro_f1``,
    ``micro_precision``, ``micro_recall``, ``macro_precision``, ``macro_recall``,
    ``samples_*``, ``CP`` ... ``OF1``, ``hamming_loss``, ``label_subset_accuracy``,
    ``jaccard_samples``, ``lrap``, ``ranking_loss``, ``coverage_error``,
    ``one_error``, ``precision_at_{k}``); ``subset_accuracy`` (labels and
    attributes); ``attributes`` ({name: {accuracy, macro_f1, confusion_matrix
    (nested lists), support}}); ``per_label`` ({label: {ap, auroc, precision,
    recall, f1, support, threshold}}); ``labels_without_positives`` and
    ``labels_without_negatives`` (label names).
    """
    has_labels, has_attrs = schema.n_labels > 0, schema.n_attributes > 0
    given = {"label_true": label_true, "label_score": label_score} if has_labels else {}
    given |= {"attr_true": attr_true, "attr_probs": attr_probs} if has_attrs else {}
    if any(v is None for v in given.values()):
        raise DataError(
            f"the schema has {schema.n_labels} labels and {schema.n_attributes} attributes; "
            f"expected arrays for {list(given)}"
        )
    ks = check_k(k)
    c = check_inputs(
        y_true=given.get("label_true"),
        y_score=given.get("label_score"),
        thresholds=(0.5 if thresholds is None else thresholds) if has_labels else None,
        attr_true=given.get("attr_true"),
        attr_probs=given.get("attr_probs"),
        argnames={"y_true": "label_true", "y_score": "label_score"},
    )
    widths = [c[key].shape[1] for key in ("y_true", "attr_true") if key in c] + [
        p.shape[1] for p in c.get("attr_probs", [])
    ]
    expected = [schema.n_labels] * has_labels + [schema.n_attributes] * has_attrs
    expected += [len(a.classes) for a in schema.attributes]
    if widths != expected:
        raise DataError(
            f"the columns of {[key for key in given if key != 'label_score']} are {widths}; expected "
            f"{expected} for this schema (labels, attributes, classes per attribute)"
        )
    n = next(v.shape[0] for v in c.values() if isinstance(v, np.ndarray) and v.ndim == 2)
    report: dict[str, Any] = {"n_samples": int(n)}
    keys = [*LABEL_KEYS, *(f"precision_at_{k}" for k in ks)]
    attr_true, attr_probs = c.get("attr_true"), c.get("attr_probs")
    if has_labels:
        m = all_metrics(c["y_true"], c["y_score"], c["thresholds"], attr_true, attr_probs, k=ks)
        report.update({key: _json(m[key]) for key in keys})
        per = m["per_label"]
        fields = ("ap", "auroc", "precision", "recall", "f1", "support", "threshold")
        report["per_label"] = {
            name: {f: _json(per[f][j]) for f in fields} for j, name in enumerate(schema.labels)
        }
        for key in ("labels_without_positives", "labels_without_negatives"):
            report[key] = [schema.labels[j] for j in m[key]]
        attributes = m.get("attributes", [])
        subset = m.get("subset_accuracy", m["label_subset_accuracy"])
    else:
        report.update(dict.fromkeys(keys))
        report |= {"per_label": {}, "labels_without_positives": [], "labels_without_negatives": []}
        attributes = [attribute_figures(attr_true[:, j], p) for j, p in enumerate(attr_probs or [])]
        zeros = np.zeros(n, np.int64)
        subset = exact_match(zeros, zeros, attr_true, _argmax(attr_probs, n)) if has_attrs else float("nan")
    report["attributes"] = {
        name: {key: v.tolist() if key == "confusion_matrix" else _json(v) for key, v in a.items()}
        for name, a in zip(schema.attribute_names, attributes, strict=True)
    }
    report["subset_accuracy"] = _json(subset)
    return report


def _json(x: Any) -> float | int | None:
    """A plain Python number, or None for NaN."""
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return None if np.isnan(x) else x
