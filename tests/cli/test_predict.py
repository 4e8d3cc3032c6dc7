"""Tests of mlic.cli.predict: one JSON line per image, decisions overridden by --top-k and --threshold."""

from __future__ import annotations

import json

from helpers import invoke


def test_predict_overrides_with_top_k_and_threshold(tiny_run, digit_files):
    files = digit_files["paths"][:5]
    top2 = [json.loads(line) for line in invoke("predict", tiny_run, *files, "--top-k", "2").splitlines()]
    assert all(len(r["labels"]) == 2 for r in top2)
    # ranked as training chose: score / prior ** balance (mlic.json's label_priors, decision.balance)
    described = json.loads((tiny_run / "artifact" / "mlic.json").read_text())
    priors, balance = described["label_priors"], described["decision"].get("balance", 0.0)
    for r in top2:
        ranked = {name: score / priors[name] ** balance for name, score in r["scores"].items()}
        best = sorted(ranked, key=ranked.get, reverse=True)[:2]
        assert set(r["labels"]) == set(best)
    none = [
        json.loads(line) for line in invoke("predict", tiny_run, *files, "--threshold", "1.0").splitlines()
    ]
    assert all(r["labels"] == [n for n, s in r["scores"].items() if s >= 1.0] for r in none)
    record = top2[0]
    assert set(record["attributes"]) == {"count", "largest"}
    assert record["attributes"]["largest"]["class"] in ("small", "medium", "large")
