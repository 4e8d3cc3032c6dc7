"""Metrics of attributes (one exclusive class per attribute, decided by argmax)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlic.errors import DataError
from mlic.metrics.inputs import check_inputs


def attribute_figures(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 and confusion matrix of one attribute over its known targets."""
    n_classes = probs.shape[1]
    known = y >= 0
    truth, pred = y[known], probs[known].argmax(axis=1)
    cm = np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm)
    in_truth, in_pred = cm.sum(axis=1), cm.sum(axis=0)
    present = (in_truth + in_pred) > 0  # scikit-learn's labels: present in truth or prediction
    f1 = 2 * tp[present] / (in_truth[present] + in_pred[present])
    n_known = int(known.sum())
    return {
        "accuracy": float(tp.sum() / n_known) if n_known else float("nan"),
        "macro_f1": float(f1.mean()) if n_known else float("nan"),
        "confusion_matrix": cm,
        "support": n_known,
    }


def attribute_scores(y_true: Any, probs: Sequence[Any], names: Sequence[str]) -> dict[str, dict]:
    """Accuracy, macro-F1 and confusion matrix of each attribute over its known targets.

    Each attribute decides by argmax over its classes. Over the samples whose
    target is known (-1 is left out):

    - ``accuracy``: share decided right
      (:func:`sklearn.metrics.accuracy_score`);
    - ``macro_f1``: mean of per-class F1 = 2 tp / (2 tp + fp + fn) over the
      classes present in the targets or the decisions, as
      ``sklearn.metrics.f1_score(average="macro")`` does;
    - ``confusion_matrix``: int64 [n_classes, n_classes], rows the true class and
      columns the decided one (``confusion_matrix(labels=range(n_classes))``);
    - ``support``: the number of known targets.

    Accuracy and macro-F1 are NaN when no target is known.

    Parameters
    ----------
    y_true : int array [n_samples, n_attributes]
        Class indices, -1 unknown.
    probs : sequence of float arrays [n_samples, n_classes]
        One per attribute.
    names : sequence of str
        One name per attribute.

    Returns
    -------
    scores : dict
        ``{name: {"accuracy", "macro_f1", "confusion_matrix", "support"}}``.

    Examples
    --------
    >>> r = attribute_scores([[0], [1], [-1]], [[[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]]], ["size"])
    >>> r["size"]["accuracy"], r["size"]["confusion_matrix"].tolist()
    (0.5, [[1, 0], [1, 0]])
    """
    c = check_inputs(
        attr_true=y_true, attr_probs=probs, argnames={"attr_true": "y_true", "attr_probs": "probs"}
    )
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != len(c["attr_probs"]):
        raise DataError(f"names has {len(names)} names; expected one per attribute ({len(c['attr_probs'])})")
    return {
        name: attribute_figures(c["attr_true"][:, j], p)  # one step per attribute
        for j, (name, p) in enumerate(zip(names, c["attr_probs"], strict=True))
    }
