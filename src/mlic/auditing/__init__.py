"""``mlic audit``: find the labels a data set forgot (and the wrong ones), for a person to review.

``audit(data, out)`` scores every image out of sample by K folds
(``folds``), ranks likely missing and likely wrong labels against each
label's own confident thresholds (``ranking``), and writes the review file,
the per-label table and the review page (``review``, ``page``);
``apply_decisions`` writes a new data file with the accepted changes.
"""

from __future__ import annotations

from mlic.auditing.page import review_server, write_page
from mlic.auditing.ranking import LabelThresholds, Suggestions, label_thresholds, rank_suggestions
from mlic.auditing.review import apply_decisions, read_decisions, read_suggestions, write_decisions
from mlic.auditing.run import audit, write_review

apply_audit = apply_decisions
"""``mlic.apply_audit``: the name ``apply_decisions`` has at the package's top."""

__all__ = [
    "LabelThresholds",
    "Suggestions",
    "apply_audit",
    "apply_decisions",
    "audit",
    "label_thresholds",
    "rank_suggestions",
    "read_decisions",
    "read_suggestions",
    "review_server",
    "write_decisions",
    "write_page",
    "write_review",
]
