"""Tests of mlic.inference.runtimes: the runtimes by name."""

from __future__ import annotations

import pytest

from mlic.errors import ConfigError
from mlic.inference import RUNTIMES, load_network
from mlic.models import Classifier


def test_load_network_by_name(make_artifact):
    assert isinstance(load_network(make_artifact().artifact, "torch"), Classifier)


def test_an_unknown_runtime_lists_the_known_ones(make_artifact):
    with pytest.raises(ConfigError, match=r"unknown runtime 'tensorrt'; expected one of \['torch', 'onnx'\]"):
        load_network(make_artifact().artifact, "tensorrt")
    assert list(RUNTIMES) == ["torch", "onnx"]
