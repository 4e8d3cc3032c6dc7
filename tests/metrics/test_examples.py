"""The docstring examples of mlic.metrics run and hold."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("module", ["attributes", "calibration", "classification", "ranking", "summary"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"mlic.metrics.{module}"))
    assert result.failed == 0 and (result.attempted > 0 or module == "classification")
