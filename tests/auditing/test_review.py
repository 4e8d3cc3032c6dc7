"""Tests of mlic.auditing.review: the review file, the table, decisions, and apply (exactly the changes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlic.auditing.review import (
    DECISIONS,
    SUGGESTIONS,
    apply_decisions,
    check_decisions,
    read_suggestions,
    set_targets,
)
from mlic.auditing.run import write_review
from mlic.data.formats.jsonl import read_jsonl, write_jsonl
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.errors import ConfigError, DataError
from mlic.schema import LabelSchema


def test_set_targets_changes_exactly_the_given_pairs():
    rng = np.random.default_rng(0)
    for fill in (0, -1):
        dense = rng.choice([-1, 0, 1], size=(30, 6), p=[0.3, 0.5, 0.2]).astype(np.int8)
        if fill == -1:
            dense[rng.random(dense.shape) < 0.5] = -1
        lists = LabelLists.from_dense(dense)
        rows, cols = rng.integers(0, 30, 20), rng.integers(0, 6, 20)
        values = rng.choice([0, 1], 20).astype(np.int8)
        want = dense.copy()
        want[rows, cols] = values
        got = set_targets(lists, rows, cols, values)
        assert got.fill == lists.fill
        np.testing.assert_array_equal(got.dense(), want)


@pytest.fixture
def audited(tmp_path):
    """A written audit of 12 images x 3 labels: settings, data.jsonl, suggestions (2+ missing, 1 wrong)."""
    schema = LabelSchema(("cat", "dog", "owl"))
    y = np.zeros((12, 3), np.int8)
    y[:6, 0] = 1
    y[6:, 1] = 1
    y[0, 2] = 1
    y[1, 2] = -1  # unknown, kept by apply
    paths = [str(tmp_path / f"img{i}.png") for i in range(12)]
    manifest = Manifest(schema, paths, y, np.zeros((12, 0)), source="toy")
    p = np.where(y == 1, 0.9, 0.05).astype(np.float32)
    p[7, 0], p[8, 0] = 0.88, 0.85  # two dogs that also look like cats
    p[3, 0] = 0.01  # a cat given, scored like a non-cat
    out = tmp_path / "audit"
    write_jsonl(manifest, out / "data.jsonl")
    (out / "audit.json").write_text(json.dumps({"schema": schema.to_dict(), "data_file": None}))
    write_review(out, manifest, p)
    return out, manifest


def test_review_file_is_sorted_and_complete(audited):
    out, manifest = audited
    records = read_suggestions(out / SUGGESTIONS)
    assert [r["rank"] for r in records] == list(range(1, len(records) + 1))
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    pairs = {(r["row"], r["label"], r["kind"]) for r in records}
    assert {(7, "cat", "missing"), (8, "cat", "missing"), (3, "cat", "wrong")} <= pairs
    for r in records:
        assert set(r) >= {"image", "label", "given", "probability", "rank", "reason", "kind", "confidence"}
        assert r["image"] == manifest.paths[r["row"]]
    table = (out / "labels.csv").read_text().splitlines()
    assert table[0].startswith("label,given_positives,") and len(table) == 4


def test_apply_writes_exactly_the_accepted_changes(audited, tmp_path):
    out, manifest = audited
    records = read_suggestions(out / SUGGESTIONS)
    rank = {(r["row"], r["label"], r["kind"]): r["rank"] for r in records}
    decisions = [
        {"rank": rank[(7, "cat", "missing")], "decision": "accept"},
        {"rank": rank[(3, "cat", "wrong")], "decision": "accept"},
        {"rank": rank[(8, "cat", "missing")], "decision": "reject"},
    ]
    (out / DECISIONS).write_text(json.dumps({"decisions": decisions}))
    before = (out / "data.jsonl").read_text()
    result = apply_decisions(out, tmp_path / "fixed.jsonl")
    assert (result["added"], result["removed"], result["rejected"]) == (1, 1, 1)
    assert (out / "data.jsonl").read_text() == before  # the audited data is left alone
    fixed = read_jsonl(tmp_path / "fixed.jsonl", schema=manifest.schema)
    want = manifest.labels.copy()
    want[7, 0], want[3, 0] = 1, 0
    np.testing.assert_array_equal(fixed.labels, want)
    assert fixed.labels[1, 2] == -1 and fixed.paths == manifest.paths
    with pytest.raises(ConfigError, match="exists already"):
        apply_decisions(out, tmp_path / "fixed.jsonl")
    with pytest.raises(ConfigError, match="the audited data"):
        apply_decisions(out, out / "data.jsonl", overwrite=True)


def test_decisions_are_checked_against_the_suggestions(audited):
    out, _ = audited
    records = read_suggestions(out / SUGGESTIONS)
    with pytest.raises(DataError, match="not the rank of a suggestion"):
        check_decisions({"decisions": [{"rank": 999, "decision": "accept"}]}, records, "d.json")
    with pytest.raises(DataError, match=r"d.json, decision 1, field 'decision'"):
        check_decisions({"decisions": [{"rank": 1, "decision": "maybe"}]}, records, "d.json")
    with pytest.raises(DataError, match="another audit"):
        check_decisions([{"rank": 1, "label": "zebra", "decision": "accept"}], records, "d.json")
    last = check_decisions(
        [{"rank": 1, "decision": "accept"}, {"rank": 1, "decision": "reject"}], records, "d"
    )
    assert [d["decision"] for d in last] == ["reject"]
    (out / DECISIONS).write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        apply_decisions(out, out / "x.jsonl")


def test_a_broken_review_file_names_the_line(tmp_path):
    path = tmp_path / SUGGESTIONS
    path.write_text('{"rank": 1, "row": 0, "label": "a", "kind": "missing"}\n{"rank": 2}\n')
    with pytest.raises(DataError, match="line 2: no 'row' field"):
        read_suggestions(path)
