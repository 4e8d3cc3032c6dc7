"""Decision rules for label scores: per-label F1-optimal thresholds, fixed thresholds, top-k.

``choose_thresholds(..., "auto")`` (what training uses) picks among a fixed
0.5, one global threshold and per-label thresholds shrunk toward the global
one, by cross-validation on the validation scores, so that a small
validation set cannot talk it into thresholds that lose F1 on new images.

Label targets ``y_true`` are int ``[n_samples, n_labels]`` with 1 present,
0 absent and -1 unknown (left out: an unknown entry neither helps nor hurts a
threshold); scores ``y_score`` are float ``[n_samples, n_labels]``. A label is
predicted present when its score is at least its threshold. Everything is
vectorised over labels; inputs are checked by :func:`mlic.metrics.check_inputs`.
"""

from __future__ import annotations

import difflib
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlic.errors import ConfigError, DataError
from mlic.metrics import check_inputs, papers_scores, precision_recall_f1
from mlic.metrics.blocks import column_blocks

POLICIES = ("per-label", "global", "fixed", "top-k")
CHOOSERS = ("auto",)
"""Policies that choose one of ``POLICIES`` on validation data; the artifact records what they chose."""
SHRINKAGE = 10.0
"""Prior strength of per-label thresholds, in positives: a label with n known validation positives
gets ``(n t_label + SHRINKAGE t_global) / (n + SHRINKAGE)``. At 10, a label needs 10 positives
before its own optimum outweighs the global threshold; an optimum over 2 positives is mostly noise."""
AUTO_FOLDS = 5
BOOTSTRAPS = 200
"""Resamples of the validation images that estimate how much of a rule's gain over a simpler one is noise."""
BALANCES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Candidate exponents of the label prior in top-k ranking (``choose_balance``)."""
MIN_BALANCE_GAIN = 0.002
"""Per-label F1 of the top-k annotation that a balance must add on validation over ranking by score."""
UNREACHABLE = 1.0
"""Threshold of a label that cannot reach the requested precision: predicted only at certainty."""


def best_f1_thresholds(
    y_true: Any, y_score: Any, default: float = 0.5, min_precision: float | None = None
) -> np.ndarray:
    """Per-label threshold that maximises the label's F1 over its known entries.

    For each label the known entries are sorted by score once; cumulative true and
    false positives give, at every cut between distinct scores (predict present when
    ``score >= cut``)::

        F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (tp + fp + n_pos)

    The best cut is returned as the midpoint between the lowest score predicted
    present and the next lower distinct known score (that score itself when there
    is none, or when the two are adjacent floats), so that it sits between training
    scores rather than on one. Ties in F1 go to the higher threshold.

    Parameters
    ----------
    y_true : int array [n_samples, n_labels]
        1 present, 0 absent, -1 unknown (left out).
    y_score : float array [n_samples, n_labels]
        Scores, e.g. sigmoid probabilities on validation data.
    default : float, default 0.5
        Threshold of labels with no known positive, which have no F1 to maximise.
    min_precision : float, optional
        Only cuts whose precision ``tp / (tp + fp)`` reaches this count; a label
        with no such cut gets ``UNREACHABLE`` (1.0: predicted only at certainty).

    Returns
    -------
    thresholds : float64 array [n_labels]

    Examples
    --------
    >>> y_true = [[1, 0], [1, 0], [0, 1], [0, -1]]
    >>> best_f1_thresholds(y_true, [[0.9, 0.1], [0.8, 0.7], [0.3, 0.6], [0.1, 0.9]])
    array([0.55, 0.35])
    """
    c = check_inputs(y_true=y_true, y_score=y_score)
    y_true, y_score = c["y_true"], c["y_score"]
    default = float(default)
    if np.isnan(default):
        raise DataError("default must be a number, not NaN")
    n, n_labels = y_true.shape
    out = np.full(n_labels, default)
    if n == 0:
        return out
    positions = np.arange(n)
    for cols in column_blocks(n, n_labels):
        t = np.ascontiguousarray(y_true[:, cols].T)
        s = np.ascontiguousarray(y_score[:, cols].T)
        known = t >= 0
        # Unknown entries sort last (-inf is below every finite score) and never form a cut.
        s = np.where(known, s, np.array(-np.inf, dtype=s.dtype))
        order = np.argsort(-s, axis=1)
        s = np.take_along_axis(s, order, axis=1)
        t = np.take_along_axis(t, order, axis=1)
        tp = np.cumsum(t == 1, axis=1, dtype=np.int32)
        fp = np.cumsum(t == 0, axis=1, dtype=np.int32)
        n_pos, n_known = tp[:, -1], known.sum(axis=1)
        cut = np.ones(s.shape, dtype=bool)  # the last entry of each run of tied scores
        cut[:, :-1] = s[:, :-1] != s[:, 1:]
        cut &= positions < n_known[:, None]
        f1 = np.where(cut, 2.0 * tp / np.maximum(tp + fp + n_pos[:, None], 1), -1.0)
        if min_precision is not None:
            f1 = np.where(tp >= min_precision * np.maximum(tp + fp, 1), f1, -1.0)
        best = np.argmax(f1, axis=1)  # the first maximum: the highest threshold among ties
        rows = np.arange(len(best))
        upper = s[rows, best]
        lower = s[rows, np.minimum(best + 1, n - 1)]
        with np.errstate(invalid="ignore", over="ignore"):
            mid = upper / 2 + lower / 2
        inside = (best + 1 < n_known) & (mid > lower) & (mid <= upper)
        threshold = np.where(inside, mid, upper).astype(np.float64)
        if min_precision is not None:
            threshold = np.where(f1[rows, best] >= 0, threshold, UNREACHABLE)
        out[cols] = np.where(n_pos > 0, threshold, default)
    return out


def apply_thresholds(y_score: Any, thresholds: Any) -> np.ndarray:
    """Decisions ``y_score >= thresholds``.

    ``y_score`` is float [n_samples, n_labels]; ``thresholds`` a float or float
    [n_labels]. Returns bool [n_samples, n_labels].
    """
    c = check_inputs(y_score=y_score, thresholds=thresholds)
    return c["y_score"] >= c["thresholds"]


def top_k(y_score: Any, k: int) -> np.ndarray:
    """Decisions that mark the ``k`` highest scores of each row.

    Ties at the k-th score go to the labels with the lower index, so every row has
    exactly ``k`` marks. ``y_score`` is float [n_samples, n_labels]; ``k`` is an
    int in [0, n_labels]. Returns bool [n_samples, n_labels].

    Examples
    --------
    >>> top_k([[0.1, 0.5, 0.5, 0.2]], 2)
    array([[False,  True,  True, False]])
    """
    s = check_inputs(y_score=y_score)["y_score"]
    n, n_labels = s.shape
    try:
        k = operator.index(k)
    except TypeError:
        raise DataError(f"k must be an integer in [0, {n_labels}]; got {k!r}") from None
    if not 0 <= k <= n_labels:
        raise DataError(f"k must be an integer in [0, n_labels] = [0, {n_labels}]; got {k}")
    if k == 0 or n == 0:
        return np.zeros(s.shape, dtype=bool)
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]  # the k-th highest score of each row
    above = s > kth
    tied = s == kth
    # Among the scores tied with the k-th, keep the first (lowest-index) ones that fill k.
    need = k - above.sum(axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= need))


def global_threshold(y_true: Any, y_score: Any, default: float = 0.5) -> float:
    """One threshold for every label, the one that maximises micro-F1 over all known entries.

    The pooled entries are one long column for :func:`best_f1_thresholds`, so the
    same midpoint rule applies. ``default`` when there is no known positive at all.
    """
    c = check_inputs(y_true=y_true, y_score=y_score)
    pooled = best_f1_thresholds(c["y_true"].reshape(-1, 1), c["y_score"].reshape(-1, 1), default)
    return float(pooled[0])


@dataclass
class Decision:
    """How scores become labels: the artifact's one decision rule (``mlic.json``'s ``decision`` and
    ``thresholds``).

    ``policy`` is one of ``POLICIES``; ``thresholds`` are per label (top-k
    keeps them for reference but decides by rank); ``k`` is set for top-k.
    ``source`` says where the rule was chosen (``calibrated_on``,
    ``calibration_images``) and travels with it.
    """

    policy: str
    thresholds: np.ndarray
    k: int | None = None
    min_precision: float | None = None
    min_positives: int | None = None
    shrinkage: float | None = None
    chosen_by: dict | None = None
    """For a rule chosen by ``auto``: how (cross-validation) and every candidate's figures."""
    source: dict = field(default_factory=dict)
    priors: np.ndarray | None = None
    """Each label's share of positives among the training images (None: unknown)."""
    balance: float = 0.0
    """Top-k ranks an image's labels by ``score / prior ** balance`` (see ``choose_balance``): at 0 by
    score alone; above 0 a rare label with a fair score can outrank a frequent one with a higher score.
    Per-label figures (mAP, thresholds) do not change: each label's scores are only rescaled."""

    def decide(self, y_score: Any) -> np.ndarray:
        """Bool ``[n_samples, n_labels]`` decisions under this policy."""
        if self.policy == "top-k":
            return self.top(y_score, int(self.k))
        return apply_thresholds(y_score, self.thresholds)

    def top(self, y_score: Any, k: int) -> np.ndarray:
        """Bool ``[n_samples, n_labels]``: each image's ``k`` best labels, ranked as ``balance`` says."""
        return top_k(balanced(y_score, self.priors, self.balance), min(int(k), np.shape(y_score)[1]))

    def to_dict(self) -> dict:
        """The rule without its thresholds (``mlic.json`` keeps those by label name)."""
        out = {
            "policy": self.policy,
            "k": self.k,
            "min_precision": self.min_precision,
            "min_positives": self.min_positives,
            **self.source,
        }
        if self.shrinkage is not None:
            out["shrinkage"] = self.shrinkage
        if self.chosen_by is not None:
            out["chosen_by"] = self.chosen_by
        if self.balance:
            out["balance"] = self.balance
        return out


def choose_thresholds(
    y_true: Any,
    y_score: Any,
    policy: str = "per-label",
    *,
    threshold: float = 0.5,
    k: int | None = None,
    min_precision: float | None = None,
    min_positives: int = 3,
    shrinkage: float | None = None,
    folds: int = AUTO_FOLDS,
    seed: int = 0,
) -> Decision:
    """Choose a decision rule on validation data.

    - ``auto``: ``fixed`` (0.5), ``global`` or ``per-label`` with
      ``shrinkage`` (default ``SHRINKAGE``), whichever gives the best mean of
      micro- and macro-F1 in ``folds``-fold cross-validation over the
      validation images, among those that lose neither figure against 0.5;
      then refitted on all of them (:func:`choose_by_cross_validation`).

    - ``fixed``: ``threshold`` for every label.
    - ``global``: one threshold maximising micro-F1 (:func:`global_threshold`).
    - ``per-label``: each label's F1-maximising threshold (:func:`best_f1_thresholds`),
      optionally only among cuts with precision >= ``min_precision``. Fallback
      for rare labels: a label with at least one but fewer than
      ``min_positives`` known positives takes the global threshold, since an
      optimum over one or two positives is noise (with ``min_precision``, only
      if the global threshold reaches that precision on the label, else
      ``UNREACHABLE``); a label with no known positive keeps ``threshold``
      (0.5), as nothing speaks for any other value. With ``shrinkage`` s,
      each label's optimum over n known positives is pulled toward the global
      threshold: ``(n t + s t_global) / (n + s)`` (and ``min_positives`` is
      not used: the shrinkage already weighs the evidence).
    - ``top-k``: the ``k`` highest-scoring labels of each image.
    """
    valid = POLICIES + CHOOSERS
    if policy not in valid:
        close = difflib.get_close_matches(policy, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown threshold policy {policy!r}{hint} (valid: {', '.join(valid)})")
    if policy == "auto":
        return choose_by_cross_validation(
            y_true, y_score, shrinkage=shrinkage or SHRINKAGE, folds=folds, seed=seed
        )
    if shrinkage is not None and (policy != "per-label" or min_precision is not None or shrinkage < 0):
        raise ConfigError("shrinkage goes with the per-label policy (without min_precision) and is >= 0")
    if min_precision is not None and (policy != "per-label" or not 0.0 < min_precision <= 1.0):
        raise ConfigError("min_precision goes with the per-label policy and lies in (0, 1]")
    c = check_inputs(y_true=y_true, y_score=y_score)
    y_true, y_score = c["y_true"], c["y_score"]
    n_labels = y_true.shape[1]
    if policy == "fixed":
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must lie in [0, 1], got {threshold}")
        return Decision(policy, np.full(n_labels, float(threshold)))
    if policy == "top-k":
        if k is None or not 1 <= k <= n_labels:
            raise ConfigError(f"top-k needs k between 1 and {n_labels}, got {k}")
        return Decision(policy, np.full(n_labels, 0.5), k=int(k))
    glob = global_threshold(y_true, y_score)
    if policy == "global":
        return Decision(policy, np.full(n_labels, glob))
    thresholds = best_f1_thresholds(y_true, y_score, default=threshold, min_precision=min_precision)
    n_pos = (y_true == 1).sum(axis=0)
    if shrinkage is not None:
        shrunk = (n_pos * thresholds + shrinkage * glob) / np.maximum(n_pos + shrinkage, 1e-12)
        return Decision(policy, np.where(n_pos > 0, shrunk, glob), shrinkage=float(shrinkage))
    rare = (n_pos > 0) & (n_pos < min_positives)
    fallback = np.full(n_labels, glob)
    if min_precision is not None:
        decided = y_score >= glob
        tp = ((y_true == 1) & decided).sum(axis=0)
        fp = ((y_true == 0) & decided).sum(axis=0)
        fallback = np.where(tp >= min_precision * np.maximum(tp + fp, 1), glob, UNREACHABLE)
    thresholds = np.where(rare, fallback, thresholds)
    return Decision(policy, thresholds, min_precision=min_precision, min_positives=min_positives)


def choose_by_cross_validation(
    y_true: Any, y_score: Any, *, shrinkage: float = SHRINKAGE, folds: int = AUTO_FOLDS, seed: int = 0
) -> Decision:
    """The ``auto`` rule: fixed 0.5, global or shrunk per-label thresholds, by cross-validated F1.

    The validation images are cut into ``folds`` seeded folds; each candidate
    is fitted on the other folds and decides the held-out one, so that every
    image is decided by a rule that did not see it. A candidate qualifies when
    its pooled micro- and macro-F1 both reach those of the fixed 0.5 (which
    always qualifies). Among the qualifying ones, the simplest (fixed, then
    global, then per-label) whose mean of the two is within one standard
    error of the best's wins (:func:`simplest_within_one_se`) and is refitted
    on all images: a gain smaller than its own noise does not displace 0.5.
    The returned ``Decision.chosen_by`` records every candidate's figures.
    """
    c = check_inputs(y_true=y_true, y_score=y_score)
    y_true, y_score = c["y_true"], c["y_score"]
    n = len(y_true)
    candidates = {"fixed": {}, "global": {}, "per-label": {"shrinkage": shrinkage}}
    folds = min(folds, n)
    if folds < 2 or not y_true.shape[1]:  # attributes only: no label to decide
        why = {"rule": "too few images", "images": n} if y_true.shape[1] else {"rule": "no labels"}
        return Decision("fixed", np.full(y_true.shape[1], 0.5), chosen_by=why)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % folds
    weights = rng.multinomial(n, np.full(n, 1 / n), size=BOOTSTRAPS)
    figures, resampled = {}, {}
    for name, options in candidates.items():
        decided = np.zeros(y_true.shape, dtype=bool)
        for f in range(folds):
            fit = choose_thresholds(y_true[fold != f], y_score[fold != f], name, **options)
            decided[fold == f] = fit.decide(y_score[fold == f])
        figures[name] = {avg: round(float(precision_recall_f1(y_true, decided, average=avg)["f1"]), 6)
                         for avg in ("micro", "macro")}  # fmt: skip
        resampled[name] = resampled_criterion(y_true, decided, weights)
    base = figures["fixed"]
    qualified = [k for k, f in figures.items() if f["micro"] >= base["micro"] and f["macro"] >= base["macro"]]
    criteria = {k: (figures[k]["micro"] + figures[k]["macro"]) / 2 for k in qualified}
    chosen, behind = simplest_within_one_se(criteria, {k: resampled[k] for k in qualified})
    for name, (gap, se) in behind.items():
        figures[name].update(behind_best=round(gap, 6), se=round(se, 6))
    decision = choose_thresholds(y_true, y_score, chosen, **candidates[chosen])
    decision.chosen_by = {"rule": f"{folds}-fold cross-validation on the validation images",
                          "criterion": "mean of micro- and macro-F1, neither below 0.5's; the simplest "
                                       "rule within one standard error (bootstrap over the images) "
                                       "of the best",
                          "candidates": figures}  # fmt: skip
    return decision


def resampled_criterion(y_true: np.ndarray, decided: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean of micro- and macro-F1 of ``decided`` on each bootstrap resample of the images.

    ``weights`` ``[resamples, n_samples]`` counts how often each image is drawn.
    Per-label counts are weighted sums (one matrix product each, so a resample
    of 10,000 labels costs no loop); macro-F1 averages the labels with a known
    positive in that resample, as :func:`precision_recall_f1` does.
    """
    w = weights.astype(np.float32)
    positive, negative = y_true == 1, y_true == 0
    tp = w @ (positive & decided).astype(np.float32)
    fp = w @ (negative & decided).astype(np.float32)
    fn = w @ (positive & ~decided).astype(np.float32)
    denominator = 2 * tp + fp + fn
    micro = 2 * tp.sum(axis=1) / np.maximum(denominator.sum(axis=1), 1e-12)
    per_label = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)
    has_positive = (tp + fn) > 0
    macro = (per_label * has_positive).sum(axis=1) / np.maximum(has_positive.sum(axis=1), 1)
    return (micro + macro) / 2


def simplest_within_one_se(
    criteria: dict[str, float], resampled: dict[str, np.ndarray]
) -> tuple[str, dict[str, tuple[float, float]]]:
    """The first candidate (simplest first) within one standard error of the best: the one-SE rule.

    ``criteria`` holds each candidate's figure (higher is better), in order of
    complexity; ``resampled`` the same figure on shared bootstrap resamples, so
    that the standard error is that of the paired difference to the best
    (Hastie, Tibshirani and Friedman, *Elements of Statistical Learning*, 7.10).
    Returns the choice and, for every candidate, (gap to the best, its SE).
    """
    best = max(criteria, key=lambda k: (criteria[k], -list(criteria).index(k)))
    behind = {}
    for name in criteria:
        difference = resampled[best] - resampled[name]
        se = float(difference.std(ddof=1)) if len(difference) > 1 else 0.0
        behind[name] = (criteria[best] - criteria[name], se)
    chosen = next(k for k, (gap, se) in behind.items() if gap <= se)
    return chosen, behind


def label_priors(positives: Any, known: Any) -> np.ndarray:
    """Each label's share of positives among its ``known`` entries; half a positive where it has none."""
    positives, known = np.asarray(positives, dtype=np.float64), np.asarray(known, dtype=np.float64)
    return np.maximum(positives, 0.5) / np.maximum(known, 1.0)


def balanced(y_score: Any, priors: np.ndarray | None, balance: float) -> np.ndarray:
    """Scores for ranking an image's labels: ``score / prior ** balance`` (the scores when unbalanced)."""
    s = check_inputs(y_score=y_score)["y_score"]
    if not balance or priors is None:
        return s
    return s / np.asarray(priors, dtype=np.float64) ** balance


def choose_balance(y_true: Any, y_score: Any, priors: np.ndarray, k: int) -> tuple[float, dict]:
    """The exponent of the label prior for top-k ranking that gives the best per-label F1 on validation.

    The annotation literature scores an image's ``k`` best labels per label
    (CF1: mean precision and recall over the labels), where ranking by score
    alone gives frequent labels nearly every slot and rare ones none; dividing
    each score by the label's prior to a power (as the published
    nearest-neighbour annotators divide votes by a label's frequency) evens
    that. Each of ``BALANCES`` is tried; one above 0 is kept only if it adds
    ``MIN_BALANCE_GAIN`` to CF1. Returns the balance and every candidate's CF1.
    """
    c = check_inputs(y_true=y_true, y_score=y_score)
    y, s = c["y_true"], c["y_score"]
    k = max(1, min(int(k), s.shape[1]))
    figures = {
        b: float(np.nan_to_num(papers_scores(y, top_k(balanced(s, priors, b), k))["CF1"])) for b in BALANCES
    }
    best = max(figures, key=figures.get)
    if figures[best] < figures[0.0] + MIN_BALANCE_GAIN:
        best = 0.0
    return best, {"k": k, "CF1": {str(b): round(f, 6) for b, f in figures.items()}}
