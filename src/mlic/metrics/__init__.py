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
- calibration of the probabilities: :func:`calibration_figures` (expected
  calibration error and Brier score, per label, macro and micro; reliability bins);
- everything at once: :func:`all_metrics` (arrays), :func:`evaluate_arrays`
  (a JSON-serialisable report keyed by a schema's names).

Every function is vectorised over labels, works block by block to bound memory
(about ``blocks.BLOCK_ELEMENTS`` entries per block), and checks its inputs with
:func:`check_inputs`. The rank-based figures sort only the positive entries
(see :mod:`mlic.metrics.engine`).

Modules: ``inputs`` (the gatekeeper), ``blocks``, ``engine`` (exact counts),
``ranking``, ``classification``, ``attributes``, ``calibration``, ``summary`` (every figure at once).
"""

from __future__ import annotations

from mlic.metrics.attributes import attribute_scores
from mlic.metrics.calibration import calibration_figures
from mlic.metrics.classification import (
    hamming_loss,
    jaccard_samples,
    label_counts,
    multilabel_scores,
    papers_scores,
    precision_recall_f1,
    subset_accuracy,
)
from mlic.metrics.inputs import check_inputs
from mlic.metrics.ranking import (
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
from mlic.metrics.summary import all_metrics, evaluate_arrays

__all__ = [
    "all_metrics",
    "attribute_scores",
    "average_precision",
    "calibration_figures",
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
