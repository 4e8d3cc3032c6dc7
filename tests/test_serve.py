"""Tests of mlic.serve: the HTTP API through TestClient, a live uvicorn server, and its page in Chromium."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlic.errors import ConfigError
from mlic.predict import Predictor, load
from mlic.serve import create_app, serve
from mlic.serve_page import PAGE

MAX_FILES = 4
MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def predictor(tiny_run) -> Predictor:
    return load(tiny_run)


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    app = create_app(predictor, max_upload_bytes=MAX_BYTES, max_files=MAX_FILES, max_image_pixels=1_000_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def upload(*paths: Path) -> list[tuple]:
    """``files=`` of an httpx request: each path as a part named ``files``."""
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def expected(predictor: Predictor, paths: list[Path], **kw) -> list[dict]:
    """What ``Predictor.predict`` says of the files, with the file names as paths (as the API answers)."""
    return [dict(r, path=p.name) for r, p in zip(predictor.predict(paths, **kw), paths)]


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "PNG")
    return buffer.getvalue()


def assert_alive(client: TestClient, digit_files: dict) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    answer = client.post("/predict", files=upload(digit_files["paths"][0]))
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1


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

    monkeypatch.setattr(service.predictor, "predict", broken)
    answer = client.post("/predict", files=upload(digit_files["paths"][0]))
    assert answer.status_code == 500
    assert answer.json()["error"] == "internal_error" and answer.json()["detail"].startswith("RuntimeError")
    monkeypatch.undo()
    assert_alive(client, digit_files)


def test_file_names_are_only_echoed_back(client, digit_files):
    png = digit_files["paths"][0].read_bytes()
    names = ["../../etc/passwd", "C:\\Windows\\win.ini", "x" * 400]
    parts = [("files", (name, png, "image/png")) for name in names]
    paths = [r["path"] for r in client.post("/predict", files=parts).json()["predictions"]]
    assert paths == ["passwd", "win.ini", "x" * 255]
    raw = [b'filename="a\x01b\x7f\x1bc.png"', b""]  # control characters as sent; no file name at all
    body = b"".join(b'--b0undary\r\nContent-Disposition: form-data; name="files"; ' + name + b"\r\n\r\n"
                    + png + b"\r\n" for name in raw) + b"--b0undary--\r\n"  # fmt: skip
    paths = [r["path"] for r in client.post("/predict", **_multipart(body)).json()["predictions"]]
    assert paths == ["abc.png", None]


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
    assert str(artifact.path) not in json.dumps(schema)  # no server paths
    assert client.get("/health").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/predict"]["post"]
    files = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["files"]
    assert files["maxItems"] == MAX_FILES and files["items"]["contentMediaType"] == "application/octet-stream"
    assert {"200", "400", "413", "415", "422", "500"} <= set(post["responses"])
    assert {p["name"] for p in post["parameters"]} == {"top_k", "threshold"}
    assert {"/predict", "/schema", "/health"} <= set(spec["paths"]) and "/" not in spec["paths"]
    assert client.get("/docs").status_code == 200


class Tags(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_loads_nothing_from_elsewhere(client):
    answer = client.get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert answer.text == PAGE
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    text = answer.text.lower()
    assert "http://" not in text and "https://" not in text
    tags = Tags(answer.text).tags
    assert not [t for t, _ in tags if t in ("link", "iframe", "object", "embed", "base")]
    for tag, attrs in tags:
        for key in ("src", "href", "action"):
            assert key not in attrs or not attrs[key].startswith(("/", "http", "file:")), (tag, attrs)
    ids = {a.get("id") for _, a in tags}
    assert {"file", "drop", "threshold", "top-k", "filter", "results", "error"} <= ids


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, for random bytes behind a TIFF header
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00",
                            b"RIFF\0\0\0\0WEBP"]),
    tail=st.binary(max_size=300),
    cut=st.floats(0, 1),
    top_k=st.one_of(st.none(), st.integers(-3, 10**20).map(str), st.text(max_size=5)),
)  # fmt: skip
def test_any_upload_is_answered_without_a_5xx(client, digit_files, prefix, tail, cut, top_k):
    """Random bytes behind each accepted format's signature, cut real PNGs, odd query values."""
    png = digit_files["paths"][1].read_bytes()
    for data in (prefix + tail, png[: int(cut * len(png))] + tail):
        params = {} if top_k is None else {"top_k": top_k}
        answer = client.post("/predict", params=params, files=[("files", ("f", data, "image/png"))])
        assert answer.status_code < 500, answer.text
        keys = {"predictions", "decision"} if answer.is_success else {"error", "detail"}
        assert set(answer.json()) == keys


def test_limits_are_checked(predictor):
    for bad in ({"max_files": 0}, {"max_upload_bytes": -1}, {"max_image_pixels": 0}, {"max_files": 2.5}):
        with pytest.raises(ConfigError, match="must be a positive integer"):
            create_app(predictor, **bad)
    assert create_app(predictor, max_image_pixels=None).state.service.limits.max_image_pixels is None


def test_serve_binds_loopback_by_default_and_warns_otherwise(predictor, monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    serve(predictor)
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8000
    with pytest.warns(UserWarning, match="no authentication"):
        serve(predictor, host="0.0.0.0", port=9000)
    assert calls[-1]["host"] == "0.0.0.0"
    with pytest.raises(ConfigError, match="log level"):
        serve(predictor, log_level="loud")


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


def test_concurrent_requests_get_their_own_answers(live, predictor, digit_files):
    paths = digit_files["paths"][:8]
    wanted = {p.name: expected(predictor, [p])[0] for p in paths}

    def post(path: Path) -> dict:
        return httpx.post(f"{live}/predict", files=upload(path), timeout=60).json()["predictions"][0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, paths * 3))
    for answer in answers:
        got, want = answer, wanted[answer["path"]]
        assert got["labels"] == want["labels"] and got["attributes"] == want["attributes"]
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-6)  # batch of 1 either way


def test_page_in_headless_chromium(live, digit_files, tmp_path, chromium):
    """Upload a MultiDigits image through the file input; the page shows what the API decides."""

    def api(path: Path, **params) -> dict:
        return httpx.post(f"{live}/predict", params=params, files=upload(path), timeout=60).json()

    # an image on which the artifact's thresholds decide something, so that highlighting is tested
    paths = digit_files["paths"]
    image = next((p for p in paths if api(p)["predictions"][0]["labels"]), paths[0])
    own, top2 = api(image)["predictions"][0], api(image, top_k=2)["predictions"][0]
    requests, errors = [], []
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live}/", wait_until="load")
    page.wait_for_function("document.getElementById('meta').textContent.includes('10 labels')")
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#results[data-done='1']")
    shown = read_card(page)
    page.fill("#top-k", "2")
    page.press("#top-k", "Enter")
    page.wait_for_selector("#results[data-done='2']")
    shown_top2 = read_card(page)
    page.fill("#threshold", "1.5")  # clears top k; the server refuses it and the page says so
    page.press("#threshold", "Enter")
    page.wait_for_selector("#results[data-done='3']")
    error = page.text_content("#error") if page.is_visible("#error") else None
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    assert not errors, errors
    assert all(url.startswith((live, "blob:", "data:")) for url in requests), requests
    assert_card(shown, own, marks=10)
    assert_card(shown_top2, top2, marks=0)
    assert len(shown_top2["chips"]) == 2
    assert error is not None and error.startswith("invalid_query: query parameter 'threshold'")


def read_card(page) -> dict:
    """What the first result card shows: chips, highlighted bars, every bar's label and text, attributes."""
    card = page.query_selector(".card")
    rows = card.query_selector_all(".bar-row:not([hidden])")
    return {
        "name": card.query_selector(".name").text_content(),
        "chips": [c.text_content() for c in card.query_selector_all(".chip")],
        "on": [r.get_attribute("data-label") for r in card.query_selector_all(".bar-row.on")],
        "bars": {r.get_attribute("data-label"): r.query_selector(".p").text_content() for r in rows},
        "marks": len(card.query_selector_all(".mark")),
        "attributes": {
            a.get_attribute("data-attribute"): a.query_selector(".v").text_content()
            for a in card.query_selector_all(".attr")
        },
    }


def assert_card(shown: dict, record: dict, marks: int) -> None:
    assert shown["name"] == record["path"]
    assert sorted(shown["chips"]) == sorted(record["labels"]) == sorted(shown["on"])
    assert shown["bars"] == {name: f"{p:.3f}" for name, p in record["scores"].items()}
    assert list(shown["bars"]) == sorted(record["scores"], key=record["scores"].get, reverse=True)
    assert shown["marks"] == marks
    assert shown["attributes"] == {name: a["class"] for name, a in record["attributes"].items()}
