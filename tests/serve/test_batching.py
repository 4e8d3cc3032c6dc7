"""Tests of mlic.serve.batching: requests share forward passes, and each gets exactly its own answer.

A wrapped network counts the forward passes and the images in each. Where
the order of gathering must be known, requests are handed in from one thread
inside ``Batcher.arriving`` (so a batch waits for them), or a first "plug"
pass is held until the requests under test are all pending.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from helpers import assert_records_match, expected, serving, upload
from mlic.errors import ConfigError
from mlic.serve import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, Batching, create_app
from mlic.serve.batching import Batcher

LONG = 10_000.0
"""A max_wait_ms that no test waits out: a batch leaves when full or when nothing more is on its way."""


class Counting:
    """A network that records the size of every batch it runs; ``fail`` makes the next passes raise."""

    def __init__(self, network) -> None:
        self.network, self.sizes, self.fail = network, [], 0
        self.hold: threading.Event | None = None  # set: the first pass waits for it (a plug)

    def __call__(self, batch: torch.Tensor):
        self.sizes.append(len(batch))
        if self.hold is not None and len(self.sizes) == 1:
            assert self.hold.wait(30), "the plug was never released"
        if self.fail:
            self.fail -= 1
            raise RuntimeError("the forward pass broke")
        return self.network(batch)


@pytest.fixture
def network(predictor, monkeypatch) -> Counting:
    counting = Counting(predictor.model)
    monkeypatch.setattr(predictor, "model", counting)
    return counting


@pytest.fixture(scope="module")
def tensors(predictor, digit_files) -> list[torch.Tensor]:
    """The test canvases decoded and resized to the input size, as the server hands them in."""
    out = []
    for path in digit_files["paths"][:12]:
        pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        out.append(predictor.transform(pixels.contiguous()))
    return out


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# -- the batcher -------------------------------------------------------------------------
def test_requests_share_one_pass_and_each_gets_its_own_rows_by_its_own_rule(predictor, network, tensors):
    batcher = Batcher(predictor, Batching(max_batch=6, max_wait_ms=LONG))
    parts = [tensors[0:1], tensors[1:3], tensors[3:6]]
    rules = [{}, {"top_k": 2}, {"threshold": 0.3}]
    with batcher.arriving():  # one more on its way: the batch waits until it holds 6 images
        futures = [batcher.submit(images, **rule) for images, rule in zip(parts, rules)]
        answers = [f.result(30) for f in futures]
    batcher.close()
    assert network.sizes == [6]  # one forward pass for the three requests
    network.sizes.clear()
    for (start, stop), rule, answer in zip([(0, 1), (1, 3), (3, 6)], rules, answers):
        # what Predictor.predict says of the same pass (the same six images), cut to the request's rows
        assert answer == predictor.predict(tensors[:6], **rule)[start:stop]
        assert len(answer) == stop - start
    assert [len(r["labels"]) for r in answers[1]] == [2, 2]
    assert all(r["labels"] == [n for n, p in r["scores"].items() if p >= 0.3] for r in answers[2])


def test_a_request_that_fails_its_own_rule_fails_alone(predictor, network, tensors):
    batcher = Batcher(predictor, Batching(max_batch=3, max_wait_ms=LONG))
    with batcher.arriving():
        good, bad, other = (batcher.submit([t], top_k=k) for t, k in zip(tensors, [None, 0, 1]))
        with pytest.raises(ConfigError, match="top-k must be at least 1"):
            bad.result(30)
        answers = good.result(30), other.result(30)
    batcher.close()
    assert network.sizes == [3]
    assert answers == (predictor.predict(tensors[:3])[:1], predictor.predict(tensors[:3], top_k=1)[2:3])


def test_a_broken_pass_fails_its_batch_and_the_next_is_served(predictor, network, tensors):
    batcher = Batcher(predictor, Batching(max_batch=2, max_wait_ms=LONG))
    network.fail = 1
    with batcher.arriving():
        futures = [batcher.submit([t]) for t in tensors[:2]]
        for future in futures:
            with pytest.raises(RuntimeError, match="forward pass broke"):
                future.result(30)
    assert batcher.submit(tensors[2:3]).result(30) == predictor.predict(tensors[2:3])
    batcher.close()
    assert network.sizes[:2] == [2, 1]


def test_max_batch_caps_a_pass_and_a_request_is_never_split(predictor, network, tensors):
    batcher = Batcher(predictor, Batching(max_batch=4, max_wait_ms=LONG))
    with batcher.arriving():
        a, b = batcher.submit(tensors[0:2]), batcher.submit(tensors[2:4])  # 4 images: full, one pass
        c, d = batcher.submit(tensors[4:6]), batcher.submit(tensors[6:12])  # 2 + 6 > 4: two passes
        wait_until(lambda: len(network.sizes) >= 2)
    for future in (a, b, c, d):
        future.result(30)
    batcher.close()
    assert network.sizes == [4, 2, 6]  # the request of 6 images went alone, whole
    assert d.result() == predictor.predict(tensors[6:12])


def test_a_lone_request_is_not_held_and_a_batch_waits_at_most_max_wait(predictor, network, tensors):
    batcher = Batcher(predictor, Batching(max_batch=32, max_wait_ms=LONG))
    started = time.monotonic()
    batcher.submit(tensors[:1]).result(30)  # nothing else on its way: no wait at all
    assert time.monotonic() - started < 2, "a lone request was held"
    batcher.close()
    wait = 0.3
    batcher = Batcher(predictor, Batching(max_batch=32, max_wait_ms=wait * 1000))
    batcher.submit(tensors[:1]).result(30)  # starts the thread, so that only the wait is timed below
    with batcher.arriving():  # another request on its way that does not come within the wait
        started = time.monotonic()
        batcher.submit(tensors[1:2]).result(30)
        held = time.monotonic() - started
    batcher.close()
    assert wait <= held < wait + 2, held  # waited for the other one, and then went alone
    assert network.sizes == [1, 1, 1]


def test_a_cancelled_request_is_left_out_of_the_pass(predictor, network, tensors):
    batcher = Batcher(predictor, Batching(max_batch=3, max_wait_ms=LONG))
    with batcher.arriving():
        gone, kept = batcher.submit(tensors[:1]), batcher.submit(tensors[1:2])
        assert gone.cancel()  # its client went away while it waited
        last = batcher.submit(tensors[2:3])  # three images handed in: the batch leaves
        answers = kept.result(30) + last.result(30)
    batcher.close()
    assert network.sizes == [2] and batcher.pending == 0
    assert answers == predictor.predict(tensors[1:3])
    with pytest.raises(CancelledError):
        gone.result()


def test_close_answers_what_is_pending_and_a_later_request_starts_again(predictor, network, tensors):
    batcher = Batcher(predictor, Batching(max_batch=8, max_wait_ms=LONG))
    with batcher.arriving():
        future = batcher.submit(tensors[:2])
        batcher.close()  # while the batch still waits for the request on its way
        assert future.result(30) == predictor.predict(tensors[:2])
    assert batcher.submit(tensors[2:3]).result(30) == predictor.predict(tensors[2:3])
    batcher.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch must be a positive integer"),
        ({"max_batch": 2.5}, "max_batch must be a positive integer"),
        ({"max_batch": True}, "max_batch must be a positive integer"),
        ({"max_wait_ms": -1}, "max_wait_ms must be a number of milliseconds"),
        ({"max_wait_ms": float("nan")}, "max_wait_ms must be a number of milliseconds"),
        ({"max_wait_ms": 20_000}, "max_wait_ms must be a number of milliseconds"),
        ({"max_wait_ms": "5"}, "max_wait_ms must be a number of milliseconds"),
    ],
)
def test_bad_batching_values_are_refused_by_name(predictor, options, message):
    with pytest.raises(ConfigError, match=message):
        create_app(predictor, **options)


# -- over HTTP ---------------------------------------------------------------------------
def post(url: str, paths: list[Path], params: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=upload(*paths), params=params, timeout=60)


def plugged(url: str, network: Counting, first: Path) -> threading.Thread:
    """A first request whose forward pass waits for ``network.hold``, in a thread of its own."""
    network.hold = threading.Event()
    thread = threading.Thread(target=post, args=(url, [first]))
    thread.start()
    wait_until(lambda: network.sizes)
    return thread


def test_concurrent_requests_share_a_pass_and_answer_as_an_unbatched_server(predictor, network, digit_files):
    paths, rules = digit_files["paths"][:8], [{}, {"top_k": 2}, {"threshold": 0.3}, {"top_k": 1}] * 2
    app = create_app(predictor, max_batch=8, max_wait_ms=LONG)
    with serving(app) as url, ThreadPoolExecutor(8) as pool:
        plug = plugged(url, network, digit_files["paths"][20])
        answers = [pool.submit(post, url, [p], rule) for p, rule in zip(paths, rules)]
        wait_until(lambda: app.state.service.batcher.pending == 8)  # all eight wait behind the plug
        network.hold.set()
        answers = [a.result() for a in answers]
        plug.join(30)
    assert network.sizes == [1, 8]  # the plug, then the eight requests in one pass
    network.sizes.clear()
    with TestClient(create_app(predictor, max_batch=1)) as unbatched:
        alone = [
            unbatched.post("/predict", files=upload(p), params=rule).json() for p, rule in zip(paths, rules)
        ]
    assert network.sizes == [1] * 8  # one pass per request without batching
    for path, rule, answer, unbatched_answer in zip(paths, rules, answers, alone):
        assert answer.status_code == 200
        assert answer.json()["decision"] == unbatched_answer["decision"]
        assert_records_match(answer.json()["predictions"], unbatched_answer["predictions"])
        assert_records_match(answer.json()["predictions"], expected(predictor, [path], **rule))


def test_several_files_keep_their_order_in_a_shared_pass(predictor, network, digit_files):
    paths = digit_files["paths"]
    groups = [paths[0:3], paths[3:4], paths[4:6]]
    app = create_app(predictor, max_batch=6, max_wait_ms=LONG)
    with serving(app) as url, ThreadPoolExecutor(3) as pool:
        plug = plugged(url, network, paths[20])
        answers = [pool.submit(post, url, group) for group in groups]
        wait_until(lambda: app.state.service.batcher.pending == 6)
        network.hold.set()
        answers = [a.result().json()["predictions"] for a in answers]
        plug.join(30)
    assert network.sizes == [1, 6]
    for group, answer in zip(groups, answers):
        assert [r["path"] for r in answer] == [p.name for p in group]
        assert_records_match(answer, expected(predictor, group))


def test_a_damaged_upload_fails_alone_as_without_batching(predictor, network, digit_files):
    paths, png = digit_files["paths"], digit_files["paths"][0].read_bytes()
    damaged = [("files", ("bad.png", png[: len(png) // 2], "image/png"))]
    app = create_app(predictor, max_batch=4, max_wait_ms=LONG)
    with serving(app) as url, ThreadPoolExecutor(5) as pool:
        plug = plugged(url, network, paths[20])
        good = [pool.submit(post, url, [p]) for p in paths[:4]]
        bad = httpx.post(f"{url}/predict", files=damaged, timeout=60)
        wait_until(lambda: app.state.service.batcher.pending == 4)
        network.hold.set()
        good = [g.result() for g in good]
        plug.join(30)
    assert network.sizes == [1, 4]
    with TestClient(create_app(predictor, max_batch=1)) as unbatched:
        alone = unbatched.post("/predict", files=damaged)
    assert (bad.status_code, bad.json()) == (alone.status_code, alone.json()) == (400, alone.json())
    assert alone.json()["error"] == "corrupt_image"
    for path, answer in zip(paths, good):
        assert answer.status_code == 200
        assert_records_match(answer.json()["predictions"], expected(predictor, [path]))


def test_a_broken_pass_is_a_500_for_its_batch_and_the_server_keeps_serving(predictor, network, digit_files):
    paths = digit_files["paths"]
    app = create_app(predictor, max_batch=3, max_wait_ms=LONG)
    with serving(app) as url, ThreadPoolExecutor(3) as pool:
        plug = plugged(url, network, paths[20])
        network.fail = 2  # the plug's pass, then the next
        answers = [pool.submit(post, url, [p]) for p in paths[:3]]
        wait_until(lambda: app.state.service.batcher.pending == 3)
        network.hold.set()
        answers = [a.result() for a in answers]
        plug.join(30)
        after = post(url, paths[3:4])
    assert network.sizes == [1, 3, 1]
    for answer in answers:
        assert answer.status_code == 500
        assert answer.json() == {
            "error": "internal_error",
            "detail": "RuntimeError while answering; see the server log",
        }
    assert after.status_code == 200
    assert_records_match(after.json()["predictions"], expected(predictor, paths[3:4]))


def test_a_lone_client_is_not_held_for_max_wait(predictor, digit_files):
    with serving(create_app(predictor, max_batch=32, max_wait_ms=LONG)) as url:
        started = time.monotonic()
        for path in digit_files["paths"][:3]:
            assert post(url, [path]).status_code == 200
        assert time.monotonic() - started < 5  # under LONG (10 s) for each of them


def test_batching_off_is_the_one_at_a_time_service(predictor, network, digit_files):
    app = create_app(predictor, max_batch=1, max_wait_ms=LONG)
    assert app.state.service.batcher is None
    paths = digit_files["paths"][:3]
    with TestClient(app) as client:
        answer = client.post("/predict", files=upload(*paths), params={"top_k": 2}).json()
        assert client.get("/schema").json()["batching"] == {"max_batch": 1, "max_wait_ms": LONG}
    assert network.sizes == [3]
    assert answer["predictions"] == expected(predictor, paths, top_k=2)  # exactly Predictor.predict's


def test_the_schema_reports_the_batching_settings(predictor):
    with TestClient(create_app(predictor, max_batch=12, max_wait_ms=2.5)) as client:
        schema = client.get("/schema").json()
    assert schema["batching"] == {"max_batch": 12, "max_wait_ms": 2.5}
    default = create_app(predictor).state.service.batching
    assert (default.max_batch, default.max_wait_ms) == (DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS)
