"""Fixtures of the server's tests: the tiny run's predictor, a TestClient over the app, a live server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers import MAX_BYTES, MAX_FILES, serving
from mlic.predict import Predictor, load
from mlic.serve import create_app


@pytest.fixture(scope="module")
def predictor(tiny_run) -> Predictor:
    return load(tiny_run)


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    app = create_app(predictor, max_upload_bytes=MAX_BYTES, max_files=MAX_FILES, max_image_pixels=1_000_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def live(predictor):
    """The app served by uvicorn on a free loopback port, in a thread of this process."""
    with serving(create_app(predictor)) as url:
        yield url
