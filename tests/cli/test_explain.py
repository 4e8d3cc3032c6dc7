"""Tests of mlic.cli.explain: one folder of overlays and one JSON line per image."""

from __future__ import annotations

import json

from PIL import Image

from helpers import invoke


def test_explain_writes_overlays_of_decided_and_named_labels(tiny_run, digit_files, tmp_path):
    files = digit_files["paths"][:3]
    out = invoke("explain", tiny_run, *files, "--out", tmp_path / "maps", "--labels", "digit_0,largest")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [str(f) for f in files]
    for r in records:
        names = list(r["maps"])
        assert names[: len(r["labels"])] == r["labels"] and "digit_0" in names
        assert {"largest=small", "largest=medium", "largest=large"} <= set(names)
        assert any(n.startswith("count=") for n in names)
        with Image.open(r["maps"]["digit_0"]) as im:
            assert im.size == (64, 64)


def test_explain_refuses_an_unknown_label_in_one_line(tiny_run, digit_files, tmp_path):
    error = invoke(
        "explain", tiny_run, digit_files["paths"][0], "--out", tmp_path, "--labels", "digit_11", code=2
    )
    assert error.startswith("error: unknown label 'digit_11'")
