"""Rank-based metrics: per label (AP, AUROC) and per sample (LRAP, ranking loss, coverage, ...).

All of them are computed from the exact counts of :mod:`mlic.metrics.engine`:
for each positive entry, the known negatives of its column or row that score
at or above it, above it, or tie with it in a lower column.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

from mlic.errors import DataError
from mlic.metrics import engine
from mlic.metrics.inputs import check_inputs


def nanmean(x: np.ndarray) -> float:
    """The mean over the entries that are not NaN (NaN when all are)."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)


def prepare(y_true: Any, y_score: Any, thresholds: Any = None) -> tuple[dict, engine.Positives]:
    """Checked inputs, and the positives ranked in their columns (the first step of every ranking figure)."""
    c = check_inputs(y_true=y_true, y_score=y_score, thresholds=thresholds)
    return c, engine.positives(c["y_true"], c["y_score"])


# -- per label -------------------------------------------------------------------------------------
def label_figures(cc: engine.ColumnCounts, pos: engine.Positives, n_samples: int) -> dict[str, np.ndarray]:
    """AP and AUROC of every label from the column counts (NaN where undefined)."""
    n_labels = pos.per_col.size
    at_or_above = cc.positives_at_or_above + cc.negatives_at_or_above
    precision = cc.positives_at_or_above / np.maximum(at_or_above, 1)
    ap = _divide(np.bincount(cc.cols, precision, minlength=n_labels), pos.per_col)
    negatives = n_samples - pos.unknown_cols - pos.per_col
    # Negatives below each positive, ties counting one half (mid-ranks).
    below = negatives[cc.cols] - 0.5 * (cc.negatives_at_or_above + cc.negatives_above)
    auroc = _divide(np.bincount(cc.cols, below, minlength=n_labels), pos.per_col * negatives)
    return {"ap": ap, "auroc": auroc, "negatives": negatives}


def average_precision(y_true: Any, y_score: Any) -> np.ndarray:
    """Average precision (AP) of each label, over its known entries.

    AP summarises the precision-recall curve as the precision at each distinct
    score threshold, weighted by the increase in recall from the previous one::

        AP = sum_n (R_n - R_{n-1}) P_n

    Tied scores form one threshold, as in
    :func:`sklearn.metrics.average_precision_score`, which this equals per label
    on the known entries: each positive contributes the precision at its own
    score, ``#positives >= s / #known >= s``, and AP is their mean.

    Parameters
    ----------
    y_true : int array [n_samples, n_labels]
        1 present, 0 absent, -1 unknown (left out).
    y_score : float array [n_samples, n_labels]
        Scores; float32 is the fast path.

    Returns
    -------
    ap : float64 array [n_labels]
        NaN for labels with no known positive.

    Examples
    --------
    >>> average_precision([[1, 0], [0, -1], [1, 1]], [[0.9, 0.2], [0.5, 0.9], [0.4, 0.1]])
    array([0.83333333, 0.5       ])
    """
    c, pos = prepare(y_true, y_score)
    cc = engine.column_counts(c["y_true"], c["y_score"], pos)
    return label_figures(cc, pos, c["y_true"].shape[0])["ap"]


def mean_average_precision(y_true: Any, y_score: Any, average: str = "macro") -> float:
    """Mean of :func:`average_precision` over labels with at least one known positive.

    ``average="macro"``: the plain mean (mAP). ``average="weighted"``: weighted by
    support (known positives), which equals scikit-learn's
    ``average_precision_score(average="weighted")`` when every label has a
    positive. Returns NaN when no label has a known positive.
    """
    if average not in ("macro", "weighted"):
        raise DataError(f"average must be 'macro' or 'weighted'; got {average!r}")
    c, pos = prepare(y_true, y_score)
    cc = engine.column_counts(c["y_true"], c["y_score"], pos)
    ap = label_figures(cc, pos, c["y_true"].shape[0])["ap"]
    return nanmean(ap) if average == "macro" else weighted_mean(ap, pos.per_col)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """The mean of ``values`` weighted by ``weights``, over entries that are defined and weigh something."""
    ok = ~np.isnan(values) & (weights > 0)
    return float(np.average(values[ok], weights=weights[ok])) if ok.any() else float("nan")


def roc_auc(y_true: Any, y_score: Any) -> np.ndarray:
    """Area under the ROC curve of each label, over its known entries.

    The probability that a known positive scores above a known negative, ties
    counting one half (Mann-Whitney U with mid-ranks)::

        AUROC = (sum_pos #neg below + 0.5 #neg tied) / (n_pos n_neg)

    which equals :func:`sklearn.metrics.roc_auc_score` per label on the known
    entries. ``y_true`` is int [n_samples, n_labels] (1, 0, -1 unknown: left
    out), ``y_score`` float of the same shape. Returns float64 [n_labels], NaN for
    labels without a known positive or without a known negative.

    Examples
    --------
    >>> roc_auc([[1, 0], [0, 1], [0, 0]], [[0.8, 0.3], [0.8, 0.9], [0.1, 0.2]])
    array([0.75, 1.  ])
    """
    c, pos = prepare(y_true, y_score)
    cc = engine.column_counts(c["y_true"], c["y_score"], pos)
    return label_figures(cc, pos, c["y_true"].shape[0])["auroc"]


def mean_roc_auc(y_true: Any, y_score: Any) -> float:
    """Macro mean of :func:`roc_auc` over labels with a known positive and a known negative.

    NaN when no label has both.
    """
    return nanmean(roc_auc(y_true, y_score))


# -- per sample ------------------------------------------------------------------------------------
def check_k(k: Any) -> tuple[int, ...]:
    """``k`` (an int or several) as a tuple of positive ints; anything else is a ``DataError``."""
    ks = (k,) if not isinstance(k, Iterable) else tuple(k)
    out = []
    for v in ks:
        try:
            v = operator.index(v)
        except TypeError:
            raise DataError(f"k must be a positive integer or a sequence of them; got {k!r}") from None
        if v < 1:
            raise DataError(f"k must be a positive integer or a sequence of them; got {v}")
        out.append(v)
    return tuple(out)


def sample_figures(rc: engine.RowCounts, pos: engine.Positives, n_labels: int, ks=()) -> dict[str, Any]:
    """The per-sample ranking figures from the row counts, averaged over samples with a known entry."""
    n = pos.per_row.size
    n_pos = pos.per_row
    known = n_labels - pos.unknown_rows
    negatives = known - n_pos
    rows = rc.rows
    rank = rc.positives_at_or_above + rc.negatives_at_or_above  # known labels scoring >= it
    has = n_pos > 0
    lrap = np.ones(n)  # no relevant label: 1, as scikit-learn
    lrap[has] = np.bincount(rows, rc.positives_at_or_above / rank, minlength=n)[has] / n_pos[has]
    loss = np.zeros(n)  # no relevant or no irrelevant label: 0, as scikit-learn
    both = has & (negatives > 0)
    wrong_pairs = np.bincount(rows, rc.negatives_at_or_above, minlength=n)
    loss[both] = wrong_pairs[both] / (n_pos[both] * negatives[both])
    coverage = np.zeros(n)  # no relevant label: 0, as scikit-learn
    first = engine._starts(n_pos)[:-1]  # each row's lowest positive has the largest rank
    coverage[has] = rank[first[has]]
    position = rc.positives_above + rc.negatives_above + rc.positives_tied_before + rc.negatives_tied_before
    used = known > 0
    out = {
        "lrap": _mean(lrap, used),
        "ranking_loss": _mean(loss, used),
        "coverage_error": _mean(coverage, used),
        "one_error": _mean(1.0 - np.bincount(rows[position < 1], minlength=n), used),
    }
    for k in ks:
        out[f"precision_at_{k}"] = _mean(np.bincount(rows[position < k], minlength=n) / k, used)
    return out


def _mean(x: np.ndarray, used: np.ndarray) -> float:
    return float(x[used].mean()) if used.any() else float("nan")


def _sample_figures(y_true: Any, y_score: Any, ks=()) -> dict[str, Any]:
    c, pos = prepare(y_true, y_score)
    rc = engine.row_counts(c["y_true"], c["y_score"], pos)
    return sample_figures(rc, pos, c["y_true"].shape[1], ks)


_CONVENTIONS = """
    Unknown entries (-1) are removed from their sample: they are neither relevant
    nor irrelevant and are not ranked. Samples with no known entry are left out of
    the mean, which is NaN when none is left.

    Parameters
    ----------
    y_true : int array [n_samples, n_labels]
        1 relevant, 0 irrelevant, -1 unknown.
    y_score : float array [n_samples, n_labels]
        Scores; float32 is the fast path."""


def label_ranking_average_precision(y_true: Any, y_score: Any) -> float:
    """Label ranking average precision (LRAP), averaged over samples.

    For each relevant label r of a sample, the share of relevant labels among
    the labels scored at least as high as r (ties count in full), averaged over r::

        LRAP_i = 1/|R_i| sum_{r in R_i} |{r' in R_i: s_r' >= s_r}| / |{j: s_j >= s_r}|

    A sample with no relevant label scores 1, as in
    :func:`sklearn.metrics.label_ranking_average_precision_score`, which this
    equals when nothing is unknown.
    {conventions}

    Returns
    -------
    lrap : float

    Examples
    --------
    >>> label_ranking_average_precision([[1, 0, 0], [0, 0, 1]], [[0.75, 0.5, 1.0], [1.0, 0.2, 0.1]])
    0.41666666666666663
    """
    return _sample_figures(y_true, y_score)["lrap"]


def label_ranking_loss(y_true: Any, y_score: Any) -> float:
    """Ranking loss: the share of (relevant, irrelevant) pairs ordered wrongly, averaged over samples.

    A pair is wrong when the irrelevant label scores at least as high as the
    relevant one (ties are wrong)::

        loss_i = |{(r, f) in R_i x F_i: s_f >= s_r}| / (|R_i| |F_i|)

    A sample with no relevant or no irrelevant label scores 0, as in
    :func:`sklearn.metrics.label_ranking_loss`, which this equals when nothing is
    unknown.
    {conventions}

    Returns
    -------
    loss : float

    Examples
    --------
    >>> label_ranking_loss([[1, 0, 0], [0, 0, 1]], [[0.75, 0.5, 1.0], [1.0, 0.2, 0.1]])
    0.75
    """
    return _sample_figures(y_true, y_score)["ranking_loss"]


def coverage_error(y_true: Any, y_score: Any) -> float:
    """Coverage error: how far down the ranking one must go to cover every relevant label.

    ``coverage_i = |{j: s_j >= min_{r in R_i} s_r}|`` (ties count in full), 0 for a
    sample with no relevant label, as in :func:`sklearn.metrics.coverage_error`,
    which this equals when nothing is unknown.
    {conventions}

    Returns
    -------
    coverage : float
        The mean number of top-scored (known) labels.

    Examples
    --------
    >>> coverage_error([[1, 0, 0], [0, 1, -1]], [[0.75, 0.5, 1.0], [1.0, 0.2, 0.1]])
    2.0
    """
    return _sample_figures(y_true, y_score)["coverage_error"]


def one_error(y_true: Any, y_score: Any) -> float:
    """One-error: the share of samples whose top-scored label is not relevant.

    Ties at the top go to the lowest label index. A sample with no relevant
    label counts as an error (its top label is not relevant). Equals
    ``1 - precision_at_k(y_true, y_score, 1)``. scikit-learn has no equivalent.
    {conventions}

    Returns
    -------
    one_error : float

    Examples
    --------
    >>> one_error([[1, 0, 0], [0, 1, -1]], [[0.75, 0.5, 1.0], [0.2, 0.2, 0.9]])
    1.0
    """
    return _sample_figures(y_true, y_score)["one_error"]


def precision_at_k(y_true: Any, y_score: Any, k: int) -> float:
    """Precision at k: relevant labels among the k top-scored ones, over k, averaged over samples.

    Ties go to the lowest label index, so exactly k labels are taken (fewer when
    a sample has fewer than k known labels; the division is still by k). A
    sample with no relevant label scores 0. scikit-learn has no equivalent.
    {conventions}
    k : int
        How many top-scored labels to take (1 or more).

    Returns
    -------
    precision : float

    Examples
    --------
    >>> precision_at_k([[1, 0, 1], [0, 1, -1]], [[0.75, 0.5, 1.0], [0.2, 0.2, 0.9]], 2)
    0.75
    """
    if isinstance(k, Iterable):
        raise DataError(f"k must be one positive integer; got {k!r} (all_metrics takes several)")
    (k,) = check_k(k)
    return _sample_figures(y_true, y_score, (k,))[f"precision_at_{k}"]


for _f in (label_ranking_average_precision, label_ranking_loss, coverage_error, one_error, precision_at_k):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("    {conventions}", _CONVENTIONS)
del _f
