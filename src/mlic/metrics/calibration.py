"""Calibration figures of label probabilities: expected calibration error, Brier score, reliability bins.

A label's probabilities are calibrated when, among the images scored about
``p``, a share ``p`` has the label. With the known entries of label ``l``
(unknown targets, -1, are left out) cut into ``n_bins`` equal-width bins of
score over [0, 1] (bin ``b`` holds the scores with ``floor(n_bins p) = b``,
in float64, and 1.0 falls in the last), the expected calibration error (Naeini et al.,
AAAI 2015; Guo et al., ICML 2017) is

.. math::

    \\mathrm{ECE}_l = \\sum_b \\frac{n_{lb}}{n_l} \\lvert \\bar y_{lb} - \\bar p_{lb} \\rvert

where :math:`n_{lb}` entries fall in bin :math:`b`, :math:`\\bar y` is their
share of positives and :math:`\\bar p` their mean score. ``ece_macro`` is the
mean over labels with a known positive (as mAP; the others are listed by
:func:`mlic.metrics.all_metrics`), ``ece_micro`` the same sum over every known
entry of every label pooled. The Brier score is the mean of
:math:`(p - y)^2` over known entries: per label, its macro mean (labels with a
positive) and its micro form (every known entry). Lower is better for all.

``torchmetrics``' calibration error has no multi-label form; this one is
vectorised over labels, works block by block, and is checked against a naive
loop in the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlic.errors import DataError
from mlic.metrics.blocks import column_blocks
from mlic.metrics.inputs import check_inputs

N_BINS = 15
"""Equal-width bins of the default ECE (Guo et al.'s choice)."""


def calibration_bins(y_true: Any, y_score: Any, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per label and bin: known entries, positives and summed scores.

    Returns ``{"count", "positives", "score_sum"}``, each float64 ``[n_labels, n_bins]``,
    and ``"edges"`` ``[n_bins + 1]``. NaN scores are refused by the gatekeeper.
    """
    c = check_inputs(y_true=y_true, y_score=y_score)
    y, s = c["y_true"], c["y_score"]
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise DataError(f"n_bins must be a positive integer, got {n_bins!r}")
    if s.size and (np.nanmin(s) < 0 or np.nanmax(s) > 1):
        raise DataError("calibration figures need probabilities in [0, 1] as y_score")
    n, n_labels = y.shape
    count = np.zeros((n_labels, n_bins))
    positives = np.zeros((n_labels, n_bins))
    score_sum = np.zeros((n_labels, n_bins))
    for cols in column_blocks(n, n_labels):
        t, p = y[:, cols], s[:, cols].astype(np.float64)
        known = t >= 0
        b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
        width = t.shape[1]
        index = (np.arange(width)[None, :] * n_bins + b)[known]
        size = width * n_bins
        count[cols] = np.bincount(index, minlength=size).reshape(width, n_bins)
        positives[cols] = np.bincount(index, weights=(t == 1)[known], minlength=size).reshape(width, n_bins)
        score_sum[cols] = np.bincount(index, weights=p[known], minlength=size).reshape(width, n_bins)
    return {"count": count, "positives": positives, "score_sum": score_sum,
            "edges": np.linspace(0.0, 1.0, n_bins + 1)}  # fmt: skip


def calibration_figures(y_true: Any, y_score: Any, n_bins: int = N_BINS) -> dict[str, Any]:
    """Expected calibration error and Brier score, per label, macro and micro (see the module docstring).

    Parameters
    ----------
    y_true : int array [n_samples, n_labels]
        1 present, 0 absent, -1 unknown (left out).
    y_score : float array [n_samples, n_labels]
        Probabilities in [0, 1].
    n_bins : int, default 15
        Equal-width bins over [0, 1].

    Returns
    -------
    figures : dict
        ``ece`` and ``brier``: float64 ``[n_labels]`` (NaN for a label without
        known entries); ``ece_macro``, ``brier_macro`` (over labels with a known
        positive; NaN if none); ``ece_micro``, ``brier_micro`` (every known entry;
        NaN if none); ``bins``: the micro reliability diagram, ``{"edges",
        "count", "positives", "score_sum"}`` summed over labels.

    Examples
    --------
    >>> f = calibration_figures([[1], [0], [1], [0]], [[0.9], [0.1], [0.6], [0.6]], n_bins=10)
    >>> round(float(f["ece"][0]), 3), round(float(f["brier"][0]), 3)
    (0.1, 0.135)
    """
    c = check_inputs(y_true=y_true, y_score=y_score)
    y, s = c["y_true"], c["y_score"]
    bins = calibration_bins(y, s, n_bins)
    count, positives, score_sum = bins["count"], bins["positives"], bins["score_sum"]
    n_known = count.sum(axis=1)
    gap = np.abs(positives - score_sum)  # n_b |ybar_b - pbar_b|
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = gap.sum(axis=1) / n_known
        micro_gap = np.abs(positives.sum(axis=0) - score_sum.sum(axis=0)).sum()
        ece_micro = micro_gap / n_known.sum() if n_known.sum() else np.nan
    squared = np.zeros(y.shape[1])
    for cols in column_blocks(*y.shape):
        t, p = y[:, cols], s[:, cols].astype(np.float64)
        squared[cols] = np.where(t >= 0, (p - (t == 1)) ** 2, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        brier = squared / n_known
        brier_micro = squared.sum() / n_known.sum() if n_known.sum() else np.nan
    has_positive = positives.sum(axis=1) > 0
    return {
        "ece": np.where(n_known > 0, ece, np.nan),
        "brier": np.where(n_known > 0, brier, np.nan),
        "ece_macro": float(ece[has_positive].mean()) if has_positive.any() else float("nan"),
        "brier_macro": float(brier[has_positive].mean()) if has_positive.any() else float("nan"),
        "ece_micro": float(ece_micro),
        "brier_micro": float(brier_micro),
        "bins": {
            "edges": bins["edges"],
            "count": count.sum(axis=0),
            "positives": positives.sum(axis=0),
            "score_sum": score_sum.sum(axis=0),
        },
    }
