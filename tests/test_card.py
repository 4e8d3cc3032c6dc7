"""Tests of mlic.card: what the model card says, its evaluation sections, its atomic write."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mlic.artifact import CONFIG_FILE, WEIGHTS_FILE, load_artifact
from mlic.card import CARD_FILE, MAX_LABELS, NOT_RECORDED, model_card, write_card
from mlic.schema import Attribute, LabelSchema
from mlic.thresholds import Decision

SCHEMA = LabelSchema(
    ("cat", "dog", "bird"), (Attribute("size", ("s", "m", "l")), Attribute("pose", ("up", "down")))
)
THRESHOLDS = np.array([0.25, 0.5, 0.8125])
TRAINING = {
    "data": "photos.jsonl",
    "train_images": 1234,
    "val_images": 321,
    "epochs": 7,
    "seconds": 12.5,
    "bad_images": 0,
    "precision": "bf16-mixed",
    "loss": {"name": "asl", "gamma_neg": 4},
    "validation": {"mAP": 0.734125, "micro_f1": 0.612345, "size_accuracy": 0.9},
    "label_transfer": None,
    "config": {"pretrained": True, "weights": None, "lr": 0.0003, "batch_size": 48, "max_epochs": 7},
}


def figures(data: str = "test.csv", m_ap: float = 0.5) -> dict:
    """A small result of ``mlic.evaluation.evaluate``."""
    return {"data": data, "n_samples": 40, "mAP": m_ap, "micro_f1": 0.375, "at_0.5": {"micro_f1": 0.25},
            "decision": {"policy": "per-label"}, "runtime": {"runtime": "torch", "precision": "fp32"},
            "attributes": {"size": {"accuracy": 0.875, "support": 40}},
            "per_label": {"cat": {"ap": 0.625, "f1": 0.5, "threshold": 0.25, "support": 9}}}  # fmt: skip


def test_card_names_every_label_attribute_class_and_threshold(make_artifact):
    made = make_artifact(SCHEMA, decision=THRESHOLDS)
    card = (made.path / CARD_FILE).read_text()
    assert card == model_card(made.artifact)
    assert "3 labels, 2 attributes." in card
    for name, t in zip(SCHEMA.labels, THRESHOLDS):
        assert f"| {name} | {t:.4f} |" in card
    assert "| size | s, m, l |" in card and "| pose | up, down |" in card


def test_thousands_of_labels_list_the_first_and_a_count(make_artifact):
    schema = LabelSchema(tuple(f"tag{i:04d}" for i in range(1200)))
    card = model_card(make_artifact(schema, backbone="mlic_cnn").artifact)
    assert f"| tag{MAX_LABELS - 1:04d} | 0.5000 |" in card and f"tag{MAX_LABELS:04d}" not in card
    assert f"... and {1200 - MAX_LABELS} more labels" in card


def test_training_summary_figures_appear_as_stored(make_artifact):
    card = model_card(make_artifact(SCHEMA, decision=THRESHOLDS, training=TRAINING).artifact)
    for name, value in TRAINING["validation"].items():
        assert f"| {name} | {value!r} |" in card
    for row in ("| data | photos.jsonl |", "| training images | 1234 |", "| validation images | 321 |",
                "| epochs trained | 7 |", "| precision | bf16-mixed |", "| loss | name=asl, gamma_neg=4 |",
                "| lr | 0.0003 |", "| batch_size | 48 |", "| label transfer | none |"):  # fmt: skip
        assert row in card
    assert "timm's pretrained weights" in card and "validation split of 321 images" in card
    assert NOT_RECORDED not in card.replace('marked "not recorded"', "")


def test_weights_origin_from_a_file_or_from_scratch(make_artifact):
    artifact = make_artifact(SCHEMA, training=TRAINING).artifact
    artifact.training = {**TRAINING, "config": {"pretrained": False, "weights": "/w/resnet.safetensors"}}
    assert "the backbone weights file /w/resnet.safetensors" in model_card(artifact)
    artifact.training["config"] = {"pretrained": False, "weights": None}
    assert "random initialisation: trained from scratch" in model_card(artifact)


def test_an_artifact_without_training_summary_says_not_recorded(make_artifact):
    card = model_card(make_artifact(SCHEMA).artifact)
    assert "## Data\n\nnot recorded." in card and "## Validation figures\n\nnot recorded." in card
    assert "## Training options\n\nnot recorded." in card and "| weights' origin | not recorded |" in card
    assert "Where the thresholds were chosen is not recorded" in card


def test_card_reflects_the_decision_rule(make_artifact):
    chosen = {"rule": "5-fold cross-validation on the validation images",
              "candidates": {"fixed": {"micro_f1": 0.5}, "global": {"micro_f1": 0.625}}}  # fmt: skip
    rule = Decision("global", THRESHOLDS, chosen_by=chosen, source={"data": "val.csv", "images": 80})
    card = model_card(make_artifact(SCHEMA, decision=rule).artifact)
    assert "| policy | global |" in card and "| chosen by | 5-fold cross-validation" in card
    assert "| chosen on: data | val.csv |" in card and "| chosen on: images | 80 |" in card
    assert "| global | 0.625 |" in card
    top_k = Decision("top-k", THRESHOLDS, k=2, priors=np.array([0.5, 0.25, 0.125]), balance=0.5)
    card = model_card(make_artifact(SCHEMA, decision=top_k).artifact)
    assert "| policy | top-k |" in card and "| k | 2 |" in card and "| 0.5 |" in card
    assert "the 2 best labels of each image" in card


def test_limits_list_degenerate_thresholds_and_rare_labels(make_artifact):
    rule = Decision("per-label", np.array([1.0, 0.5, 0.0]), priors=np.array([0.001, 0.5, 0.5]))
    card = model_card(make_artifact(SCHEMA, decision=rule, training=TRAINING).artifact)
    assert "Never predicted (threshold at 1 or above): cat." in card
    assert "Always predicted (threshold at 0 or below): bird." in card
    assert "Fewer than 5 training positives (estimated from the label shares): cat." in card


def test_exports_and_calibration_are_described(make_artifact):
    artifact = make_artifact(SCHEMA).artifact
    artifact.exports = {"onnx": {"file": "model.onnx", "sha256": "ab", "opset": 18, "max_abs_diff": 1.5e-06}}
    card = model_card(artifact)
    assert "- **onnx**: file=model.onnx, opset=18, max_abs_diff=1.5e-06" in card
    assert "## Probability calibration\n\nNone" in card


def test_a_calibration_measured_and_left_out_says_why(make_artifact):
    artifact = make_artifact(SCHEMA).artifact
    artifact.training = {
        "calibration": {
            "method": "temperature",
            "kept": False,
            "rule": "5-fold cross-validation on the validation images",
            "uncalibrated": {"ece_macro": 0.0077},
            "out_of_fold": {"ece_macro": 0.0075},
        }
    }
    card = model_card(artifact)
    assert "None (the network's own sigmoids and softmaxes). 5-fold cross-validation" in card
    assert "ece_macro=0.0075" in card and "not kept" in card


def test_evaluation_section_is_added_and_a_rerun_replaces_it(make_artifact, tmp_path):
    artifact = make_artifact(SCHEMA, decision=THRESHOLDS, path=tmp_path / "a").artifact
    write_card(artifact, evaluation=figures(m_ap=0.5))
    write_card(artifact, evaluation=figures(m_ap=0.75))
    card = (artifact.path / CARD_FILE).read_text()
    assert (
        card.count("## Evaluation on test.csv") == 1
        and "| mAP | 0.7500 |" in card
        and "| mAP | 0.5000" not in card
    )
    assert "| micro_f1 | 0.3750 | 0.2500 |" in card and "| size | 0.8750 | 40 |" in card
    assert "| cat | 0.6250 | 0.5000 | 0.2500 | 9 |" in card
    write_card(artifact, evaluation=figures("other --> data"))
    card = (artifact.path / CARD_FILE).read_text()
    assert card.count("## Evaluation on") == 2 and "## Evaluation on other --> data" in card
    artifact.save_config()  # mlic.json rewritten under the same rule (as export does): sections kept
    assert (artifact.path / CARD_FILE).read_text() == card
    artifact.decision = Decision("fixed", np.full(3, 0.5))  # a new rule: the figures no longer hold
    artifact.save_config()
    assert "## Evaluation on" not in (artifact.path / CARD_FILE).read_text()


def test_write_is_atomic(make_artifact, tmp_path, monkeypatch):
    artifact = make_artifact(SCHEMA, path=tmp_path / "a").artifact
    before = (artifact.path / CARD_FILE).read_text()

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr("mlic.fileio.os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_card(artifact, evaluation=figures())
    monkeypatch.undo()
    assert (artifact.path / CARD_FILE).read_text() == before
    assert sorted(p.name for p in artifact.path.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])


def test_an_artifact_without_a_card_loads_and_gets_one_on_rewrite(make_artifact, tmp_path):
    path = make_artifact(SCHEMA, decision=THRESHOLDS, path=tmp_path / "a").path
    (path / CARD_FILE).unlink()
    artifact = load_artifact(path)
    np.testing.assert_array_equal(artifact.thresholds, THRESHOLDS)
    artifact.build_model()
    artifact.save_config()
    assert "| bird | 0.8125 |" in (path / CARD_FILE).read_text()


def test_a_damaged_card_is_rewritten_and_never_read_on_load(make_artifact, tmp_path):
    path = make_artifact(SCHEMA, path=tmp_path / "a").path
    (path / CARD_FILE).write_bytes(b"\xff\xfe<!-- mlic:evaluation {not json} -->\n<!-- mlic:end -->\n")
    artifact = load_artifact(path)
    write_card(artifact)
    assert (path / CARD_FILE).read_text() == model_card(artifact)


def test_a_trained_artifact_has_a_card_with_its_figures(tiny_run, tmp_path):
    path = shutil.copytree(tiny_run / "artifact", tmp_path / "artifact")
    card = (path / CARD_FILE).read_text()
    training = json.loads((path / CONFIG_FILE).read_text())["training"]
    for name, value in training["validation"].items():
        assert f"| {name} | {value!r} |" in card
    assert f"| training images | {training['train_images']} |" in card and "digit_9" in card
    assert f"| policy | {load_artifact(path).decision.policy} |" in card
    assert "random initialisation" in card  # TINY trains mlic_cnn from scratch
