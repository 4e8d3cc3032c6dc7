"""mlic.metrics.calibration: ECE and Brier equal a plain loop over labels, bins and entries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import fuzz
from mlic.errors import DataError
from mlic.metrics import calibration_figures


def reference(y: np.ndarray, s: np.ndarray, n_bins: int) -> dict:
    """The textbook definitions, one label, one bin and one entry at a time."""
    ece, brier, pooled = [], [], {}
    for j in range(y.shape[1]):
        bins: dict[int, list] = {}
        squares = []
        for i in range(y.shape[0]):
            if y[i, j] < 0:
                continue
            p = float(s[i, j])
            b = min(math.floor(p * n_bins), n_bins - 1)
            bins.setdefault(b, []).append((p, int(y[i, j] == 1)))
            pooled.setdefault(b, []).append((p, int(y[i, j] == 1)))
            squares.append((p - (y[i, j] == 1)) ** 2)
        n = sum(len(v) for v in bins.values())
        if n == 0:
            ece.append(float("nan"))
            brier.append(float("nan"))
            continue
        gap = sum(
            len(v) * abs(np.mean([t for _, t in v]) - np.mean([p for p, _ in v])) for v in bins.values()
        )
        ece.append(gap / n)
        brier.append(sum(squares) / n)
    n = sum(len(v) for v in pooled.values())
    micro = sum(
        len(v) * abs(np.mean([t for _, t in v]) - np.mean([p for p, _ in v])) for v in pooled.values()
    )
    positive = [(y[:, j] == 1).any() for j in range(y.shape[1])]
    known = y >= 0
    return {
        "ece": np.array(ece),
        "brier": np.array(brier),
        "ece_macro": np.mean([e for e, p in zip(ece, positive) if p]) if any(positive) else float("nan"),
        "ece_micro": micro / n if n else float("nan"),
        "brier_micro": ((s - (y == 1)) ** 2)[known].mean() if n else float("nan"),
    }


@st.composite
def cases(draw):
    n = draw(st.integers(1, 30))
    labels = draw(st.integers(1, 6))
    y = draw(hnp.arrays(np.int8, (n, labels), elements=st.sampled_from([-1, 0, 1])))
    grid = st.sampled_from([0.0, 0.1, 0.2, 1 / 3, 0.5, 0.7, 0.9, 1.0])  # ties and bin edges
    s = draw(hnp.arrays(np.float32, (n, labels), elements=st.one_of(grid, st.floats(0, 1, width=32))))
    return y, s, draw(st.integers(1, 20))


@given(cases())
@fuzz(400)
def test_equals_a_plain_loop(case):
    y, s, n_bins = case
    got, want = calibration_figures(y, s, n_bins), reference(y, s, n_bins)
    np.testing.assert_allclose(got["ece"], want["ece"], rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["brier"], want["brier"], rtol=1e-6, atol=1e-9, equal_nan=True)
    for key in ("ece_macro", "ece_micro", "brier_micro"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-9, equal_nan=True)
    assert got["bins"]["count"].sum() == (y >= 0).sum()


def test_perfect_and_worst_calibration():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    exact = calibration_figures(y, y.astype(float))
    assert exact["ece_macro"] == 0 and exact["brier_micro"] == 0
    wrong = calibration_figures(y, 1.0 - y)
    assert wrong["ece_macro"] == 1 and wrong["brier_macro"] == 1


def test_labels_without_positives_leave_the_macro_mean():
    y = np.array([[1, 0], [0, 0]])
    f = calibration_figures(y, np.array([[1.0, 0.5], [0.0, 0.5]]))
    assert f["ece"][1] == 0.5 and f["ece_macro"] == 0.0


def test_refuses_scores_outside_zero_one_and_bad_bins():
    with pytest.raises(DataError, match=r"probabilities in \[0, 1\]"):
        calibration_figures([[1]], [[1.5]])
    with pytest.raises(DataError, match="n_bins must be a positive integer"):
        calibration_figures([[1]], [[0.5]], n_bins=0)
