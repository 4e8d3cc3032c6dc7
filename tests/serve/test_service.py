"""Tests of mlic.serve.service: the limits a request is held to."""

from __future__ import annotations

import pytest

from mlic.errors import ConfigError
from mlic.serve import create_app


def test_limits_are_checked(predictor):
    for bad in ({"max_files": 0}, {"max_upload_bytes": -1}, {"max_image_pixels": 0}, {"max_files": 2.5}):
        with pytest.raises(ConfigError, match="must be a positive integer"):
            create_app(predictor, **bad)
    assert create_app(predictor, max_image_pixels=None).state.service.limits.max_image_pixels is None


def test_the_labels_pattern_accepts_exactly_the_names_the_server_reads(make_artifact):
    """Names with regex syntax are matched literally; one with a comma cannot be asked for, so is left out."""
    import re

    from mlic.predict import Predictor
    from mlic.schema import Attribute, LabelSchema
    from mlic.serve.service import parse_labels

    schema = LabelSchema(("a.b", "c++", "(x)", "y,z"), (Attribute("size", ("s", "l")),))
    service = create_app(Predictor(make_artifact(schema).artifact)).state.service
    fits = re.compile(service.labels_pattern()).fullmatch
    for query in ("a.b", "c++, (x)", " size ,size=l,,", "", "  "):
        assert fits(query)
        service.check_labels(parse_labels(query))  # the server reads each of them
    for query in ("aXb", "c+", "x", "y,z", "size=m", "a.b;c++", "a.b c++"):
        assert not fits(query)
        with pytest.raises(ConfigError, match="unknown label"):
            service.check_labels(parse_labels(query))
