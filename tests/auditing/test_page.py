"""Tests of mlic.auditing.page: a self-contained page; in headless Chromium, accept, reject, then apply."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from mlic.auditing.page import review_server
from mlic.auditing.review import DECISIONS, PAGE, SUGGESTIONS, apply_decisions, read_suggestions
from mlic.auditing.run import write_review
from mlic.data.formats.jsonl import read_jsonl, write_jsonl
from mlic.data.manifest import Manifest
from mlic.errors import DataError
from mlic.schema import LabelSchema


@pytest.fixture
def audit_dir(tmp_path):
    """An audit of 10 image files whose suggestions are four missing labels (no wrong ones)."""
    schema = LabelSchema(("cat", "dog"))
    y = np.zeros((10, 2), np.int8)
    y[:5, 0] = 1
    y[5:, 1] = 1
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(paths[-1])
    manifest = Manifest(schema, paths, y, np.zeros((10, 0)), source="toy")
    p = np.where(y == 1, 0.9, 0.05).astype(np.float32)
    p[5:9, 0] = (0.95, 0.93, 0.91, 0.89)  # four dogs that look like cats
    out = tmp_path / "audit"
    write_jsonl(manifest, out / "data.jsonl")
    (out / "audit.json").write_text(json.dumps({"schema": schema.to_dict(), "data_file": None}))
    write_review(out, manifest, p)
    return out, manifest


def test_the_page_embeds_its_images_and_loads_nothing_else(audit_dir):
    out, _ = audit_dir
    text = (out / PAGE).read_text()
    assert text.count("data:image/jpeg;base64,") == 4
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert 'src="/' not in text


def test_review_in_headless_chromium_accept_two_reject_one_then_apply(audit_dir, tmp_path, chromium):
    out, manifest = audit_dir
    records = read_suggestions(out / SUGGESTIONS)
    assert [r["kind"] for r in records] == ["missing"] * 4
    server = review_server(out, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    errors = []
    try:
        page = chromium.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_selector("body[data-ready='1']")
        assert page.inner_text("#label") == records[0]["label"]
        for key, saved in (("a", 1), ("a", 2), ("r", 3)):
            page.keyboard.press(key)
            page.wait_for_selector(f"#status[data-saved='{saved}']")
    finally:
        server.shutdown()
        server.server_close()
    assert errors == []
    saved = json.loads((out / DECISIONS).read_text())["decisions"]
    assert [(d["rank"], d["decision"]) for d in saved] == [(1, "accept"), (2, "accept"), (3, "reject")]
    result = apply_decisions(out, tmp_path / "fixed.jsonl")
    assert (result["added"], result["removed"], result["rejected"], result["undecided"]) == (2, 0, 1, 1)
    fixed = read_jsonl(tmp_path / "fixed.jsonl", schema=manifest.schema)
    diff = fixed.labels.astype(int) - manifest.labels.astype(int)
    assert diff.sum() == 2 and (diff >= 0).all()
    assert {(int(i), manifest.schema.labels[j]) for i, j in zip(*np.nonzero(diff))} == {
        (records[0]["row"], records[0]["label"]),
        (records[1]["row"], records[1]["label"]),
    }


def test_the_server_refuses_decisions_of_another_audit(audit_dir):
    import urllib.error
    import urllib.request

    out, _ = audit_dir
    server = review_server(out, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/decisions"
    try:
        body = json.dumps({"decisions": [{"rank": 99, "decision": "accept"}]}).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=10)
        assert e.value.code == 400 and "not the rank of a suggestion" in e.value.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert not (out / DECISIONS).exists()
    with pytest.raises(DataError, match="no such file"):
        review_server(out.parent / "nothing")
