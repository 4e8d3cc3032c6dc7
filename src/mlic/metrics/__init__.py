"""Metrics for multi-label targets with unknowns, and for attributes.

Label targets ``y_true`` are int ``[n_samples, n_labels]`` with 1 present,
0 absent and -1 unknown; label scores ``y_score`` are float ``[n_samples,
n_labels]`` (probabilities; float32 is the fast path). Attribute targets are int
``[n_samples, n_attributes]`` class indices, -1 unknown; attribute
probabilities are a list of ``[n_samples, n_classes]`` arrays, one per attribute.

Unknown targets are left out everywhere: they count as neither positive nor
negative, neither right nor wrong, and in the per-sample ranking figures an
unknown entry is removed from its sample (it is not ranked). Samples with no
known entry are left out of per-sample means. A label with no known positive
has no AP, precision, recall or F1 (NaN) and is left out of macro means and
listed in ``labels_without_positives``; AUROC also needs a known negative
(``labels_without_negatives``). False positives of such labels still count in
micro figures and the Hamming loss. With nothing unknown every figure equals
scikit-learn's on the same inputs (see each function).

Families:

- ranking, per label: :func:`average_precision`, :func:`mean_average_precision`
  (macro, weighted), :func:`roc_auc`, :func:`mean_roc_auc`;
- ranking, per sample: :func:`label_ranking_average_precision`,
  :func:`label_ranking_loss`, :func:`coverage_error`, :func:`one_error`,
  :func:`precision_at_k`;
- decisions: :func:`precision_recall_f1` (micro, macro, samples, per label),
  :func:`papers_scores` (CP, CR, CF1, OP, OR, OF1), :func:`hamming_loss`,
  :func:`jaccard_samples`, :func:`label_counts`, :func:`multilabel_scores`,
  :func:`subset_accuracy`;
- attributes: :func:`attribute_scores` (accuracy, macro-F1, confusion matrix);
- everything at once: :func:`all_metrics` (arrays), :func:`evaluate_arrays`
  (a JSON-serialisable report keyed by a schema's names).

Every function is vectorised over labels, works block by block to bound memory
(about ``_BLOCK_ELEMENTS`` entries per block), and checks its inputs with
:func:`check_inputs`. The rank-based figures sort only the positive entries
(see :mod:`mlic.metrics._engine`).
"""

from __future__ import annotations

_BLOCK_ELEMENTS = 1 << 22  # entries per block of rows or columns: bounds the memory of every sweep

from mlic.metrics._attributes import attribute_scores  # noqa: E402
from mlic.metrics._classification import _ratio as _ratio  # noqa: E402  (kept for older callers)
from mlic.metrics._classification import _tally as _tally  # noqa: E402
from mlic.metrics._classification import (  # noqa: E402
    hamming_loss,
    jaccard_samples,
    label_counts,
    multilabel_scores,
    papers_scores,
    precision_recall_f1,
    subset_accuracy,
)
from mlic.metrics._inputs import _column_blocks as _column_blocks  # noqa: E402
from mlic.metrics._inputs import check_inputs  # noqa: E402
from mlic.metrics._ranking import _nanmean as _nanmean  # noqa: E402
from mlic.metrics._ranking import (  # noqa: E402
    average_precision,
    coverage_error,
    label_ranking_average_precision,
    label_ranking_loss,
    mean_average_precision,
    mean_roc_auc,
    one_error,
    precision_at_k,
    roc_auc,
)
from mlic.metrics._summary import _json as _json  # noqa: E402
from mlic.metrics._summary import all_metrics, evaluate_arrays  # noqa: E402

__all__ = [
    "all_metrics",
    "attribute_scores",
    "average_precision",
    "check_inputs",
    "coverage_error",
    "evaluate_arrays",
    "hamming_loss",
    "jaccard_samples",
    "label_counts",
    "label_ranking_average_precision",
    "label_ranking_loss",
    "mean_average_precision",
    "mean_roc_auc",
    "multilabel_scores",
    "one_error",
    "papers_scores",
    "precision_at_k",
    "precision_recall_f1",
    "roc_auc",
    "subset_accuracy",
]
