"""Tests of mlic.auditing.folds: stratified folds, fold runs skipped or resumed, linear heads on features."""

from __future__ import annotations

import numpy as np
import pytest

from mlic.auditing import folds
from mlic.auditing.folds import (
    SCORES,
    fit_linear_heads,
    fold_assignment,
    image_files,
    load_array,
    out_of_fold_features,
    out_of_fold_full,
)
from mlic.data import multidigits
from mlic.errors import ConfigError


def test_folds_are_stratified_seeded_and_kept(tmp_path):
    m = multidigits("test", 200, seed=1)
    a = fold_assignment(m, 5, 0, tmp_path)
    assert abs(np.bincount(a, minlength=5) - 40).max() <= 4  # sizes may bend a little for balance

    def spread(assigned):
        per_fold = np.stack([(m.labels[assigned == k] == 1).sum(0) for k in range(5)])
        return (per_fold.max(0) - per_fold.min(0)).sum()

    rng = np.random.default_rng(0)
    random = np.mean([spread(rng.permutation(a)) for _ in range(20)])
    assert spread(a) < 0.8 * random  # each digit's positives spread more evenly than by chance
    np.testing.assert_array_equal(fold_assignment(m, 5, 0, tmp_path), a)  # read back
    np.testing.assert_array_equal(fold_assignment(m, 5, 0, tmp_path / "other"), a)  # seeded
    with pytest.raises(ConfigError, match="at least 2 folds"):
        fold_assignment(m, 1, 0, tmp_path)
    with pytest.raises(ConfigError, match="cannot fill"):
        fold_assignment(m.subset([0, 1]), 3, 0, tmp_path / "few")


def test_in_memory_images_become_files_once(tmp_path):
    m = multidigits("test", 4, seed=1)
    files = image_files(m, tmp_path)
    assert len(set(files)) == 4 and all(f.endswith(".png") for f in files)
    stamp = [(tmp_path / "images" / f).stat().st_mtime_ns for f in files]
    assert image_files(m, tmp_path) == files
    assert [(tmp_path / "images" / f).stat().st_mtime_ns for f in files] == stamp


def test_finished_folds_are_skipped_and_started_ones_resumed(tmp_path, monkeypatch, make_artifact):
    """train is replaced by a stand-in that writes a run's files; the audit calls it as a user would."""
    import mlic.training.run as run_module

    m = multidigits("test", 30, seed=1)
    calls = []

    def fake_train(resume=None, **options):
        out = resume or options["out"]
        calls.append(("resume", str(resume)) if resume else ("train", options["data"]))
        from pathlib import Path

        (Path(out) / "config.json").write_text("{}")
        return make_artifact(m.schema, path=Path(out) / "artifact").path

    monkeypatch.setattr(run_module, "train", fake_train)
    files = image_files(m, tmp_path)
    assigned = fold_assignment(m, 3, 0, tmp_path)
    probs = out_of_fold_full(m, files, assigned, tmp_path, {}, log=lambda *_: None)
    assert [c[0] for c in calls] == ["train"] * 3
    assert probs.shape == (30, 10) and np.isfinite(probs).all()
    for k in range(3):  # each fold's training file holds the other folds' images only
        trained = (tmp_path / f"fold-{k + 1}" / "train.jsonl").read_text().count("\n")
        assert trained == (assigned != k).sum()
    # a kill after fold 2 started: its scores gone, its run directory there -> resumed; the rest skipped
    (tmp_path / "fold-2" / SCORES).unlink()
    (tmp_path / "fold-2" / "artifact" / "mlic.json").unlink()
    calls.clear()
    again = out_of_fold_full(m, files, assigned, tmp_path, {}, log=lambda *_: None)
    assert calls == [("resume", str(tmp_path / "fold-2"))]
    np.testing.assert_allclose(again, probs)


def test_unknown_labels_of_a_fold_model_are_nan():
    got = folds._to_schema(np.array([[0.2, 0.9]]), ("b", "a"), ("a", "b", "c"))
    np.testing.assert_allclose(got, [[0.9, 0.2, np.nan]])


def test_linear_heads_learn_and_ignore_unknown_targets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0.5], 1).astype(np.int8)
    noisy = y.copy()
    noisy[:200, 0] = -1  # half of label 0 unknown: must not count as negatives
    p = fit_linear_heads(x[:300], noisy[:300], x[300:])
    assert p.shape == (100, 2)
    accuracy = ((p > 0.5) == (y[300:] == 1)).mean(0)
    assert (accuracy > 0.9).all()


def test_the_default_penalty_ranks_held_out_images_better_than_a_weak_one():
    """Few images, many features, 30% of the positives not given: the default L2 (0.1) overfits less than 1e-3
    (the former default), so the held-out images rank better against their true labels."""
    from mlic.metrics import mean_average_precision

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 100)).astype(np.float32)
    truth = np.stack([x[:, 0] > 0.5, x[:, 1] - x[:, 2] > 1.0], 1)
    given = (truth & (rng.random(truth.shape) > 0.3)).astype(np.int8)
    weak = fit_linear_heads(x[:300], given[:300], x[300:], l2=1e-3)
    default = fit_linear_heads(x[:300], given[:300], x[300:])
    assert folds.FEATURES_L2 == 0.1
    held = truth[300:].astype(np.int8)
    assert mean_average_precision(held, default) > mean_average_precision(held, weak) + 0.01
    assert np.abs(default - 0.5).mean() < np.abs(weak - 0.5).mean()  # less sure of what it cannot know


def test_features_mode_scores_every_image_out_of_fold(tmp_path):
    m = multidigits("test", 60, seed=1)
    rng = np.random.default_rng(0)
    features = m.labels.astype(np.float32) * 3 + rng.normal(0, 0.3, (60, 10)).astype(np.float32)
    features[5] = np.nan  # unreadable
    assigned = fold_assignment(m, 3, 0, tmp_path)
    probs = out_of_fold_features(m, features, assigned, tmp_path, log=lambda *_: None)
    assert np.isnan(probs[5]).all() and np.isfinite(np.delete(probs, 5, 0)).all()
    good = np.delete(np.arange(60), 5)
    assert ((probs[good] > 0.5) == (m.labels[good] == 1)).mean() > 0.95
    np.testing.assert_array_equal(load_array(tmp_path / "fold-1" / SCORES), probs[assigned == 0])


def test_features_need_a_trained_backbone(tmp_path):
    m = multidigits("test", 6, seed=1)
    with pytest.raises(ConfigError, match="--weights FILE"):
        folds.extract_features(m, image_files(m, tmp_path), tmp_path, {}, log=lambda *_: None)


def test_options_the_audit_sets_are_refused():
    with pytest.raises(ConfigError, match=r"\['data', 'out'\]"):
        folds.check_options({"data": "x.csv", "out": "y", "lr": 0.1})
    with pytest.raises(ConfigError, match="unknown training options"):
        folds.check_options({"max_epoch": 3})
