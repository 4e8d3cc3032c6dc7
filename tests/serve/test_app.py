"""Tests of mlic.serve.app: the HTTP API through TestClient and live, its OpenAPI document, no file read."""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema_rs
import numpy as np
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from PIL import Image
from schemathesis.specs.openapi.checks import positive_data_acceptance

import mlic
from helpers import MAX_BYTES, MAX_FILES, assert_alive, assert_records_match, expected, png_bytes, upload
from mlic.errors import ConfigError
from mlic.serve import Batching, create_app, serve
from mlic.serve.app import CONFIG_VARIABLE, app_from_environment
from mlic.serve.service import parse_labels


@pytest.mark.parametrize("n", [1, 3])
def test_predict_equals_the_predictor(client, predictor, digit_files, n):
    paths = digit_files["paths"][:n]
    answer = client.post("/predict", files=upload(*paths))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == expected(predictor, paths)  # labels, scores and attributes exactly
    assert body["decision"] == {"policy": "per-label", "k": None, "source": "artifact"}
    assert list(body["predictions"][0]) == ["path", "labels", "scores", "attributes"]


def test_top_k_and_threshold_override_the_artifact(client, predictor, digit_files):
    paths = digit_files["paths"][3:6]
    top2 = client.post("/predict", params={"top_k": 2}, files=upload(*paths)).json()
    assert top2["predictions"] == expected(predictor, paths, top_k=2)
    assert all(len(r["labels"]) == 2 for r in top2["predictions"])
    assert top2["decision"] == {"policy": "top-k", "k": 2, "source": "query"}
    for t in (0.0, 0.45, 1.0):
        fixed = client.post("/predict", params={"threshold": t}, files=upload(*paths)).json()
        assert fixed["predictions"] == expected(predictor, paths, threshold=t)
        for r in fixed["predictions"]:
            assert r["labels"] == [name for name, p in r["scores"].items() if p >= t]
        assert fixed["decision"] == {"policy": "fixed", "threshold": t, "source": "query"}
    beyond = client.post("/predict", params={"top_k": 1000}, files=upload(paths[0])).json()
    assert len(beyond["predictions"][0]["labels"]) == 10 and beyond["decision"]["k"] == 10


def _multipart(body: bytes, boundary: str = "b0undary") -> dict:
    return {"content": body, "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


def _chunks(total: int):
    """A body of ``total`` bytes sent in chunks, without a Content-Length (chunked transfer)."""
    yield b"--b0undary\r\nContent-Disposition: form-data; name=files; filename=x.png\r\n\r\n"
    for _ in range(total // 10_000):
        yield b"\0" * 10_000


def bad_requests(png: bytes) -> list[tuple[str, dict, int, str]]:
    """(case, httpx.post keyword arguments, status, error code) for each kind of bad input."""
    part = ("files", ("x.png", png, "image/png"))
    return [
        ("not an image", {"files": [("files", ("a.txt", b"just text", "text/plain"))]}, 415, "not_an_image"),
        ("other format", {"files": [("files", ("a.ico", b"\0\0\1\0" + png, "image/x-icon"))]}, 415,
         "not_an_image"),
        ("truncated image", {"files": [("files", ("t.png", png[: len(png) // 2], "image/png"))]}, 400,
         "corrupt_image"),
        ("damaged header", {"files": [("files", ("h.png", png[:12] + b"\xff" * 40, "image/png"))]}, 400,
         "corrupt_image"),
        ("empty file", {"files": [("files", ("e.png", b"", "image/png"))]}, 400, "empty_file"),
        ("too many files", {"files": [part] * (MAX_FILES + 1)}, 413, "too_many_files"),
        ("too large", {"files": [("files", ("big.png", png + b"\0" * MAX_BYTES, "image/png"))]}, 413,
         "upload_too_large"),
        ("too large, streamed", {"content": _chunks(3 * MAX_BYTES),
         "headers": {"content-type": "multipart/form-data; boundary=b0undary"}}, 413, "upload_too_large"),
        ("too many pixels", {"files": [("files", ("wide.png", png_bytes((2000, 1000)), "image/png"))]}, 413,
         "image_too_large"),
        ("json body", {"json": {"files": ["x.png"]}}, 415, "unsupported_media_type"),
        ("no content type", {"content": b"\x89PNG"}, 415, "unsupported_media_type"),
        ("form without files", {"data": {"name": "x"}}, 415, "unsupported_media_type"),
        ("no boundary", {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400,
         "bad_multipart"),
        ("garbled multipart", _multipart(b"not multipart at all"), 400, "bad_multipart"),
        ("unclosed multipart", _multipart(b"--b0undary\r\nContent-Disposition: form-data; name=files; "
                                          b"filename=x.png\r\n\r\n" + png), 400, "bad_multipart"),
        ("no files", _multipart(b"--b0undary--\r\n"), 400, "no_files"),
        ("other field", {"files": [part], "data": {"file": "x"}}, 400, "unexpected_field"),
        ("top_k 0", {"files": [part], "params": {"top_k": 0}}, 422, "invalid_query"),
        ("top_k text", {"files": [part], "params": {"top_k": "two"}}, 422, "invalid_query"),
        ("threshold > 1", {"files": [part], "params": {"threshold": 1.5}}, 422, "invalid_query"),
        ("threshold < 0", {"files": [part], "params": {"threshold": -0.1}}, 422, "invalid_query"),
        ("threshold nan", {"files": [part], "params": {"threshold": "nan"}}, 422, "invalid_query"),
        ("both overrides", {"files": [part], "params": {"top_k": 2, "threshold": 0.5}}, 422, "invalid_query"),
    ]  # fmt: skip


CASES = [case[0] for case in bad_requests(b"")]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(client, digit_files, case):
    png = digit_files["paths"][0].read_bytes()
    _, kwargs, status, error = next(c for c in bad_requests(png) if c[0] == case)
    answer = client.post("/predict", **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "detail"} and body["error"] == error and body["detail"]
    assert " object at 0x" not in body["detail"]  # names the upload, never a Python object
    assert_alive(client, digit_files)


def test_errors_name_the_file_and_unknown_routes_are_json(client):
    answer = client.post("/predict", files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert answer.json()["detail"].startswith("notes.txt: not a PNG")
    assert client.get("/nowhere").json() == {"error": "not_found", "detail": "Not Found"}
    assert client.delete("/predict").status_code == 405 and client.delete("/predict").json()["error"]


def test_an_unexpected_failure_is_a_json_500_and_the_server_keeps_serving(client, digit_files, monkeypatch):
    service = client.app.state.service

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(service.predictor, "run", broken)  # the forward pass, batched or not
    answer = client.post("/predict", files=upload(digit_files["paths"][0]))
    assert answer.status_code == 500
    assert answer.json()["error"] == "internal_error" and answer.json()["detail"].startswith("RuntimeError")
    monkeypatch.undo()
    assert_alive(client, digit_files)


def test_schema_health_and_openapi(client, predictor):
    schema = client.get("/schema").json()
    artifact = predictor.artifact
    assert schema["labels"] == list(artifact.schema.labels)
    assert schema["attributes"] == artifact.schema.to_dict()["attributes"]
    assert schema["thresholds"] == dict(zip(artifact.schema.labels, artifact.thresholds.tolist()))
    assert schema["decision"]["policy"] == "per-label"
    assert schema["model"]["backbone"] == artifact.model.backbone
    assert schema["preprocessing"]["image_size"] == [32, 32]
    limits = {"max_upload_bytes": MAX_BYTES, "max_files": MAX_FILES, "max_image_pixels": 1_000_000}
    assert schema["limits"] == limits
    assert schema["training"]["epochs"] >= 1 and "config" not in schema["training"]
    assert schema["runtime"] == {"runtime": "torch", "precision": "fp32"}
    assert str(artifact.path) not in json.dumps(schema)  # no server paths
    assert client.get("/health").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/predict"]["post"]
    files = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["files"]
    assert files["maxItems"] == MAX_FILES and files["items"]["contentMediaType"] == "application/octet-stream"
    assert {"200", "400", "413", "415", "422", "500"} <= set(post["responses"])
    parameters = {p["name"]: p for p in post["parameters"]}
    assert set(parameters) == {"top_k", "threshold", "explain", "labels"}
    assert parameters["explain"]["schema"]["type"] == "boolean"
    labels = parameters["labels"]["schema"]  # what the server reads, down to the names it knows
    assert labels["type"] == "string" and labels["maxLength"] == 10_000
    fits = re.compile(labels["pattern"]).fullmatch
    assert fits("digit_7") and fits(" digit_7 , largest=large,,count") and fits("")
    assert not fits("dgit_7") and not fits("digit_7;digit_8") and not fits("largest=huge")
    assert {"/predict", "/schema", "/health"} <= set(spec["paths"]) and "/" not in spec["paths"]
    assert client.get("/docs").status_code == 200


# -- the API against its own OpenAPI document (schemathesis) ---------------------------------
IMAGE_TYPES = {
    "image/png": ("PNG", ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")),
    "image/jpeg": ("JPEG", ("L", "RGB", "CMYK")),
    "image/gif": ("GIF", ("L", "P", "RGB")),
    "image/bmp": ("BMP", ("1", "L", "P", "RGB")),
    "image/tiff": ("TIFF", ("1", "L", "RGB", "RGBA", "CMYK", "I;16")),
    "image/webp": ("WEBP", ("RGB", "RGBA")),
}
"""The Pillow format and modes of what schemathesis sends for each media type the document names."""
OPENAPI_EXAMPLES = 1000
TRUE = ("1", "on", "t", "true", "y", "yes")
"""What the server reads as true in a boolean query parameter (pydantic's strings, any case)."""
"""Cases of the fuzzing phase per operation (positive and negative together)."""
OPENAPI_CHECKS = [
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "response_headers_conformance", "positive_data_acceptance",
    "negative_data_rejection", "missing_required_header", "unsupported_method", "allow_header_conformance",
]  # fmt: skip


@st.composite
def images(draw, fmt: str, modes: tuple[str, ...]) -> bytes:
    """A small image of random pixels saved as ``fmt``: a file that the API must accept."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    mode = draw(st.sampled_from(modes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":  # 16-bit grey, which PNG and TIFF keep
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    else:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def openapi(client):
    """The app's own ``/openapi.json``, loaded by schemathesis, which calls the app in-process (ASGI)."""
    for media_type, (fmt, modes) in IMAGE_TYPES.items():  # files of positive cases are real images
        schemathesis.openapi.media_type(media_type, images(fmt, modes))
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    config = schema.config
    config.seed = 20250
    config.phases.update(phases=["examples", "coverage", "fuzzing"])  # not stateful: the API has no links
    modes = list(schemathesis.GenerationMode)  # positive and negative
    config.generation.update(modes=modes, max_examples=OPENAPI_EXAMPLES, deterministic=True, database="none")
    config.checks.update(included_check_names=OPENAPI_CHECKS)
    rejection = config.checks.negative_data_rejection  # 413 is how the API refuses more than max_files files
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return schema


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # as in the fuzz test above
@schemathesis.pytest.from_fixture("openapi").parametrize()
def test_the_api_keeps_to_its_openapi_document(case):
    """Schemathesis' own cases for every operation: no 5xx, and every answer as the document says.

    The coverage phase (boundary values, each constraint broken, other
    methods), then a derandomized fuzzing phase of ``OPENAPI_EXAMPLES``
    positive and negative cases per operation: 1,053 requests, the same ones
    on every run, 1,033 of them to ``POST /predict`` and 10 each to ``GET
    /schema`` and ``GET /health``, which take no input (about 20 s on two
    cores). Positive uploads are real images of each format
    (``IMAGE_TYPES``), so they must be answered 200. A positive case with both
    ``top_k`` and ``threshold`` is exempt from ``positive_data_acceptance``
    alone: OpenAPI cannot say that they exclude each other (their
    descriptions do), and the API refuses the pair with a 422. So is one
    that names ``labels`` without ``explain=true``, for the same reason.
    The names ``labels`` may hold are in the document (its ``pattern``).
    """
    response = case.call()
    query = case.query or {}
    both = {"top_k", "threshold"} <= set(query)
    explained = str(query.get("explain")).lower() in TRUE  # as the server reads a boolean
    unexplained = bool(parse_labels(str(query.get("labels") or ""))) and not explained
    exempt = [positive_data_acceptance] if both or unexplained else None
    case.validate_response(response, excluded_checks=exempt)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "detail"}


def test_the_document_refuses_what_the_server_refuses(client, digit_files):
    """Requests that schemathesis found valid by the document, but that the server refuses, now break it."""
    png = digit_files["paths"][0].read_bytes()
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    valid = jsonschema_rs.validator_for(content["schema"]).is_valid
    media_types = {t.strip() for t in content["encoding"]["files"]["contentType"].split(",")}
    assert media_types == set(IMAGE_TYPES)  # what a part may hold, as sniffed from its bytes
    part = ("files", ("x.png", png, "image/png"))
    cases = [
        ({"files": ["x"], "other": "y"}, {"files": [part], "data": {"other": "y"}}, 400, "unexpected_field"),
        ({"files": [""]}, {"files": [("files", ("e.png", b"", "image/png"))]}, 400, "empty_file"),
        ({"files": ["x"] * (MAX_FILES + 1)}, {"files": [part] * (MAX_FILES + 1)}, 413, "too_many_files"),
        ({}, _multipart(b"--b0undary--\r\n"), 400, "no_files"),
    ]
    assert valid({"files": ["x"] * MAX_FILES})
    for instance, request, status, error in cases:
        assert not valid(instance), instance
        answer = client.post("/predict", **request)
        assert (answer.status_code, answer.json()["error"]) == (status, error)
    parameters = {p["name"]: p["description"] for p in spec["paths"]["/predict"]["post"]["parameters"]}
    assert "not with threshold" in parameters["top_k"] and "not with top_k" in parameters["threshold"]
    both = client.post("/predict", params={"top_k": 1, "threshold": 0.5}, files=[part])
    assert both.status_code == 422 and both.json()["error"] == "invalid_query"


def test_serve_binds_loopback_by_default_and_warns_otherwise(predictor, tiny_run, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from mlic.cli import app as cli

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    serve(predictor)
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8000
    result = CliRunner().invoke(cli, ["serve", str(tiny_run)])  # `mlic serve ARTIFACT`: the same default
    assert result.exit_code == 0 and calls[-1]["host"] == "127.0.0.1", result.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for host in ("localhost", "::1", "127.0.0.2"):
            serve(predictor, host=host)
    for host in ("0.0.0.0", "::", "192.168.1.10"):
        with pytest.warns(UserWarning, match="no authentication"):
            serve(predictor, host=host, port=9000)
        assert calls[-1]["host"] == host
    with pytest.raises(ConfigError, match="log level"):
        serve(predictor, log_level="loud")


@pytest.fixture
def uvicorn_runs(monkeypatch) -> list[tuple]:
    """``uvicorn.run`` replaced: each call's app, its keywords, and the apps that its workers would build."""
    import uvicorn

    calls = []

    def run(app, **kwargs):
        workers = [app_from_environment() for _ in range(kwargs["workers"])] if kwargs.get("factory") else []
        calls.append((app, kwargs, workers))

    monkeypatch.setattr(uvicorn, "run", run)
    return calls


def test_workers_build_their_apps_from_the_environment(tiny_run, uvicorn_runs, monkeypatch):
    monkeypatch.delenv(CONFIG_VARIABLE, raising=False)
    serve(tiny_run, port=8123, workers=2, max_batch=4, max_wait_ms=1, max_files=3, runtime="torch")
    app, kwargs, workers = uvicorn_runs[-1]
    assert app == "mlic.serve.app:app_from_environment" and kwargs["factory"] is True
    assert (kwargs["workers"], kwargs["port"], kwargs["host"]) == (2, 8123, "127.0.0.1")
    assert len(workers) == 2 and workers[0] is not workers[1]
    for worker in workers:  # each process builds its own app and model, with every option
        service = worker.state.service
        assert (service.batching, service.limits.max_files) == (Batching(4, 1), 3)
        assert service.predictor.artifact.path == workers[0].state.service.predictor.artifact.path
        assert str(tiny_run) in str(service.predictor.artifact.path)
    assert workers[0].state.service.predictor is not workers[1].state.service.predictor
    assert all(worker.state.freeze_at_start for worker in workers)  # a worker process only serves
    assert CONFIG_VARIABLE not in os.environ  # restored once uvicorn returns
    with pytest.raises(ConfigError, match="is not set"):
        app_from_environment()


def test_a_serving_process_freezes_its_startup_objects_and_create_app_does_not(predictor, monkeypatch):
    """``serve`` marks its app, whose start then takes the loaded model out of the collector's full passes."""
    import uvicorn

    from mlic.serve import app as app_module

    frozen, served = [], []
    monkeypatch.setattr(app_module, "freeze_startup_objects", lambda: frozen.append(True))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    with TestClient(create_app(predictor)) as client:
        assert client.get("/health").status_code == 200
    assert frozen == []  # an app made by create_app leaves the collector alone
    serve(predictor)
    with TestClient(served[-1]) as client:
        assert client.get("/health").status_code == 200
    assert frozen == [True]


def test_bad_worker_options_fail_before_any_worker_starts(predictor, tiny_run, uvicorn_runs):
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        serve(tiny_run, workers=0)
    with pytest.raises(ConfigError, match="give the artifact's path"):
        serve(predictor, workers=2)
    with pytest.raises(ConfigError, match="max_batch must be a positive integer"):
        serve(tiny_run, workers=2, max_batch=0)  # the app is built once here first
    with pytest.raises(ConfigError, match="as JSON"):
        serve(tiny_run, workers=2, device=torch.device("cpu"))
    assert uvicorn_runs == []


@pytest.mark.slow  # two worker processes each start Python and load the model: about 10 s
def test_two_workers_serve(tiny_run, predictor, digit_files):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "mlic", "serve", str(tiny_run), "--workers", "2", "--port", str(port)]
    source = str(Path(mlic.__file__).parents[1])  # this mlic, wherever it was imported from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen([*command, "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while server.poll() is None and not _healthy(url):
            assert time.monotonic() < deadline, "mlic serve --workers 2 did not answer /health"
            time.sleep(0.1)
        assert server.poll() is None, f"mlic serve exited with {server.returncode}"
        paths = digit_files["paths"][:8]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: httpx.post(f"{url}/predict", files=upload(p)), paths))
        for path, answer in zip(paths, answers):
            assert answer.status_code == 200
            assert_records_match(answer.json()["predictions"], expected(predictor, [path]))
        assert len(_workers(server.pid)) == 2
    finally:
        server.terminate()
        server.wait(30)
    assert _workers(server.pid) == []


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _workers(pid: int) -> list[int]:
    """The worker processes that uvicorn spawned under ``pid`` (Linux: read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


# -- security: no path of the client's choosing, bounded uploads and pixels ---------------------
@contextlib.contextmanager
def file_access() -> Iterator[list[str]]:
    """While open, records every file that any thread of this process opens, creates, moves or removes.

    Spies on ``open`` (``builtins``, ``io``, ``os``, ``pathlib.Path``), the
    file-system calls of ``os``, the makers of temporary files in
    ``tempfile``, and ``PIL.Image.open`` given anything but a stream. The
    calls still happen; the list says which were made.
    """
    seen: list[str] = []

    def spy(owner, name: str):
        function = getattr(owner, name)

        @functools.wraps(function)
        def recorded(*args, **kwargs):
            target = args[0] if args else next(iter(kwargs.values()), None)
            if not (owner is Image and hasattr(target, "read")):
                seen.append(f"{owner.__name__}.{name}({target!r})")
            return function(*args, **kwargs)

        return recorded

    os_calls = ("open", "mkdir", "makedirs", "remove", "unlink", "rename", "replace", "rmdir", "symlink")
    makers = ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile")
    watched = [(builtins, "open"), (io, "open"), (Path, "open"), (Image, "open")]
    watched += [(os, name) for name in os_calls] + [(tempfile, name) for name in makers]
    with pytest.MonkeyPatch.context() as patch:
        for owner, name in watched:
            patch.setattr(owner, name, spy(owner, name))
        yield seen


def test_the_file_spy_sees_what_it_watches(tmp_path):
    """Each kind of call that ``file_access`` watches is recorded, so that an empty record means something."""
    target = tmp_path / "x.png"
    Image.new("L", (2, 2)).save(target)
    data = target.read_bytes()
    with file_access() as seen:
        open(target, "rb").close()
        target.open("rb").close()
        os.close(os.open(target, os.O_RDONLY))
        Image.open(target).close()
        Image.open(io.BytesIO(data)).close()  # a stream: no path involved
        tempfile.TemporaryFile().close()
        with tempfile.SpooledTemporaryFile(max_size=1) as spooled:
            spooled.write(b"on disk once over max_size")
        os.rmdir(tempfile.mkdtemp(dir=tmp_path))
    calls = {entry.split("(")[0] for entry in seen}
    assert calls >= {"builtins.open", "io.open", "Path.open", "os.open", "os.mkdir", "os.rmdir"}
    assert calls >= {"PIL.Image.open", "tempfile.mkdtemp", "tempfile.TemporaryFile"}
    assert "tempfile.SpooledTemporaryFile" in calls
    assert not [entry for entry in seen if "BytesIO" in entry]


def passwd_line() -> str:
    """A line of /etc/passwd, which no answer may contain (a typical one where the file is missing)."""
    try:
        return Path("/etc/passwd").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "root:x:0:0:root:/root:/bin/sh"


HOSTILE_NAMES = [
    b"../../etc/passwd", b"/etc/passwd", b"C:\\x", b"..\\..\\Windows\\win.ini", b"\x00",
    b"a\x00/../../etc/passwd", b"x" * 4000, b"file:///etc/passwd", b"~/.ssh/id_rsa", b"/dev/zero",
    b"/proc/self/environ", b"\\\\host\\share\\x", b"%2e%2e%2fetc%2fpasswd", b"/tmp/upload.png", b".", b"..",
]  # fmt: skip


ECHOED = [
    "passwd", "passwd", "x", "win.ini", None, "passwd", "x" * 255, "passwd", "id_rsa", "zero", "environ", "x",
    "%2e%2e%2fetc%2fpasswd", "upload.png", None, None,
]  # fmt: skip
"""The ``path`` that the API answers for each of ``HOSTILE_NAMES``: only the last component, as text."""


PATHLIKE_QUERY = {"path": "/etc/passwd", "file": "../../etc/passwd", "artifact": "/", "url": "file:///etc"}


PATHLIKE_HEADERS = {
    "X-File": "/etc/passwd", "Referer": "file:///etc/passwd", "Content-Location": "/etc/passwd",
    "X-Forwarded-Path": "/../../etc/passwd", "Cookie": "path=/etc/passwd",
}  # fmt: skip


def every_format(path: Path) -> list[bytes]:
    """The image at ``path`` saved in each format the API accepts (TIFF compressed, so libtiff decodes it)."""
    pixels, saved = Image.open(path).convert("RGB"), []
    for fmt, _ in IMAGE_TYPES.values():
        buffer = io.BytesIO()
        pixels.save(buffer, fmt, **({"compression": "tiff_lzw"} if fmt == "TIFF" else {}))
        saved.append(buffer.getvalue())
    return saved


def test_no_request_makes_the_server_open_a_path(client, digit_files):
    """File names, part headers, a boundary, fields, query values and headers that look like paths."""
    secret, images = passwd_line(), every_format(digit_files["paths"][2])
    boundary = b"../../etc/passwd"  # a valid boundary
    headers = {**PATHLIKE_HEADERS, "Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}
    part = ("files", ("x.png", images[0], "image/png"))
    refused = [
        ({"params": {"top_k": "/etc/passwd"}, "files": [part]}, 422),
        ({"params": {"threshold": "../../etc/passwd"}, "files": [part]}, 422),
        ({"files": [part], "data": {"/etc/passwd": "x"}}, 400),
        ({"files": [part], "data": {"path": "/etc/passwd"}}, 400),
        ({"files": [("/etc/passwd", ("/etc/passwd", images[0], "image/png"))]}, 400),
        ({"content": b"/etc/passwd", "headers": {"Content-Type": "text/plain"}}, 415),
    ]
    answers, echoed = [], []
    with file_access() as seen:
        for start in range(0, len(HOSTILE_NAMES), MAX_FILES):
            body = b"".join(
                b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="' + name
                + b'"\r\nContent-Type: image/png; name=/etc/passwd\r\nContent-Location: /etc/passwd\r\n\r\n'
                + images[(start + i) % len(images)] + b"\r\n"
                for i, name in enumerate(HOSTILE_NAMES[start : start + MAX_FILES])
            ) + b"--" + boundary + b"--\r\n"  # fmt: skip
            answers.append(client.post("/predict", params=PATHLIKE_QUERY, content=body, headers=headers))
            assert answers[-1].status_code == 200, answers[-1].text
            echoed += [record["path"] for record in answers[-1].json()["predictions"]]
        for kwargs, status in refused:
            answers.append(client.post("/predict", **kwargs))
            assert answers[-1].status_code == status, answers[-1].text
        for url in ("/schema", "/health", "/openapi.json", "/docs", "/"):
            answers.append(client.get(url, params=PATHLIKE_QUERY, headers=PATHLIKE_HEADERS))
            assert answers[-1].status_code == 200
    assert seen == []  # nothing opened, and no temporary file: every upload is held in memory
    assert not [answer.request.url for answer in answers if secret in answer.text]
    assert echoed == ECHOED


TRAVERSALS = [
    "/../../../../etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/.%2e/.%2e/etc/passwd", "/static/../../etc/passwd", "/docs/../../x", "/docs/..%2f..%2fetc/passwd",
    "//etc/passwd", "/predict/../../../etc/passwd", "/schema/..;/..;/etc/passwd",
    "/openapi.json/../../etc/passwd", "/file:///etc/passwd", "/etc/passwd%00.png",
    "/%5c..%5c..%5cetc%5cpasswd", "/%c0%ae%c0%ae/etc/passwd",
]  # fmt: skip


def raw_get(base: str, target: str) -> tuple[int, bytes]:
    """``GET target`` sent byte for byte over a socket (no client normalises it): status and answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_traversal_urls_reach_no_file(live):
    """Request targets that climb out of a route, sent raw to uvicorn: JSON 404s, and no file opened."""
    secret = passwd_line().encode()
    with file_access() as seen:
        answers = {target: raw_get(live, target) for target in TRAVERSALS}
        docs = raw_get(live, "/docs?url=/etc/passwd")
    assert seen == []
    not_found = b'{"error":"not_found","detail":"Not Found"}'
    assert {t: status for t, (status, answer) in answers.items() if not answer.endswith(not_found)} == {}
    assert docs[0] == 200
    assert not [t for t, (_, answer) in [*answers.items(), ("docs", docs)] if secret in answer]


def test_concurrent_requests_get_their_own_answers(live, predictor, digit_files):
    paths = digit_files["paths"][:8]
    wanted = {p.name: expected(predictor, [p])[0] for p in paths}

    def post(path: Path) -> dict:
        return httpx.post(f"{live}/predict", files=upload(path), timeout=60).json()["predictions"][0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, paths * 3))
    for answer in answers:  # batched with others or not: the same up to float rounding
        assert_records_match([answer], [wanted[answer["path"]]])


def test_explain_returns_a_png_map_per_decided_label_and_asked_label(client, predictor, digit_files):
    import base64

    paths = digit_files["paths"][:2]
    body = client.post(
        "/predict", params={"explain": "true", "labels": "digit_7"}, files=upload(*paths)
    ).json()
    plain = expected(predictor, paths)
    for record, want in zip(body["predictions"], plain):
        maps = record.pop("maps")
        assert record == want  # the rest of the record is unchanged
        names = list(maps)
        assert names[: len(want["labels"])] == want["labels"] and "digit_7" in names
        assert f"largest={want['attributes']['largest']['class']}" in names
        for url in maps.values():
            data = base64.b64decode(url.removeprefix("data:image/png;base64,"))
            with Image.open(io.BytesIO(data)) as im:
                assert im.format == "PNG" and max(im.size) <= 512
    assert "maps" not in client.post("/predict", files=upload(paths[0])).json()["predictions"][0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"labels": "digit_1"}, "labels goes with explain"),
        ({"explain": "true", "labels": "dgit_1"}, "dgit_1"),
    ],
)
def test_explain_refuses_bad_labels_with_a_422(client, digit_files, params, message):
    answer = client.post("/predict", params=params, files=upload(digit_files["paths"][0]))
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_query"
    assert message in answer.json()["detail"]
