"""benchmarks/audit.py on a few MultiDigits canvases (folds' training stood in for), so it cannot rot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import benchmark_script
from mlic.data import multidigits


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("audit") as module:
        yield module


def test_corrupt_hides_and_flips_exactly_the_pairs_it_names(bench):
    source = multidigits("train", 60, seed=1)
    data, hidden, flipped = bench.corrupt(source, 0.3, 0.05, seed=4)
    before, after = source.labels.ravel(), data.labels.ravel()
    assert len(hidden) == round(0.3 * (before == 1).sum()) and len(flipped) == round(
        0.05 * (before == 0).sum()
    )
    changed = set(np.flatnonzero(before != after).tolist())
    assert changed == hidden | flipped and not hidden & flipped
    assert (before[list(hidden)] == 1).all() and (after[list(hidden)] == 0).all()
    assert (before[list(flipped)] == 0).all() and (after[list(flipped)] == 1).all()
    again = bench.corrupt(source, 0.3, 0.05, seed=4)
    assert again[1] == hidden and again[2] == flipped  # seeded


def test_figures_count_hits_among_the_top_n(bench):
    rows, cols = np.array([0, 1, 2, 3]), np.array([1, 0, 2, 2])
    truth = {0 * 3 + 1, 2 * 3 + 2, 9}  # two of the four pairs, and one never listed
    f = bench.figures_at(rows, cols, 3, truth, 2)
    assert f == {"n": 2, "listed": 2, "found": 1, "precision": 0.5, "recall": round(1 / 3, 4)}


def test_the_benchmark_runs_end_to_end_and_draws_the_sheet(bench, tmp_path, fake_train, capsys):
    sheet = tmp_path / "sheet.png"
    result = bench.main(["--images", "40", "--folds", "2", "--epochs", "1", "--ranking-size", "60",
                         "--out", str(tmp_path / "audit"), "--sheet", str(sheet)])  # fmt: skip
    assert len(fake_train) == 2 and all(c["max_epochs"] == 1 for c in fake_train)
    assert result["images"] == 40 and result["hidden"] > 0 and result["flipped"] > 0
    hidden = result["mlic"]["hidden_at_n"]
    assert hidden["n"] == result["hidden"] and 0 <= hidden["precision"] <= 1
    assert result["mlic"]["flipped_in_top_2x"]["n"] == 2 * result["flipped"]
    assert result["ranking_10k"]["images"] == 60
    assert 0 <= result["oof_map"]["given"] <= 1 and 0 <= result["oof_map"]["true"] <= 1
    assert 0 < len(result["not_hidden_top20"]) <= 20
    with Image.open(sheet) as image:
        assert image.width > 500 and image.height > 200
    assert '"hidden_at_n"' in capsys.readouterr().out
