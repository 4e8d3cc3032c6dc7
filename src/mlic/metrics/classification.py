"""Decision metrics: precision, recall, F1 (micro, macro, per sample, per label, and the papers'
CP/CR/CF1/OP/OR/OF1), Hamming loss, subset accuracy, Jaccard; all over known entries only."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlic.errors import DataError
from mlic.metrics import engine
from mlic.metrics.blocks import column_blocks
from mlic.metrics.inputs import check_inputs
from mlic.metrics.ranking import label_figures, nanmean, prepare

_DEFINITIONS = """
    Decisions are compared with the known entries only (-1 is left out). Per
    label: precision = tp / (tp + fp), recall = tp / (tp + fn), F1 = 2 tp /
    (2 tp + fp + fn), each 0 when its denominator is 0 (scikit-learn's
    ``zero_division=0``), NaN for labels with no known positive, which are left
    out of macro means and listed. ``micro``: the same formulas on tp, fp, fn
    summed over labels. ``samples``: the same per sample over its known labels,
    averaged over samples with a known entry.
"""


def _ratio(num: Any, den: Any) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _tally(y_true: np.ndarray, y_pred=None, y_score=None, thresholds=None) -> dict[str, np.ndarray]:
    """Per-label tp, fp, fn, tn and per-sample counts over known entries, from dense decisions.

    Decisions are ``y_pred``, or ``y_score >= thresholds`` block by block. Row keys:
    ``known_rows``, ``wrong_rows`` (fp + fn), ``tp_rows``, ``fp_rows``, ``fn_rows``.
    """
    n, n_labels = y_true.shape
    out = {k: np.zeros(n_labels, np.int64) for k in ("tp", "fp", "fn", "tn")}
    rows = {k: np.zeros(n, np.int64) for k in ("known_rows", "tp_rows", "fp_rows", "fn_rows")}
    for cols in column_blocks(n, n_labels):
        t = y_true[:, cols]
        p = y_pred[:, cols] if y_pred is not None else y_score[:, cols] >= thresholds[cols]
        pos, neg = t == 1, t == 0
        for key, hit in (("tp", pos & p), ("fp", neg & p), ("fn", pos & ~p), ("tn", neg & ~p)):
            out[key][cols] = hit.sum(axis=0)
            if key != "tn":
                rows[f"{key}_rows"] += hit.sum(axis=1)
        rows["known_rows"] += (pos | neg).sum(axis=1)
    return out | rows | {"wrong_rows": rows["fp_rows"] + rows["fn_rows"]}


def sparse_tally(pos: engine.Positives, cc: engine.ColumnCounts, thresholds: np.ndarray) -> dict:
    """The same counts as :func:`_tally` from the engine: tp from the positives, fp from the sweep."""
    n, n_labels = pos.per_row.size, pos.per_col.size
    hit = pos.values >= thresholds[pos.cols]
    tp = np.bincount(pos.cols[hit], minlength=n_labels)
    tp_rows = np.bincount(pos.rows[hit], minlength=n)
    negatives = n - pos.unknown_cols - pos.per_col
    fn_rows = pos.per_row - tp_rows
    return {
        "tp": tp,
        "fp": cc.fp_cols,
        "fn": pos.per_col - tp,
        "tn": negatives - cc.fp_cols,
        "known_rows": n_labels - pos.unknown_rows,
        "tp_rows": tp_rows,
        "fp_rows": cc.fp_rows,
        "fn_rows": fn_rows,
        "wrong_rows": cc.fp_rows + fn_rows,
    }


def decision_figures(t: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every decision figure from a tally (see :func:`multilabel_scores` for the keys)."""
    tp, fp, fn = t["tp"], t["fp"], t["fn"]
    support = tp + fn
    scored = support > 0
    undefined = np.where(scored, 1.0, np.nan)
    precision = _ratio(tp, tp + fp) * undefined
    recall = _ratio(tp, support) * undefined
    f1 = _ratio(2 * tp, 2 * tp + fp + fn) * undefined
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    known, tp_r, fp_r, fn_r = t["known_rows"], t["tp_rows"], t["fp_rows"], t["fn_rows"]
    used = known > 0

    def mean_rows(x: np.ndarray) -> float:
        return float(x[used].mean()) if used.any() else float("nan")

    cp, cr = nanmean(precision), nanmean(recall)
    out = {
        "micro_precision": float(_ratio(TP, TP + FP)),
        "micro_recall": float(_ratio(TP, TP + FN)),
        "micro_f1": float(_ratio(2 * TP, 2 * TP + FP + FN)),
        "macro_precision": cp,
        "macro_recall": cr,
        "macro_f1": nanmean(f1),
        "samples_precision": mean_rows(_ratio(tp_r, tp_r + fp_r)),
        "samples_recall": mean_rows(_ratio(tp_r, tp_r + fn_r)),
        "samples_f1": mean_rows(_ratio(2 * tp_r, 2 * tp_r + fp_r + fn_r)),
        "jaccard_samples": mean_rows(_ratio(tp_r, tp_r + fp_r + fn_r)),
        "hamming_loss": float(t["wrong_rows"].sum() / known.sum()) if known.sum() else float("nan"),
        "label_subset_accuracy": mean_rows(t["wrong_rows"] == 0),
    }
    out |= {
        "CP": cp,
        "CR": cr,
        "CF1": float("nan") if np.isnan(cp + cr) else float(_ratio(2 * cp * cr, cp + cr)),
        "OP": out["micro_precision"],
        "OR": out["micro_recall"],
        "OF1": out["micro_f1"],
        "per_label": dict(precision=precision, recall=recall, f1=f1, support=support)
        | {k: t[k] for k in ("tp", "fp", "fn", "tn")},
        "labels_without_positives": np.flatnonzero(~scored).tolist(),
    }
    return out


def _dense(y_true: Any, y_pred: Any) -> dict[str, Any]:
    c = check_inputs(y_true=y_true, y_pred=y_pred)
    return decision_figures(_tally(c["y_true"], y_pred=c["y_pred"]))


def label_counts(y_true: Any, y_pred: Any) -> dict[str, np.ndarray]:
    """True/false positives/negatives of each label over its known entries.

    ``y_true`` is int [n_samples, n_labels] (1, 0, -1 unknown: left out); ``y_pred``
    bool or {0, 1} of the same shape. Returns int64 arrays [n_labels] under
    ``"tp"``, ``"fp"``, ``"fn"``, ``"tn"``.
    """
    c = check_inputs(y_true=y_true, y_pred=y_pred)
    t = _tally(c["y_true"], y_pred=c["y_pred"])
    return {k: t[k] for k in ("tp", "fp", "fn", "tn")}


def precision_recall_f1(y_true: Any, y_pred: Any, average: str | None = None) -> dict[str, Any]:
    """Precision, recall and F1 of multi-label decisions.

    ``average``: None (per label: float64 arrays [n_labels], plus ``"support"``,
    the known positives), ``"micro"``, ``"macro"`` or ``"samples"`` (floats).
    With nothing unknown these equal
    ``sklearn.metrics.precision_recall_fscore_support(average=..., zero_division=0)``,
    macro restricted to the labels with a positive (``labels=...``).

    Returns ``{"precision", "recall", "f1"}`` (and ``"support"`` for ``average=None``).
    """
    if average not in (None, "micro", "macro", "samples"):
        raise DataError(f"average must be None, 'micro', 'macro' or 'samples'; got {average!r}")
    m = _dense(y_true, y_pred)
    if average is None:
        return {k: m["per_label"][k] for k in ("precision", "recall", "f1", "support")}
    return {k: m[f"{average}_{k}"] for k in ("precision", "recall", "f1")}


def papers_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """The figures multi-label papers print: CP, CR, CF1, OP, OR, OF1.

    - CP, CR: per-class (macro) precision and recall, means over labels with a
      known positive;
    - CF1 = 2 CP CR / (CP + CR), the papers' definition, which is NOT the mean
      of per-class F1 (that is ``macro_f1``); 0 when CP + CR is 0;
    - OP, OR, OF1: overall (micro) precision, recall and F1.
    """
    m = _dense(y_true, y_pred)
    return {k: m[k] for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")}


def hamming_loss(y_true: Any, y_pred: Any) -> float:
    """Share of wrong decisions among known entries (:func:`sklearn.metrics.hamming_loss`).

    NaN when nothing is known.
    """
    return _dense(y_true, y_pred)["hamming_loss"]


def jaccard_samples(y_true: Any, y_pred: Any) -> float:
    """Mean over samples of |true and predicted| / |true or predicted|, over known labels.

    A sample with neither a relevant nor a predicted label scores 0
    (``sklearn.metrics.jaccard_score(average="samples", zero_division=0)``).
    """
    return _dense(y_true, y_pred)["jaccard_samples"]


def multilabel_scores(y_true: Any, y_score: Any, thresholds: Any) -> dict[str, Any]:
    """Threshold-free and thresholded scores of a multi-label classifier.

    Decisions are ``y_score >= thresholds``. Over known entries only:

    - per label: precision = tp / (tp + fp), recall = tp / (tp + fn),
      F1 = 2 tp / (2 tp + fp + fn), each 0 when its denominator is 0
      (``zero_division=0``), and NaN with the AP for labels with no known positive;
    - ``macro_*``: mean of the per-label values over labels with a known positive;
      equals scikit-learn's ``average="macro"`` restricted to those labels;
    - ``micro_*``: the same formulas on tp, fp, fn summed over all labels
      (scikit-learn's ``average="micro"`` when nothing is unknown);
    - ``samples_*``, ``jaccard_samples``: per sample, averaged over samples
      with a known label (``average="samples"``);
    - ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1``: see :func:`papers_scores`;
    - ``hamming_loss``: wrong known entries / known entries;
    - ``label_subset_accuracy``: share of samples whose known labels are all right,
      over samples with at least one known label.

    Undefined figures (no known positive, no known entry) are NaN.

    ``y_true`` is int [n_samples, n_labels] (1, 0, -1 unknown), ``y_score`` float of
    the same shape, ``thresholds`` a float or [n_labels]. Returns a dict with
    ``"mAP"`` and the figures above (floats); ``"per_label"``: arrays [n_labels]
    ``"ap"``, ``"precision"``, ``"recall"``, ``"f1"``, ``"support"`` (known
    positives), ``"threshold"``, ``"tp"``, ``"fp"``, ``"fn"``, ``"tn"``;
    ``"labels_without_positives"``: label indices.
    """
    c, pos = prepare(y_true, y_score, thresholds)
    y, s, thr = c["y_true"], c["y_score"], c["thresholds"]
    cc = engine.column_counts(y, s, pos, thr)
    out = decision_figures(sparse_tally(pos, cc, thr))
    ap = label_figures(cc, pos, y.shape[0])["ap"]
    out["mAP"] = nanmean(ap)
    out["per_label"] |= {"ap": ap, "threshold": thr}
    return out


def subset_accuracy(label_true: Any, label_pred: Any, attr_true: Any, attr_pred: Any) -> float:
    """Share of samples whose known labels and known attributes are all right.

    Samples with nothing known are left out; NaN when no sample is left. When
    nothing is unknown this equals :func:`sklearn.metrics.accuracy_score` on the
    label indicators concatenated with the one-hot attributes.

    ``label_true`` int [n_samples, n_labels] (1, 0, -1 unknown) and ``label_pred``
    bool of the same shape; ``attr_true`` int [n_samples, n_attributes] class
    indices (-1 unknown) and ``attr_pred`` predicted indices. A pair may be None
    when there are no labels, or no attributes.
    """
    c = check_inputs(
        y_true=label_true,
        y_pred=label_pred,
        attr_true=attr_true,
        attr_pred=attr_pred,
        argnames={"y_true": "label_true", "y_pred": "label_pred"},
    )
    if ("y_true" in c) != ("y_pred" in c) or ("attr_true" in c) != ("attr_pred" in c):
        raise DataError(
            "subset_accuracy needs the targets and the predictions of labels (label_true, "
            "label_pred) and of attributes (attr_true, attr_pred), each pair both or neither"
        )
    n = next((v.shape[0] for v in c.values()), 0)
    known, wrong = np.zeros(n, np.int64), np.zeros(n, np.int64)
    if "y_true" in c:
        tally = _tally(c["y_true"], y_pred=c["y_pred"])
        known, wrong = tally["known_rows"], tally["wrong_rows"]
    return exact_match(known, wrong, c.get("attr_true"), c.get("attr_pred"))


def exact_match(known: np.ndarray, wrong: np.ndarray, attr_true, attr_pred) -> float:
    """Share of rows with a known target whose known labels and attributes are all right."""
    if attr_true is not None:
        known = known + (attr_true >= 0).sum(axis=1)
        wrong = wrong + ((attr_true >= 0) & (attr_true != attr_pred)).sum(axis=1)
    rows = known > 0
    return float((wrong[rows] == 0).mean()) if rows.any() else float("nan")


for _f in (precision_recall_f1, hamming_loss, jaccard_samples):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ += _DEFINITIONS
del _f
