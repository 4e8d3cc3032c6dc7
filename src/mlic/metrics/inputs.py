"""The gatekeeper of every metric: one function checks the inputs and names what is wrong."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlic.errors import DataError

_LABELS, _ATTRS = "[n_samples, n_labels]", "[n_samples, n_attributes]"


def _in_range(low: int, high: int | None) -> Callable[[np.ndarray], bool]:
    """A quick test for integer arrays: every entry in [low, high], by two reductions, no mask."""

    def quick(a: np.ndarray) -> bool:
        if a.dtype.kind not in "biu" or a.size == 0:
            return a.size == 0
        return bool(a.min() >= low and (high is None or a.max() <= high))

    return quick


def _all_finite(a: np.ndarray) -> bool:
    # min and max propagate NaN and reach +-inf: two reductions instead of a mask as large as ``a``
    return a.size == 0 or bool(np.isfinite(a.min()) and np.isfinite(a.max()))


_ARRAYS = {  # key: (shape, dtype kinds, valid entries, quick test, what is expected, dtype returned)
    "y_true": (
        _LABELS,
        "biuf",
        lambda a: np.isin(a, (-1, 0, 1)),
        _in_range(-1, 1),
        "1 (present), 0 (absent) or -1 (unknown)",
        np.int8,
    ),
    "y_score": (_LABELS, "biuf", np.isfinite, _all_finite, "finite scores", None),
    "y_pred": (
        _LABELS,
        "biuf",
        lambda a: (a == 0) | (a == 1),
        _in_range(0, 1),
        "0 or 1 (or booleans)",
        bool,
    ),
    "attr_true": (
        _ATTRS,
        "biu",
        lambda a: a >= -1,
        _in_range(-1, None),
        "class indices, or -1 for unknown",
        np.int64,
    ),
    "attr_pred": (_ATTRS, "biu", lambda a: a >= 0, _in_range(0, None), "class indices (>= 0)", np.int64),
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
        shape, kinds, valid, quick, expected, dtype = _ARRAYS[key]
        a = _matrix(x, names[key], shape, kinds)
        if not quick(a):
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
