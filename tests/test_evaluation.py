"""Evaluation of an artifact: figures equal scikit-learn's on the same predictions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_score,
    recall_score,
)

import mlic
from mlic.artifact import load_artifact
from mlic.evaluation import calibrate, format_report
from mlic.thresholds import apply_thresholds, top_k


def test_figures_equal_scikit_learn_on_the_same_predictions(tiny_run):
    figures = mlic.evaluate(tiny_run, "demo", demo_samples=200)
    predictor = mlic.load(tiny_run)
    m = mlic.data.load_data("demo", split="test", demo_samples=200)
    probs = predictor.predict_manifest(m)
    y_pred = apply_thresholds(probs.labels, predictor.artifact.thresholds)
    have_pos = m.labels.sum(0) > 0
    ap = [average_precision_score(m.labels[:, j], probs.labels[:, j]) for j in np.flatnonzero(have_pos)]
    assert figures["mAP"] == pytest.approx(np.mean(ap), abs=1e-9)
    assert figures["micro_f1"] == pytest.approx(f1_score(m.labels, y_pred, average="micro", zero_division=0))
    assert figures["micro_precision"] == pytest.approx(precision_score(m.labels, y_pred, average="micro"))
    assert figures["micro_recall"] == pytest.approx(recall_score(m.labels, y_pred, average="micro"))
    labels = list(np.flatnonzero(have_pos))
    macro = f1_score(m.labels, y_pred, average="macro", labels=labels, zero_division=0)
    assert figures["macro_f1"] == pytest.approx(macro)
    assert figures["hamming_loss"] == pytest.approx(hamming_loss(m.labels, y_pred))
    attr_pred = np.stack([p.argmax(1) for p in probs.attributes], 1)
    for j, name in enumerate(m.schema.attribute_names):
        assert figures["attributes"][name]["accuracy"] == pytest.approx(
            accuracy_score(m.attributes[:, j], attr_pred[:, j])
        )
    onehot = [np.eye(len(a.classes), dtype=int)[v] for a, v in zip(m.schema.attributes, attr_pred.T)]
    truth = [np.eye(len(a.classes), dtype=int)[v] for a, v in zip(m.schema.attributes, m.attributes.T)]
    subset = accuracy_score(np.hstack([m.labels, *truth]), np.hstack([y_pred, *onehot]))
    assert figures["subset_accuracy"] == pytest.approx(subset)
    assert figures["at_0.5"]["micro_f1"] == pytest.approx(
        f1_score(m.labels, probs.labels >= 0.5, average="micro", zero_division=0)
    )


def test_evaluate_reads_files_and_ignores_labels_the_model_lacks(tiny_run, digit_files, tmp_path):
    root = digit_files["root"]
    lines = (root / "tags.csv").read_text().splitlines()
    extra = tmp_path / "extra.csv"
    extra.write_text(
        "\n".join(
            [lines[0]] + [f"{root}/{line.split(',')[0]},{line.split(',')[1]} zebra" for line in lines[1:]]
        )
        + "\n"
    )
    with pytest.warns(UserWarning, match="zebra"):
        figures = mlic.evaluate(tiny_run, extra)
    assert figures["n_samples"] == 48
    assert figures["ignored"] == ["zebra"]
    assert "zebra" in format_report(figures)


def test_report_is_a_readable_table(tiny_run):
    text = format_report(mlic.evaluate(tiny_run, "demo", demo_samples=64))
    for word in ("mAP", "micro_f1", "hamming_loss", "subset_accuracy", "count", "largest", "digit_9"):
        assert word in text


def test_evaluate_on_a_missing_file_is_a_clear_error(tiny_run, tmp_path):
    with pytest.raises(mlic.DataError, match="no such file"):
        mlic.evaluate(tiny_run, tmp_path / "nope.csv")


@pytest.fixture
def artifact_copy(tiny_run, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_run / "artifact", tmp_path / "artifact"))


@pytest.mark.parametrize(
    ("policy", "options"),
    [("per-label", {}), ("global", {}), ("fixed", {"threshold": 0.3}), ("per-label", {"min_precision": 0.8})],
)
def test_calibrate_rewrites_the_artifact_thresholds(artifact_copy, policy, options):
    result = calibrate(artifact_copy, "demo", policy, demo_samples=100, **options)
    artifact = load_artifact(artifact_copy)
    assert artifact.decision.policy == policy
    assert artifact.decision.source["calibration_images"] == 100
    assert list(artifact.thresholds) == list(result["thresholds"].values())
    if policy in ("global", "fixed"):
        assert len(set(artifact.thresholds)) == 1
    if policy == "fixed":
        assert artifact.thresholds[0] == 0.3
    assert not [p for p in artifact_copy.iterdir() if p.name.endswith(".tmp")]
    artifact.build_model()  # the weights still match their checksum


def test_top_k_calibration_drives_predict_and_evaluate(artifact_copy, digit_files):
    calibrate(artifact_copy, "demo", "top-k", k=3, demo_samples=50)
    records = mlic.load(artifact_copy).predict(digit_files["paths"][:6])
    assert all(len(r["labels"]) == 3 for r in records)
    figures = mlic.evaluate(artifact_copy, "demo", demo_samples=100)
    assert figures["decision"]["policy"] == "top-k"
    m = mlic.data.load_data("demo", split="test", demo_samples=100)
    predictor = mlic.load(artifact_copy)
    probs = predictor.predict_manifest(m)
    decision = predictor.artifact.decision
    # top-k ranks with the label balance that training chose (and calibration keeps)
    assert decision.priors is not None and decision.balance in (0.0, 0.25, 0.5, 0.75, 1.0)
    decided = top_k(probs.labels / decision.priors**decision.balance, 3)
    assert figures["micro_f1"] == pytest.approx(f1_score(m.labels, decided, average="micro"))


def test_calibrate_sets_the_top_k_balance_or_keeps_the_trained_one(artifact_copy):
    trained = load_artifact(artifact_copy).decision.balance
    calibrate(artifact_copy, "demo", "global", demo_samples=50)
    assert load_artifact(artifact_copy).decision.balance == trained
    result = calibrate(artifact_copy, "demo", "top-k", k=2, balance=0.5, demo_samples=50)
    decision = load_artifact(artifact_copy).decision
    assert decision.balance == 0.5 and result["decision"]["balance"] == 0.5
    calibrate(artifact_copy, "demo", "top-k", k=2, balance=0, demo_samples=50)
    assert load_artifact(artifact_copy).decision.balance == 0.0
    with pytest.raises(mlic.ConfigError, match="balance must be >= 0"):
        calibrate(artifact_copy, "demo", "global", balance=-1, demo_samples=20)
    old = load_artifact(artifact_copy)  # written before top-k balance: no priors to divide by
    old.decision = replace(old.decision, priors=None, balance=0.0)
    old.save_config()
    with pytest.raises(mlic.ConfigError, match="no label priors"):
        calibrate(artifact_copy, "demo", "top-k", k=2, balance=0.5, demo_samples=20)
    assert load_artifact(artifact_copy).decision.balance == 0.0  # nothing was written


def test_calibrate_on_data_the_model_cannot_read_is_a_clear_error(artifact_copy):
    with pytest.raises(mlic.ConfigError, match="unknown threshold policy"):
        calibrate(artifact_copy, "demo", "best", demo_samples=20)


# -- calibration of the probabilities --------------------------------------------------------------
def test_evaluate_reports_calibration_against_the_uncalibrated_probabilities(artifact_copy):
    from mlic.evaluation import calibrate_probabilities
    from mlic.metrics import calibration_figures

    calibrate_probabilities(artifact_copy, "demo", "off", demo_samples=100)  # no calibration
    plain = mlic.evaluate(artifact_copy, "demo", demo_samples=100)["calibration"]
    assert plain["method"] is None and "uncalibrated" not in plain and plain["ece_macro"] is not None
    calibrate_probabilities(artifact_copy, "demo", "temperature", demo_samples=100)
    figures = mlic.evaluate(artifact_copy, "demo", demo_samples=100)
    cal = figures["calibration"]
    assert cal["method"] == "temperature" and cal["n_bins"] == 15
    assert cal["uncalibrated"] == {
        k: plain[k] for k in ("ece_macro", "ece_micro", "brier_macro", "brier_micro")
    }
    m = mlic.data.load_data("demo", split="test", demo_samples=100)
    predictor = mlic.load(artifact_copy)
    outputs = predictor.manifest_outputs(m)
    want = calibration_figures(m.labels, outputs.probabilities(m.schema, predictor.calibration).labels)
    raw = calibration_figures(m.labels, outputs.probabilities(m.schema).labels)
    assert cal["ece_macro"] == pytest.approx(want["ece_macro"]) and cal["brier_micro"] == pytest.approx(
        want["brier_micro"]
    )
    assert cal["uncalibrated"]["ece_micro"] == pytest.approx(raw["ece_micro"])
    assert figures["per_label"]["digit_3"]["ece"] == pytest.approx(want["ece"][3])
    assert "ece_macro" in format_report(figures) and "uncalibrated" in format_report(figures)


def assert_ranking_kept(y_true: np.ndarray, before: np.ndarray, after: np.ndarray) -> None:
    """Per label: ``after`` never orders two images the other way round from ``before``, and where it
    keeps ``before``'s ties exactly (no pair newly tied or untied), the label's AP is unchanged.

    The calibration map is increasing, but the probabilities are float32: a scale below 1 (a
    temperature up to 20) can squeeze logits that differed into one float32 probability, and a
    scale above 1 can push confident ones to 1.0 together (or pull tied ones apart). Such ties
    are all that can move AP, by a positive tied with a negative; on the tiny model Platt's scale
    of digit_0 reached its bound of 0.05 and tied two of 150 test images, moving mAP by 0.00009.
    """
    for j in range(y_true.shape[1]):
        order = np.lexsort((after[:, j], before[:, j]))  # by the old scores, their ties by the new
        old, new = before[order, j], after[order, j]
        assert (np.diff(new) >= 0).all(), f"label {j}: calibration reversed a pair"
        if np.array_equal(np.diff(old) == 0, np.diff(new) == 0):
            known = y_true[:, j] >= 0
            if y_true[known, j].any():
                ap = [average_precision_score(y_true[known, j], s[known, j]) for s in (before, after)]
                assert ap[1] == pytest.approx(ap[0], abs=1e-12), f"label {j}: AP moved without a new tie"


@pytest.mark.parametrize("method", ["auto", "platt", "temperature", "off"])
def test_calibrate_probabilities_keeps_decisions_and_ranking(artifact_copy, method):
    from mlic.evaluation import calibrate_probabilities

    m = mlic.data.load_data("demo", split="test", demo_samples=150)
    before = mlic.load(artifact_copy)
    p = before.predict_manifest(m)
    result = calibrate_probabilities(artifact_copy, "demo", method, demo_samples=120)
    after = mlic.load(artifact_copy)
    q = after.predict_manifest(m)
    np.testing.assert_array_equal(before.decide(p), after.decide(q))
    assert_ranking_kept(m.labels, p.labels, q.labels)
    assert result["method"] == method and set(result["before"]) == set(result["after"]) >= {"ece_macro"}
    artifact = load_artifact(artifact_copy)
    kept = result["chosen_by"]["kept"] if method == "auto" else method != "off"
    assert (artifact.calibration is None) == (not kept)
    assert (result["chosen_by"] is None) == (method != "auto")
    if kept:
        assert artifact.calibration.fitted_on == {"data": "demo", "images": 120}
        # the artifact may hold temperatures from training already: refitted, they are the same map
        refit = method in ("temperature", "auto")
        assert result["after"]["ece_micro"] < result["before"]["ece_micro"] or refit
    assert not [f for f in artifact_copy.iterdir() if f.name.endswith(".tmp")]


def test_calibrate_probabilities_refuses_an_unknown_method(artifact_copy):
    from mlic.evaluation import calibrate_probabilities

    with pytest.raises(mlic.ConfigError, match="unknown calibration method 'isotonic'"):
        calibrate_probabilities(artifact_copy, "demo", "isotonic", demo_samples=20)
