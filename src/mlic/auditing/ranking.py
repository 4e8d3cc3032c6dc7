"""Ranked suggestions from out-of-sample scores: the labels a data set likely forgot, and likely wrong ones.

The confident-learning idea (Northcutt, Jiang and Chuang, 2021, "Confident
Learning: Estimating Uncertainty in Dataset Labels", JAIR) applied to each
label as its own yes/no task, with mlic's unknown targets:

- the **missing threshold** ``t+`` is the data set's label frequency ``c``:
  the mean out-of-sample probability of the given positives of every label,
  pooled (``label_thresholds``; ``prior_positives`` mixes in each label's own
  mean). Label ``j``'s **wrong threshold** ``t-_j`` is the mean over its own
  given negatives (0).
- an (image, label) pair whose target is 0 or unknown is a **missing**
  candidate with score ``logit(p) - logit(t+)``; a given positive is a
  **wrong** candidate with score ``logit(t-_j) - logit(p)``. A score of 0 or
  more is "confident" in the sense of confident learning (``p >= t+``,
  ``p <= t-_j``).
- ``exp(score)``, capped at 1, is the suggestion's **confidence**. For a
  missing candidate it is Elkan and Noto's (2008, "Learning classifiers from
  only positive and unlabeled data", KDD) probability that an unlabelled pair
  is a positive, ``odds(p) / odds(c)``: where a share of the positives was
  never written down, a model trained on those labels scores a true positive
  near ``c``, not near 1, so the cut at ``p >= c`` alone would miss half of
  them.

Why one pooled ``c`` rather than each label's own mean (as confident learning
has it): a label's mean score over its given positives mixes how often its
positives go unwritten with how well the model finds the label. The low mean
of a rare or hard label mostly says the latter, and dividing by it lifted
every unlabelled pair of that label towards the top. With 30% of the
positives hidden, the hidden ones found among the top N were, per-label means
against pooled: Corel-5k, frozen features, 0.063 against 0.400; MultiDigits,
K trainings, 0.963 against 0.965; MultiDigits, frozen features, 0.448
against 0.474. Mixing 1,000 positives' worth of the pooled mean into each
label's (``prior_positives=1000``) gave 0.402, 0.965 and 0.459: level on
the first two, worse on the third.

Everything is vectorised: the dense scores are made block by block of rows
and only the best ``limit`` (or those above ``min_confidence``) are kept
(``np.argpartition``), so 10,000 images x 10,000 labels rank in seconds.
Scores that are NaN (an image that could not be read, a label a fold's model
did not know) are never suggested and count in no threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mlic.data.targets import LabelLists, entry_rows
from mlic.errors import ConfigError, DataError
from mlic.schema import UNKNOWN

MISSING, WRONG = "missing", "wrong"
KINDS = (MISSING, WRONG)
EPS = 1e-6
"""Probabilities are clipped to [EPS, 1 - EPS] before their logit."""
DEFAULT_MIN_CONFIDENCE = 0.5
PRIOR_POSITIVES = math.inf
"""The weight, in positives, of the pooled mean in each label's missing threshold (``label_thresholds``);
infinite: the pooled mean alone."""
BLOCK_ENTRIES = 1 << 23
"""Dense scores are made for this many (image, label) pairs at a time (32 MB of float32)."""


@dataclass(frozen=True)
class LabelThresholds:
    """Per-label confident thresholds and the counts they come from (arrays ``[L]``).

    ``missing``: mean probability over the given positives of all labels (``label_thresholds``; NaN for
    a label without a given positive);
    ``wrong``: mean probability over given negatives (NaN without any).
    """

    missing: np.ndarray
    wrong: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    unknown: np.ndarray


@dataclass
class Suggestions:
    """Suggested changes, best first: parallel arrays, one entry per (image, label) pair.

    ``image`` and ``label`` are row and column indices, ``given`` the target
    (1, 0 or -1 unknown), ``kind`` 0 for missing and 1 for wrong, ``score``
    the log-odds margin over the label's threshold (the order), ``threshold``
    that threshold, ``probability`` the out-of-sample probability.
    ``table`` holds the per-label figures (``label_table``).
    """

    image: np.ndarray
    label: np.ndarray
    given: np.ndarray
    kind: np.ndarray
    probability: np.ndarray
    threshold: np.ndarray
    score: np.ndarray
    thresholds: LabelThresholds
    table: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image)

    @property
    def confidence(self) -> np.ndarray:
        """``min(1, exp(score))``: the estimated chance that the suggested change is right."""
        return np.minimum(1.0, np.exp(np.minimum(self.score, 0.0)))

    def of_kind(self, kind: str) -> np.ndarray:
        """Positions (in rank order) of the suggestions of ``kind`` ("missing" or "wrong")."""
        return np.flatnonzero(self.kind == KINDS.index(kind))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def check_scores(probs: np.ndarray, targets: LabelLists) -> np.ndarray:
    """The gatekeeper: float probabilities ``[N, L]`` in [0, 1] (NaN allowed) matching the targets."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape != targets.shape:
        raise DataError(f"scores have shape {probs.shape}; the targets have {targets.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise DataError(f"scores must be floating-point probabilities, got {probs.dtype}")
    finite = probs[np.isfinite(probs)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise DataError(
            f"scores must be probabilities in [0, 1], got [{finite.min():.4g}, {finite.max():.4g}]"
        )
    return probs


def _blocks(n: int, n_labels: int) -> list[tuple[int, int]]:
    step = max(1, BLOCK_ENTRIES // max(1, n_labels))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def label_thresholds(
    probs: np.ndarray, targets: LabelLists, *, prior_positives: float = PRIOR_POSITIVES
) -> LabelThresholds:
    """Each label's confident thresholds: mean probability of its given positives, and of its negatives.

    The missing threshold is ``(sum_j + m * pooled) / (n_j + m)``: label ``j``'s
    ``n_j`` given positives scoring ``sum_j`` in all, with ``m`` =
    ``prior_positives`` more at ``pooled``, the mean over every label's given
    positives. The default, infinite ``m``, is ``pooled`` for every label;
    ``m`` = 0 each label's own mean. A label without a given positive has
    none either way.
    """
    if not prior_positives >= 0:
        raise ConfigError(f"prior_positives must be at least 0, got {prior_positives}")
    probs = check_scores(probs, targets)
    n, n_labels = probs.shape
    rows, cols, values = entry_rows(targets.indptr), targets.indices.astype(np.int64), targets.values
    p = probs[rows, cols].astype(np.float64)
    ok = np.isfinite(p)

    def sums(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = mask & ok
        return (np.bincount(cols[m], p[m], n_labels), np.bincount(cols[m], minlength=n_labels).astype(float))

    pos_sum, pos_n = sums(values == 1)
    unk_sum, unk_n = sums(values == UNKNOWN)
    if targets.fill == 0:  # every pair not listed is a negative: all scored pairs less the listed non-zeros
        all_sum, all_n = np.zeros(n_labels), np.zeros(n_labels)
        for a, b in _blocks(n, n_labels):
            block = probs[a:b]
            finite = np.isfinite(block)
            all_sum += np.where(finite, block, 0).sum(0, dtype=np.float64)
            all_n += finite.sum(0)
        neg_sum, neg_n = all_sum - pos_sum - unk_sum, all_n - pos_n - unk_n
    else:  # only the listed zeros are negatives
        neg_sum, neg_n = sums(values == 0)
        unk_n = unk_n + np.maximum(0, _scored_per_label(probs) - pos_n - neg_n - unk_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = pos_sum.sum() / pos_n.sum() if pos_n.sum() > 0 else 0.0
        own = (
            pooled
            if math.isinf(prior_positives)
            else (pos_sum + prior_positives * pooled) / (pos_n + prior_positives)
        )
        missing = np.where(pos_n > 0, own, np.nan)
        wrong = np.where(neg_n > 0, np.maximum(neg_sum, 0) / np.maximum(neg_n, 1), np.nan)
    return LabelThresholds(
        missing, wrong, pos_n.astype(np.int64), neg_n.astype(np.int64), unk_n.astype(np.int64)
    )


def _scored_per_label(probs: np.ndarray) -> np.ndarray:
    out = np.zeros(probs.shape[1])
    for a, b in _blocks(*probs.shape):
        out += np.isfinite(probs[a:b]).sum(0)
    return out


def rank_suggestions(
    probs: np.ndarray,
    targets: LabelLists,
    *,
    min_confidence: float | None = DEFAULT_MIN_CONFIDENCE,
    limit: int | None = None,
    kinds: tuple[str, ...] = KINDS,
    prior_positives: float = PRIOR_POSITIVES,
) -> Suggestions:
    """Likely missing and likely wrong labels of ``targets``, from out-of-sample ``probs`` ``[N, L]``.

    Best first.

    Keeps the pairs whose confidence is at least ``min_confidence`` (None: any),
    at most ``limit`` of each kind (None: no cap); at least one of the two must
    bound the result. Pairs are ordered by score, highest first, both kinds in
    one list (ties by image, then label). ``table`` holds ``label_table``'s
    figures, which count every pair whatever the bounds. ``prior_positives``:
    see ``label_thresholds``.
    """
    probs = check_scores(probs, targets)
    if min_confidence is None and limit is None:
        raise ConfigError("rank_suggestions needs a min_confidence or a limit (else every pair is listed)")
    if min_confidence is not None and not 0 < min_confidence <= 1:
        raise ConfigError(f"min_confidence must lie in (0, 1], got {min_confidence}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be at least 0, got {limit}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown suggestion kinds {unknown}; valid: {list(KINDS)}")
    cut = -math.inf if min_confidence is None else math.log(min_confidence)
    thresholds = label_thresholds(probs, targets, prior_positives=prior_positives)
    parts, counts = [], {}
    for kind, find in ((MISSING, _missing), (WRONG, _wrong)):
        if kind in kinds:
            part, counts[kind] = find(probs, targets, thresholds, cut, limit)
            parts.append((*part, np.full(len(part[0]), KINDS.index(kind), np.int8)))
    image, label, score, kind = (
        np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4)
    )
    image, label = image.astype(np.int64), label.astype(np.int64)
    order = np.lexsort((label, image, -score))
    image, label, score, kind = image[order], label[order], score[order], kind[order].astype(np.int8)
    threshold = np.where(kind == 0, thresholds.missing[label], thresholds.wrong[label])
    suggestions = Suggestions(
        image=image,
        label=label,
        given=_given(targets, image, label),
        kind=kind,
        probability=probs[image, label].astype(np.float64),
        threshold=threshold,
        score=score.astype(np.float64),
        thresholds=thresholds,
    )
    suggestions.table = label_table(thresholds, counts, cut)
    return suggestions


def _missing(probs, targets: LabelLists, th: LabelThresholds, cut: float, limit: int | None):
    """The best missing candidates (rows, labels, scores) and per-label counts, block by block."""
    n, n_labels = probs.shape
    base = logit(np.where(np.isnan(th.missing), 0.5, th.missing)).astype(np.float32)
    no_threshold = np.isnan(th.missing)
    confident = np.zeros(n_labels, np.int64)
    likely = np.zeros(n_labels, np.int64)
    expected = np.zeros(n_labels)
    best_flat = np.zeros(0, np.int64)
    best_score = np.zeros(0, np.float32)
    rows_all = entry_rows(targets.indptr)
    for a, b in _blocks(n, n_labels):
        block = probs[a:b].astype(np.float32, copy=True)
        scores = logit(block).astype(np.float32) - base
        scores[:, no_threshold] = np.nan
        lo, hi = targets.indptr[a], targets.indptr[b]
        values = targets.values[lo:hi]
        listed_rows, listed_cols = rows_all[lo:hi] - a, targets.indices[lo:hi]
        positive = values == 1
        scores[listed_rows[positive], listed_cols[positive]] = np.nan  # given positives are not candidates
        valid = ~np.isnan(scores)
        confident += (valid & (scores >= 0)).sum(0)
        likely += (valid & (scores >= cut)).sum(0)
        expected += np.where(valid, np.exp(np.minimum(scores, 0)), 0).sum(0, dtype=np.float64)
        flat = np.flatnonzero(valid & (scores >= cut)) if math.isfinite(cut) else np.flatnonzero(valid)
        sc = scores.ravel()[flat]
        if limit is not None and len(sc) > limit:
            keep = np.argpartition(-sc, limit - 1)[:limit] if limit else np.zeros(0, np.int64)
            flat, sc = flat[keep], sc[keep]
        best_flat = np.concatenate([best_flat, flat + a * n_labels])
        best_score = np.concatenate([best_score, sc])
        if limit is not None and len(best_score) > limit:
            keep = np.argpartition(-best_score, limit - 1)[:limit] if limit else np.zeros(0, np.int64)
            best_flat, best_score = best_flat[keep], best_score[keep]
    counts = {"confident": confident, "likely": likely, "expected": expected}
    return (best_flat // n_labels, best_flat % n_labels, best_score), counts


def _wrong(probs, targets: LabelLists, th: LabelThresholds, cut: float, limit: int | None):
    """Given positives scored against each label's wrong threshold (they are few: no dense pass)."""
    n_labels = probs.shape[1]
    positive = targets.values == 1
    rows = entry_rows(targets.indptr)[positive]
    cols = targets.indices[positive].astype(np.int64)
    p = probs[rows, cols].astype(np.float64)
    score = logit(np.where(np.isnan(th.wrong), 0.5, th.wrong))[cols] - logit(p)
    score[np.isnan(p) | np.isnan(th.wrong)[cols]] = np.nan
    valid = ~np.isnan(score)
    counts = {
        "confident": np.bincount(cols[valid & (score >= 0)], minlength=n_labels),
        "likely": np.bincount(cols[valid & (score >= cut)], minlength=n_labels),
        "expected": np.bincount(cols[valid], np.exp(np.minimum(score[valid], 0)), minlength=n_labels),
    }
    keep = np.flatnonzero(valid & (score >= cut))
    if limit is not None and len(keep) > limit:
        keep = keep[np.argpartition(-score[keep], limit - 1)[:limit]] if limit else keep[:0]
    return (rows[keep], cols[keep], score[keep]), counts


def _given(targets: LabelLists, image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The targets of the pairs ``(image, label)`` (1, 0 or -1), looked up in the lists."""
    given = np.full(len(image), targets.fill, np.int8)
    if not len(image):
        return given
    key = entry_rows(targets.indptr).astype(np.int64) * targets.n_labels + targets.indices
    wanted = image * targets.n_labels + label
    pos = np.searchsorted(key, wanted)  # listed entries are sorted by row, then label
    pos = np.minimum(pos, max(0, len(key) - 1))
    hit = (key[pos] == wanted) if len(key) else np.zeros(len(image), bool)
    given[hit] = targets.values[pos[hit]]
    return given


def label_table(th: LabelThresholds, counts: dict, cut: float) -> dict:
    """Per-label figures (arrays ``[L]``).

    ``given_positives``; ``missing_threshold`` / ``wrong_threshold``;
    ``likely_missing`` / ``likely_wrong``: pairs at or above the confidence
    cut; ``confident_missing`` / ``confident_wrong``: pairs past the
    threshold itself; ``estimated_missing_rate``: the expected number of
    missing positives (the confidences of every unlabelled pair, summed) as a
    share of the label's positives (given + expected missing);
    ``suspected_wrong_rate``: ``likely_wrong`` as a share of the given positives.
    """
    pos = th.positives.astype(float)
    table = {"given_positives": th.positives, "given_negatives": th.negatives, "unknown": th.unknown,
             "missing_threshold": th.missing, "wrong_threshold": th.wrong}  # fmt: skip
    zeros = np.zeros(len(pos), np.int64)
    missing, wrong = counts.get(MISSING), counts.get(WRONG)
    table["likely_missing"] = missing["likely"] if missing else zeros
    table["confident_missing"] = missing["confident"] if missing else zeros
    table["likely_wrong"] = wrong["likely"] if wrong else zeros
    table["confident_wrong"] = wrong["confident"] if wrong else zeros
    with np.errstate(invalid="ignore", divide="ignore"):
        if missing:
            expected = missing["expected"]
            table["estimated_missing_rate"] = np.where(
                pos + expected > 0, expected / (pos + expected), np.nan
            )
        else:
            table["estimated_missing_rate"] = np.full(len(pos), np.nan)
        table["suspected_wrong_rate"] = np.where(pos > 0, table["likely_wrong"] / np.maximum(pos, 1), np.nan)
    return table
