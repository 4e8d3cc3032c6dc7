"""Tests of mlic.auditing.run: an audit end to end (folds' training stood in for), continued, and refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlic
from mlic.auditing import audit
from mlic.auditing.review import read_suggestions
from mlic.data import multidigits
from mlic.errors import ConfigError


def test_audit_writes_its_files_and_continues(tmp_path, fake_train):
    m = multidigits("test", 40, seed=2)
    out = tmp_path / "audit"
    summary = audit(m, out, folds=3, verbose=False, max_epochs=1, lr=0.01)
    assert summary["status"] == "done" and summary["mode"] == "full" and summary["images"] == 40
    assert len(fake_train) == 3 and all(c["max_epochs"] == 1 and c["lr"] == 0.01 for c in fake_train)
    assert all(c["image_size"] == 64 and c["hflip"] is False for c in fake_train)  # MultiDigits' own
    for name in ("suggestions.jsonl", "labels.csv", "review.html", "scores.npy", "data.jsonl", "audit.json"):
        assert (out / name).is_file(), name
    records = read_suggestions(out / "suggestions.jsonl")
    assert len(records) == sum(summary["suggestions"].values())
    assert json.loads((out / "audit.json").read_text())["status"] == "done"
    scores = np.load(out / "scores.npy")
    assert scores.shape == (40, 10) and np.isfinite(scores).all()
    # the same audit again: nothing trained, the same suggestions
    again = audit(m, out, folds=3, verbose=False, max_epochs=1, lr=0.01)
    assert len(fake_train) == 3 and again["suggestions"] == summary["suggestions"]
    with pytest.raises(ConfigError, match=r"other settings .*folds"):
        audit(m, out, folds=4, verbose=False, max_epochs=1, lr=0.01)


def test_audit_refuses_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        audit(multidigits("test", 10), tmp_path, verbose=False)
    with pytest.raises(ConfigError, match="sets \\['val_data'\\] itself"):
        audit(multidigits("test", 10), tmp_path / "new", val_data="x.csv", verbose=False)


def test_the_public_api_reaches_the_audit():
    assert mlic.audit is audit
    assert mlic.apply_audit.__name__ == "apply_decisions"
    assert callable(mlic.rank_suggestions)
