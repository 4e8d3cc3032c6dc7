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
