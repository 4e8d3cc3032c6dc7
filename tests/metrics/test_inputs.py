"""Tests of mlic.metrics.inputs, the gatekeeper: errors name the argument and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from mlic.errors import DataError
from mlic.metrics import (
    attribute_scores,
    average_precision,
    check_inputs,
    label_counts,
    multilabel_scores,
    subset_accuracy,
)


# -- input errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: average_precision(np.array([1, 0]), np.array([0.2, 0.3])), r"y_true must be a 2-D array"),
        (lambda: average_precision(np.ones((3, 2)), np.ones((3, 3))), r"y_score has shape \(3, 3\)"),
        (lambda: average_precision([[1, 2]], [[0.1, 0.2]]), r"y_true must hold 1 \(present\).*2 at \[0, 1\]"),
        (lambda: average_precision([[1, 0.5]], [[0.1, 0.2]]), r"y_true must hold .*found 0.5"),
        (lambda: average_precision([[1, 0]], [[np.nan, 0.2]]), r"y_score must hold finite scores; found nan"),
        (lambda: average_precision([[1, 0]], [["a", "b"]]), r"y_score must hold real numbers; got dtype"),
        (lambda: multilabel_scores([[1, 0]], [[0.1, 0.2]], [0.5]), r"thresholds must be .*= \[2\]"),
        (lambda: multilabel_scores([[1, 0]], [[0.1, 0.2]], np.nan), r"thresholds must not hold NaN"),
        (lambda: label_counts([[1, 0]], [[2, 0]]), r"y_pred must hold 0 or 1"),
        (lambda: attribute_scores([[3]], [np.ones((1, 3))], ["a"]), r"y_true\[:, 0\] holds class 3.*below 3"),
        (lambda: attribute_scores([[0]], [np.ones((1, 3))] * 2, ["a"]), r"probs has 2 arrays; expected one"),
        (lambda: attribute_scores([[0]], [np.ones((1, 3))], ["a", "b"]), r"names has 2 names"),
        (lambda: attribute_scores([[-2]], [np.ones((1, 3))], ["a"]), r"y_true must hold class indices"),
        (lambda: attribute_scores([[0.0]], [np.ones((1, 3))], ["a"]), r"y_true must hold integers"),
        (lambda: attribute_scores([[0], [1]], [np.ones((1, 3))], ["a"]), r"different numbers of samples"),
        (lambda: subset_accuracy([[1]], [[True]], [[0]], [[0], [1]]), r"attr_pred has shape"),
    ],
)  # fmt: skip
def test_errors_name_the_argument_and_expectation(call, match):
    with pytest.raises(DataError, match=match):
        call()


def test_check_inputs_returns_clean_arrays():
    c = check_inputs(y_true=[[1.0, -1.0]], y_score=np.array([[1, 0]]), y_pred=[[1, 0]], thresholds=0.3)
    assert c["y_true"].dtype == np.int8 and c["y_score"].dtype == np.float64 and c["y_pred"].dtype == bool
    np.testing.assert_array_equal(c["thresholds"], [0.3, 0.3])
    assert check_inputs(y_score=np.ones((2, 2), np.float32))["y_score"].dtype == np.float32
    assert isinstance(DataError("x"), ValueError)
