"""Fixtures of the server's tests: the tiny run's predictor, a TestClient over the app, a live server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient

from helpers import MAX_BYTES, MAX_FILES
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
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(predictor), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()
