"""Metrics for multi-label targets with unknowns, and for attributes.

Label targets ``y_true`` are int ``[n_samples, n_labels]`` with 1 present,
0 absent and -1 unknown; label scores ``y_score`` are float ``[n_samples,
n_labels]`` (probabilities). Attribute targets are int ``[n_samples,
n_attributes]`` class indices, -1 unknown; attribute probabilities are a list of
``[n_samples, n_classes]`` arrays, one per attribute.

Unknown targets are left out everywhere: they count as neither positive nor
negative, neither right nor wrong. A label with no known positive has no AP, no
precision, recall or F1 (NaN) and is left out of macro averages; its false
positives still count in micro averages and the Hamming loss. Every function is
vectorised over labels (columns are processed in blocks to bound memory) and
checks its inputs with :func:`check_inputs`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mlic.errors import DataError

_BLOCK_ELEMENTS = 1 << 22  # entries per column block: bounds the memory of the sorting metrics


# -- the gatekeeper -------------------------------------------------------------------------------
_LABELS, _ATTRS = "[n_samples, n_labels]", "[n_samples, n_attributes]"
_ARRAYS = {  # key: (shape, dtype kinds, valid entries, what is expected, dtype returned)
    "y_true": (
        _LABELS,
        "biuf",
        lambda a: np.isin(a, (-1, 0, 1)),
        "1 (present), 0 (absent) or -1 (unknown)",
        np.int8,
    ),
    "y_score": (_LABELS, "biuf", np.isfinite, "finite scores", None),
    "y_pred": (_LABELS, "biuf", lambda a: (a == 0) | (a == 1), "0 or 1 (or booleans)", bool),
    "attr_true": (_ATTRS, "biu", lambda a: a >= -1, "class indices, or -1 for unknown", np.int64),
    "attr_pred": (_ATTRS, "biu", lambda a: a >= 0, "class indices (>= 0)", np.int64),
}


def check_inputs(*, thresholds=None, attr_probs=None, argnames=None, **arrays: Any) -> dict[str, Any]:
    """Validate metric inputs; return the given ones as clean numpy arrays, by key.

    Keys: ``y_true`` (values in {-1, 0, 1}; int8), ``y_score`` (finite reals;
    floating), ``y_pred`` (0/1; bool), all 2-D and of one shape; ``thresholds``
    (scalar or ``[n_labels]``, no NaN; float64 ``[n_labels]``); ``attr_true``
    (class indices or -1) and ``attr_pred`` (class indices), int64 2-D of one shape;
    ``attr_probs`` (one finite ``[n_samples, n_classes]`` array per attribute; the
    classes bound ``attr_true``). All must have the same number of rows. None means
    not given. ``argnames`` maps keys to the caller's argument names for the
    messages. Raises ``DataError`` naming the bad argument, value or shape, and what
    was expected.
    """
    names = {k: k for k in (*_ARRAYS, "thresholds", "attr_probs")} | dict(argnames or {})
    out: dict[str, Any] = {}
    for key, x in arrays.items():
        if key not in _ARRAYS:
            raise TypeError(f"check_inputs() got an unexpected argument {key!r}")
        if x is None:
            continue
        shape, kinds, valid, expected, dtype = _ARRAYS[key]
        a = _matrix(x, names[key], shape, kinds)
        _check_values(a, valid(a), names[key], expected)
        out[key] = a.astype(dtype or (a.dtype if a.dtype.kind == "f" else np.float64), copy=False)
    for group in (("y_true", "y_score", "y_pred"), ("attr_true", "attr_pred")):
        given = [k for k in group if k in out]
        for k in given[1:]:
            if out[k].shape != out[given[0]].shape:
                raise DataError(
                    f"{names[k]} has shape {out[k].shape} but {names[given[0]]} has shape "
                    f"{out[given[0]].shape}; they must match"
                )
    if thresholds is not None:
        n_labels = next((out[k].shape[1] for k in ("y_true", "y_score", "y_pred") if k in out), None)
        out["thresholds"] = _thresholds(thresholds, n_labels, names["thresholds"])
    n_attr = next((out[k].shape[1] for k in ("attr_true", "attr_pred") if k in out), None)
    if attr_probs is not None:
        out["attr_probs"] = _attr_probs(attr_probs, n_attr, out.get("attr_true"), names)
    rows = {names[k]: v.shape[0] for k, v in out.items() if k in _ARRAYS}
    rows |= {f"{names['attr_probs']}[{j}]": p.shape[0] for j, p in enumerate(out.get("attr_probs", []))}
    if len(set(rows.values())) > 1:
        raise DataError(f"inputs have different numbers of samples (rows): {rows}; expected equal")
    return out


def _matrix(x: Any, name: str, shape: str, kinds: str = "biuf") -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D array {shape}; got shape {a.shape}")
    if a.dtype.kind not in kinds:
        what = "integers" if "f" not in kinds else "real numbers"
        raise DataError(f"{name} must hold {what}; got dtype {a.dtype}")
    return a


def _check_values(a: np.ndarray, ok: np.ndarray, name: str, expected: str) -> None:
    if not ok.all():
        where = [int(i) for i in np.argwhere(~ok)[0]]
        raise DataError(f"{name} must hold {expected}; found {a[tuple(where)].item()!r} at {where}")


def _thresholds(t: Any, n_labels: int | None, name: str) -> np.ndarray:
    t = np.asarray(t)
    bad_length = t.ndim == 1 and n_labels is not None and t.shape[0] != n_labels
    if t.dtype.kind not in "biuf" or t.ndim > 1 or bad_length:
        raise DataError(
            f"{name} must be a real scalar or an array [n_labels] = [{n_labels}]; "
            f"got shape {t.shape}, dtype {t.dtype}"
        )
    if np.isnan(t).any():
        raise DataError(f"{name} must not hold NaN")
    n = t.shape[0] if t.ndim == 1 else (n_labels or 0)
    return np.broadcast_to(t.astype(np.float64), (n,)).copy()


def _attr_probs(probs: Sequence[Any], n_attr: int | None, y: np.ndarray | None, names: dict) -> list:
    name = names["attr_probs"]
    probs = list(probs)
    if n_attr is not None and len(probs) != n_attr:
        raise DataError(f"{name} has {len(probs)} arrays; expected one per attribute ({n_attr})")
    out = []
    for j, p in enumerate(probs):  # one step per attribute
        p = _matrix(p, f"{name}[{j}]", "[n_samples, n_classes]").astype(np.float64, copy=False)
        _check_values(p, np.isfinite(p), f"{name}[{j}]", "finite probabilities")
        if p.shape[1] < 1:
            raise DataError(f"{name}[{j}] has no columns; expected [n_samples, n_classes]")
        if y is not None and p.shape[0] == y.shape[0] and (y[:, j] >= p.shape[1]).any():
            raise DataError(
                f"{names['attr_true']}[:, {j}] holds class {y[:, j].max()}; expected -1 or a "
                f"class index below {p.shape[1]} (the columns of {name}[{j}])"
            )
        out.append(p)
    return out


def _column_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of columns whose blocks hold about ``_BLOCK_ELEMENTS`` entries."""
    step = max(1, _BLOCK_ELEMENTS // max(n_rows, 1))
    for start in range(0, n_cols, step):
        yield slice(start, min(start + step, n_cols))


# -- ranking --------------------------------------------------------------------------------------
def average_precision(y_true: Any, y_score: Any) -> np.ndarray:
    """Average precision (AP) of each label, over its known entries.

    AP summarises the precision-recall curve as the precision at each distinct
    score threshold, weighted by the increase in recall from the previous one::

        AP = sum_n (R_n - R_{n-1}) P_n

    Tied scores form one threshold, as in
    :func:`sklearn.metrics.average_precision_score`, which this equals per label
    on the known entries. ``y_true`` is int [n_samples, n_labels] (1 present,
    0 absent, -1 unknown: left out), ``y_score`` float of the same shape. Returns
    float64 [n_labels], NaN for labels with no known positive.

    Examples
    --------
    >>> average_precision([[1, 0], [0, -1], [1, 1]], [[0.9, 0.2], [0.5, 0.9], [0.4, 0.1]])
    array([0.83333333, 0.5       ])
    """
    c = check_inputs(y_true=y_true, y_score=y_score)
    y_true, y_score = c["y_true"], c["y_score"]
    n, n_labels = y_true.shape
    ap = np.full(n_labels, np.nan)
    if n == 0:
        return ap
    for cols in _column_blocks(n, n_labels):
        s = np.ascontiguousarray(y_score[:, cols].T)
        order = np.argsort(-s, axis=1)
        s = np.take_along_axis(s, order, axis=1)
        t = np.take_along_axis(np.ascontiguousarray(y_true[:, cols].T), order, axis=1)
        pos = t == 1
        tp = np.cumsum(pos, axis=1, dtype=np.int32)
        fp = np.cumsum(t == 0, axis=1, dtype=np.int32)
        # Each entry takes tp and fp at the end of its run of tied scores (its threshold).
        end = np.ones(s.shape, dtype=bool)
        end[:, :-1] = s[:, :-1] != s[:, 1:]
        last = np.where(end, np.arange(n), n - 1)
        last = np.minimum.accumulate(last[:, ::-1], axis=1)[:, ::-1]
        tp_end = np.take_along_axis(tp, last, axis=1)
        fp_end = np.take_along_axis(fp, last, axis=1)
        precision = tp_end / np.maximum(tp_end + fp_end, 1)
        # Each positive raises recall by 1 / n_pos at its threshold.
        n_pos = tp[:, -1]
        total = np.where(pos, precision, 0.0).sum(axis=1)
        ap[cols] = np.where(n_pos > 0, total / np.maximum(n_pos, 1), np.nan)
    return ap


def mean_average_precision(y_true: Any, y_score: Any) -> float:
    """Macro mean of :func:`average_precision` over labels with at least one known positive.

    Returns NaN when no label has a known positive.
    """
    return _nanmean(average_precision(y_true, y_score))


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


# -- decisions ------------------------------------------------------------------------------------
def _tally(y_true: np.ndarray, y_pred=None, y_score=None, thresholds=None) -> dict[str, np.ndarray]:
    """Per-label tp, fp, fn, tn and per-sample known and wrong counts, over known entries.

    Decisions are ``y_pred``, or ``y_score >= thresholds`` block by block.
    """
    n, n_labels = y_true.shape
    out = {k: np.zeros(n_labels, np.int64) for k in ("tp", "fp", "fn", "tn")}
    known_rows, wrong_rows = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for cols in _column_blocks(n, n_labels):
        t = y_true[:, cols]
        p = y_pred[:, cols] if y_pred is not None else y_score[:, cols] >= thresholds[cols]
        pos, neg = t == 1, t == 0
        out["tp"][cols] = (pos & p).sum(axis=0)
        out["fp"][cols] = (neg & p).sum(axis=0)
        out["fn"][cols] = (pos & ~p).sum(axis=0)
        out["tn"][cols] = (neg & ~p).sum(axis=0)
        known_rows += (pos | neg).sum(axis=1)
        wrong_rows += ((pos & ~p) | (neg & p)).sum(axis=1)
    out["known_rows"], out["wrong_rows"] = known_rows, wrong_rows
    return out


def label_counts(y_true: Any, y_pred: Any) -> dict[str, np.ndarray]:
    """True/false positives/negatives of each label over its known entries.

    ``y_true`` is int [n_samples, n_labels] (1, 0, -1 unknown: left out); ``y_pred``
    bool or {0, 1} of the same shape. Returns int64 arrays [n_labels] under
    ``"tp"``, ``"fp"``, ``"fn"``, ``"tn"``.
    """
    c = check_inputs(y_true=y_true, y_pred=y_pred)
    t = _tally(c["y_true"], y_pred=c["y_pred"])
    return {k: t[k] for k in ("tp", "fp", "fn", "tn")}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


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
    - ``hamming_loss``: wrong known entries / known entries;
    - ``label_subset_accuracy``: share of samples whose known labels are all right,
      over samples with at least one known label.

    Undefined figures (no known positive, no known entry) are NaN.

    ``y_true`` is int [n_samples, n_labels] (1, 0, -1 unknown), ``y_score`` float of
    the same shape, ``thresholds`` a float or [n_labels]. Returns a dict with
    ``"mAP"``, ``"micro_precision"``, ``"micro_recall"``, ``"micro_f1"``,
    ``"macro_precision"``, ``"macro_recall"``, ``"macro_f1"``, ``"hamming_loss"``,
    ``"label_subset_accuracy"`` (floats); ``"per_label"``: arrays [n_labels] ``"ap"``,
    ``"precision"``, ``"recall"``, ``"f1"``, ``"support"`` (known positives),
    ``"threshold"``; ``"labels_without_positives"``: label indices.
    """
    c = check_inputs(y_true=y_true, y_score=y_score, thresholds=thresholds)
    y_true, y_score, thresholds = c["y_true"], c["y_score"], c["thresholds"]
    t = _tally(y_true, y_score=y_score, thresholds=thresholds)
    tp, fp, fn = t["tp"], t["fp"], t["fn"]
    support = tp + fn
    scored = support > 0
    undefined = np.where(scored, 1.0, np.nan)
    precision = _ratio(tp, tp + fp) * undefined
    recall = _ratio(tp, support) * undefined
    f1 = _ratio(2 * tp, 2 * tp + fp + fn) * undefined
    ap = average_precision(y_true, y_score)
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    known, wrong = t["known_rows"], t["wrong_rows"]
    rows = known > 0
    return {
        "mAP": _nanmean(ap),
        "micro_precision": float(_ratio(TP, TP + FP)),
        "micro_recall": float(_ratio(TP, TP + FN)),
        "micro_f1": float(_ratio(2 * TP, 2 * TP + FP + FN)),
        "macro_precision": _nanmean(precision),
        "macro_recall": _nanmean(recall),
        "macro_f1": _nanmean(f1),
        "hamming_loss": float(wrong.sum() / known.sum()) if known.sum() else float("nan"),
        "label_subset_accuracy": float((wrong[rows] == 0).mean()) if rows.any() else float("nan"),
        "per_label": dict(
            ap=ap, precision=precision, recall=recall, f1=f1, support=support, threshold=thresholds
        ),
        "labels_without_positives": np.flatnonzero(~scored).tolist(),
    }


# -- attributes and whole samples -----------------------------------------------------------------
def attribute_scores(y_true: Any, probs: Sequence[Any], names: Sequence[str]) -> dict[str, dict]:
    """Accuracy of each attribute over its known targets, deciding by argmax.

    ``y_true`` is int [n_samples, n_attributes] of class indices (-1 unknown: left
    out); ``probs`` one float array [n_samples, n_classes] per attribute; ``names``
    one name per attribute. Returns ``{name: {"accuracy": float, "support": int}}``
    where support counts known targets; accuracy is NaN when there are none.
    """
    c = check_inputs(
        attr_true=y_true, attr_probs=probs, argnames={"attr_true": "y_true", "attr_probs": "probs"}
    )
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != len(c["attr_probs"]):
        raise DataError(f"names has {len(names)} names; expected one per attribute ({len(c['attr_probs'])})")
    out = {}
    for j, (name, p) in enumerate(zip(names, c["attr_probs"], strict=True)):  # one step per attribute
        y = c["attr_true"][:, j]
        known = y >= 0
        right = int((p[known].argmax(axis=1) == y[known]).sum())
        n_known = int(known.sum())
        out[name] = {"accuracy": right / n_known if n_known else float("nan"), "support": n_known}
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
    if "attr_true" in c:
        t, p = c["attr_true"], c["attr_pred"]
        known = known + (t >= 0).sum(axis=1)
        wrong = wrong + ((t >= 0) & (t != p)).sum(axis=1)
    rows = known > 0
    return float((wrong[rows] == 0).mean()) if rows.any() else float("nan")


# -- everything -----------------------------------------------------------------------------------
def evaluate_arrays(
    schema: Any, label_true: Any, label_score: Any, attr_true: Any, attr_probs: Any, thresholds: Any
) -> dict[str, Any]:
    """All metrics of a model's outputs on one data set, as a JSON-serialisable dict.

    Combines :func:`multilabel_scores` (labels, decided by ``label_score >=
    thresholds``), :func:`attribute_scores` (argmax) and :func:`subset_accuracy`
    (labels and attributes together). Undefined figures are None, never NaN; the
    label figures are None when the schema has no labels.

    ``schema`` is a :class:`~mlic.schema.LabelSchema`; ``label_true``,
    ``label_score`` are [n_samples, n_labels] and ``attr_true`` [n_samples,
    n_attributes] as elsewhere here, ``attr_probs`` one [n_samples, n_classes] array
    per attribute (None where the schema has none); ``thresholds`` a float or
    [n_labels] (None: 0.5). Keys: ``n_samples``, ``mAP``, ``micro_f1``, ``macro_f1``, ``micro_precision``,
    ``micro_recall``, ``macro_precision``, ``macro_recall``, ``hamming_loss``,
    ``subset_accuracy``, ``attributes`` ({name: {accuracy, support}}), ``per_label``
    ({label: {ap, precision, recall, f1, support, threshold}}),
    ``labels_without_positives`` (label names).
    """
    has_labels, has_attrs = schema.n_labels > 0, schema.n_attributes > 0
    given = {"label_true": label_true, "label_score": label_score} if has_labels else {}
    given |= {"attr_true": attr_true, "attr_probs": attr_probs} if has_attrs else {}
    if any(v is None for v in given.values()):
        raise DataError(
            f"the schema has {schema.n_labels} labels and {schema.n_attributes} attributes; "
            f"expected arrays for {list(given)}"
        )
    c = check_inputs(
        y_true=given.get("label_true"),
        y_score=given.get("label_score"),
        thresholds=(0.5 if thresholds is None else thresholds) if has_labels else None,
        attr_true=given.get("attr_true"),
        attr_probs=given.get("attr_probs"),
        argnames={"y_true": "label_true", "y_score": "label_score"},
    )
    widths = [c[k].shape[1] for k in ("y_true", "attr_true") if k in c] + [
        p.shape[1] for p in c.get("attr_probs", [])
    ]
    expected = [schema.n_labels] * has_labels + [schema.n_attributes] * has_attrs
    expected += [len(a.classes) for a in schema.attributes]
    if widths != expected:
        raise DataError(
            f"the columns of {[k for k in given if k != 'label_score']} are {widths}; expected "
            f"{expected} for this schema (labels, attributes, classes per attribute)"
        )
    n = next(v.shape[0] for v in c.values() if isinstance(v, np.ndarray) and v.ndim == 2)
    report: dict[str, Any] = {"n_samples": int(n)}
    keys = "mAP micro_f1 macro_f1 micro_precision micro_recall macro_precision macro_recall hamming_loss"
    keys = keys.split()
    label_pred = attr_pred = None
    if has_labels:
        m = multilabel_scores(c["y_true"], c["y_score"], c["thresholds"])
        report.update({k: _json(m[k]) for k in keys})
        label_pred = c["y_score"] >= c["thresholds"]
        per = m["per_label"]
        report["per_label"] = {
            name: {k: _json(per[k][j]) for k in ("ap", "precision", "recall", "f1", "support", "threshold")}
            for j, name in enumerate(schema.labels)
        }
        report["labels_without_positives"] = [schema.labels[j] for j in m["labels_without_positives"]]
    else:
        report.update(dict.fromkeys(keys))
        report["per_label"], report["labels_without_positives"] = {}, []
    report["attributes"] = {}
    if has_attrs:
        scores = attribute_scores(c["attr_true"], c["attr_probs"], schema.attribute_names)
        report["attributes"] = {k: {m: _json(v) for m, v in d.items()} for k, d in scores.items()}
        attr_pred = np.stack([p.argmax(axis=1) for p in c["attr_probs"]], axis=1)
    acc = subset_accuracy(c.get("y_true"), label_pred, c.get("attr_true"), attr_pred)
    report["subset_accuracy"] = _json(acc)
    return report


def _json(x: Any) -> float | int | None:
    """A plain Python number, or None for NaN."""
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return None if np.isnan(x) else x
