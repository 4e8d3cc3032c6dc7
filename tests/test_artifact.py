"""Tests of mlic.artifact: save/load round trips, the paths load_artifact accepts, every damage it reports."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from helpers import fuzz, perturb_batchnorm
from mlic.artifact import (
    CALIBRATED_FORMAT_VERSION,
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    HISTORY_FILE,
    UNCALIBRATED_FORMAT_VERSION,
    WEIGHTS_FILE,
    load_artifact,
    load_history,
    save_history,
)
from mlic.card import CARD_FILE
from mlic.data.images import Preprocessing
from mlic.errors import ArtifactError
from mlic.models import ModelConfig, build_classifier
from mlic.schema import Attribute, LabelSchema
from mlic.thresholds import POLICIES, Decision

SCHEMA = LabelSchema(("cat", "dog", "bird"), (Attribute("size", ("s", "m", "l")),))
PRE = Preprocessing(image_size=(32, 32), mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), hflip=False)
THRESHOLDS = np.array([0.25, 0.5, 0.8125])
TRAINING = {"epochs": 3, "val": {"mAP": 0.75}, "data": "demo"}


@pytest.fixture(scope="module")
def save(make_artifact):
    """``save(path, schema, thresholds, **options)``: ``make_artifact`` with random weights (BatchNorm
    statistics moved, so that buffers travel too), a fixed decision rule and a training summary."""

    def save(path: Path, schema: LabelSchema = SCHEMA, thresholds=THRESHOLDS, **options):
        options = {"decision": Decision("fixed", np.asarray(thresholds, dtype=np.float64)),
                   "training": TRAINING, **options}  # fmt: skip
        return make_artifact(schema, preprocessing=PRE, tweak=perturb_batchnorm, path=path, **options)

    return save


@pytest.fixture
def artifact_dir(save, tmp_path) -> Path:
    return save(tmp_path / "run" / "artifact").path


def edit_config(folder: Path, change) -> Path:
    path = folder / CONFIG_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def images(seed: int = 1) -> torch.Tensor:
    return torch.randint(
        0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


# -- round trip ------------------------------------------------------------------------------------
def test_save_writes_weights_and_description(artifact_dir):
    assert sorted(p.name for p in artifact_dir.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
    data = json.loads((artifact_dir / CONFIG_FILE).read_text())
    assert data["format"] == FORMAT and data["format_version"] == UNCALIBRATED_FORMAT_VERSION == 1
    assert data["thresholds"] == {"cat": 0.25, "dog": 0.5, "bird": 0.8125}
    assert "calibration" not in data
    assert data["weights"]["file"] == WEIGHTS_FILE
    assert len(data["weights"]["sha256"]) == 64


def test_round_trip(artifact_dir):
    artifact = load_artifact(artifact_dir)
    assert artifact.path == artifact_dir
    assert artifact.schema == SCHEMA
    np.testing.assert_array_equal(artifact.thresholds, THRESHOLDS)
    assert artifact.thresholds.dtype == np.float64
    assert artifact.preprocessing == PRE
    assert artifact.model == ModelConfig()
    assert artifact.training == TRAINING
    assert artifact.decision.policy == "fixed"


def test_rebuilt_model_gives_identical_logits(save, tmp_path):
    made = save(tmp_path / "a", decision=THRESHOLDS, training=None, seed=3)
    artifact, model = made.artifact, made.model
    rebuilt = load_artifact(tmp_path / "a").build_model()
    assert not rebuilt.training
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    # The normalisation constants come back from the preprocessing config.
    torch.testing.assert_close(rebuilt.normalize(x), model.normalize(x))
    assert artifact.build_model().training is False


def test_round_trip_of_a_non_default_model(save, tmp_path):
    config = ModelConfig(backbone="mlic_cnn_wide", head_kwargs={"dropout": 0.1}, drop_rate=0.2)
    options = {"backbone": "mlic_cnn_wide", "head_options": {"dropout": 0.1}, "drop_rate": 0.2}
    model = save(tmp_path, decision=THRESHOLDS, training=None, seed=4, **options).model
    artifact = load_artifact(tmp_path)
    assert artifact.model == config
    with torch.no_grad():
        torch.testing.assert_close(artifact.build_model()(images()), model(images()), rtol=0, atol=0)


def test_round_trip_of_an_attributes_only_schema(save, tmp_path):
    schema = LabelSchema(attributes=(Attribute("size", ("s", "m", "l")),))
    save(tmp_path, schema, thresholds=np.zeros(0))
    artifact = load_artifact(tmp_path)
    assert artifact.schema == schema and artifact.thresholds.shape == (0,)
    assert artifact.build_model()(images()).shape == (3, 3)


@pytest.mark.parametrize("which", ["artifact", "run", "config"])
def test_load_accepts_artifact_run_dir_and_config_path(artifact_dir, which):
    path = {"artifact": artifact_dir, "run": artifact_dir.parent, "config": artifact_dir / CONFIG_FILE}[which]
    artifact = load_artifact(str(path))
    assert artifact.path == artifact_dir
    assert artifact.schema == SCHEMA


def test_save_config_rewrites_atomically(artifact_dir):
    artifact = load_artifact(artifact_dir)
    artifact.decision = Decision("top-k", np.array([0.1, 0.2, 0.3]), k=2)
    artifact.save_config()
    assert sorted(p.name for p in artifact_dir.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
    again = load_artifact(artifact_dir)
    np.testing.assert_array_equal(again.thresholds, [0.1, 0.2, 0.3])
    assert again.decision.to_dict() == {
        "policy": "top-k",
        "k": 2,
        "min_precision": None,
        "min_positives": None,
    }
    assert again.decision.k == 2
    assert again.weights_sha256 == artifact.weights_sha256
    again.build_model()  # the checksum still matches the weights


OLD_RULES = [None, {"policy": "fixed"}, {"policy": "per-label", "calibrated_on": "v"}]


@pytest.mark.parametrize("decision", OLD_RULES)
def test_older_mlic_json_layouts_load_as_one_decision_rule(artifact_dir, decision):
    """Artifacts written before the rule became one object: no ``decision``, or one without ``k`` and the
    precision settings. They load, decide by their thresholds, and keep unknown keys."""
    config = artifact_dir / CONFIG_FILE
    data = json.loads(config.read_text())
    if decision is None:
        del data["decision"]
    else:
        data["decision"] = decision
    config.write_text(json.dumps(data))
    artifact = load_artifact(artifact_dir)
    assert artifact.decision.policy == (decision or {"policy": "per-label"})["policy"]
    np.testing.assert_array_equal(artifact.decision.thresholds, THRESHOLDS)
    scores = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(artifact.decision.decide(scores), scores >= THRESHOLDS)
    artifact.save_config()
    assert {k: v for k, v in json.loads(config.read_text())["decision"].items() if v is not None} == (
        decision or {"policy": "per-label"}
    )


def test_top_k_balance_and_label_priors_round_trip(save, tmp_path):
    priors = np.array([0.5, 0.125, 0.015625])
    decision = Decision("global", np.full(3, 0.4), priors=priors, balance=0.25)
    path = save(tmp_path / "a", decision=decision).path
    data = json.loads((path / CONFIG_FILE).read_text())
    assert data["label_priors"] == {"cat": 0.5, "dog": 0.125, "bird": 0.015625}
    assert data["decision"]["balance"] == 0.25
    again = load_artifact(path).decision
    np.testing.assert_array_equal(again.priors, priors)
    assert again.balance == 0.25 and again.policy == "global"
    # the balance ranks a rare label's fair score above a frequent label's higher one
    assert again.top(np.array([[0.6, 0.1, 0.3]]), 1).tolist() == [[False, False, True]]


def test_artifacts_without_label_priors_rank_by_score(artifact_dir):
    decision = load_artifact(artifact_dir).decision
    assert decision.priors is None and decision.balance == 0.0
    assert decision.top(np.array([[0.6, 0.1, 0.3]]), 1).tolist() == [[True, False, False]]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d["decision"].update(balance=0.5), "balance needs label_priors"),
        (lambda d: d.update(label_priors={"cat": 0.5, "dog": 0.0, "bird": 0.1}), "label_priors"),
        (lambda d: d.update(label_priors={"cat": 0.5}), "dog"),
    ],
)
def test_damaged_top_k_balance_is_an_artifact_error(artifact_dir, change, match):
    edit_config(artifact_dir, change)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(artifact_dir)


def test_save_over_an_existing_artifact(save, artifact_dir):
    before = load_artifact(artifact_dir).weights_sha256
    model = save(artifact_dir, decision=THRESHOLDS, training=None, seed=9).model
    artifact = load_artifact(artifact_dir)
    assert artifact.weights_sha256 != before
    assert artifact.training == {}
    with torch.no_grad():
        torch.testing.assert_close(artifact.build_model()(images()), model(images()), rtol=0, atol=0)
    assert not [p for p in artifact_dir.iterdir() if p.name.endswith(".tmp")]


# -- errors ----------------------------------------------------------------------------------------
def assert_artifact_error(path: Path, match: str, call=load_artifact, arg=None) -> None:
    with pytest.raises(ArtifactError, match=match) as info:
        call(arg if arg is not None else path)
    assert str(path) in str(info.value)


def test_missing_directory(tmp_path):
    assert_artifact_error(tmp_path / "nowhere", "not an mlic artifact")


def test_directory_without_description(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_artifact_error(tmp_path / "empty", r"no mlic\.json")


def test_description_not_json(artifact_dir):
    (artifact_dir / CONFIG_FILE).write_text("{ this is not json")
    assert_artifact_error(artifact_dir / CONFIG_FILE, "not valid JSON", arg=artifact_dir)


def test_description_not_utf8(artifact_dir):
    (artifact_dir / CONFIG_FILE).write_bytes(b"\xff\xfe\x00garbage")
    assert_artifact_error(artifact_dir / CONFIG_FILE, "not valid JSON", arg=artifact_dir)


@pytest.mark.parametrize("content", ["[1, 2]", '"mlic-artifact"', '{"format": "something-else"}', "{}"])
def test_wrong_format(artifact_dir, content):
    (artifact_dir / CONFIG_FILE).write_text(content)
    assert_artifact_error(artifact_dir / CONFIG_FILE, "not an mlic artifact description", arg=artifact_dir)


def test_newer_format_version(artifact_dir):
    path = edit_config(artifact_dir, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    assert_artifact_error(
        path, f"format version {FORMAT_VERSION + 1} is newer.*upgrade mlic", arg=artifact_dir
    )


@pytest.mark.parametrize("field", ["schema", "model", "preprocessing", "thresholds"])
def test_missing_field(artifact_dir, field):
    path = edit_config(artifact_dir, lambda d: d.pop(field))
    assert_artifact_error(path, f"missing or malformed field.*{field}", arg=artifact_dir)


def test_missing_threshold_of_one_label(artifact_dir):
    path = edit_config(artifact_dir, lambda d: d["thresholds"].pop("dog"))
    assert_artifact_error(path, "missing or malformed field.*dog", arg=artifact_dir)


def test_malformed_schema(artifact_dir):
    path = edit_config(artifact_dir, lambda d: d.update(schema={"labels": ["a", "a"]}))
    assert_artifact_error(path, "missing or malformed field", arg=artifact_dir)


def test_unknown_resize_is_an_artifact_error_that_names_the_field(artifact_dir):
    path = edit_config(artifact_dir, lambda d: d["preprocessing"].update(resize="stretch"))
    assert_artifact_error(path, "preprocessing.resize must be one of", arg=artifact_dir)


def test_artifacts_written_before_resize_existed_squash(artifact_dir):
    edit_config(artifact_dir, lambda d: d["preprocessing"].pop("resize"))
    assert load_artifact(artifact_dir).preprocessing.resize == "squash"


def test_non_integer_format_version(artifact_dir):
    path = edit_config(artifact_dir, lambda d: d.update(format_version="1"))
    assert_artifact_error(path, "format", arg=artifact_dir)


def test_malformed_weights_field(artifact_dir):
    path = edit_config(artifact_dir, lambda d: d.update(weights=WEIGHTS_FILE))
    assert_artifact_error(path, "missing or malformed field", arg=artifact_dir)


def test_weights_missing(artifact_dir):
    (artifact_dir / WEIGHTS_FILE).unlink()
    artifact = load_artifact(artifact_dir)  # the description alone loads
    with pytest.raises(ArtifactError, match=f"{re.escape(WEIGHTS_FILE)} is missing") as info:
        artifact.build_model()
    assert str(artifact_dir) in str(info.value)


def test_weights_corrupted(artifact_dir):
    path = artifact_dir / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_artifact_error(
        path, "checksum does not match", call=lambda p: load_artifact(p).build_model(), arg=artifact_dir
    )


def test_weights_truncated(artifact_dir):
    path = artifact_dir / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:1000])
    assert_artifact_error(
        path, "checksum does not match", call=lambda p: load_artifact(p).build_model(), arg=artifact_dir
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_weights_without_checksum(artifact_dir, damage):
    path = artifact_dir / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[:1000] if damage == "truncated" else b"\x00" * 64)
    edit_config(artifact_dir, lambda d: d.pop("weights"))
    artifact = load_artifact(artifact_dir)
    assert artifact.weights_sha256 == ""
    with pytest.raises(ArtifactError, match="cannot load weights") as info:
        artifact.build_model()
    assert str(path) in str(info.value)


def test_weights_of_another_model(artifact_dir):
    """Weights that do not fit the described network are refused, even when the checksum is updated."""
    other = build_classifier(LabelSchema(("x",)))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, artifact_dir / WEIGHTS_FILE)
    edit_config(artifact_dir, lambda d: d.pop("weights"))
    with pytest.raises(ArtifactError, match="cannot load weights") as info:
        load_artifact(artifact_dir).build_model()
    assert str(artifact_dir / WEIGHTS_FILE) in str(info.value)


# -- fuzzed damage and safety ----------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def json_paths(value, prefix=()) -> list[tuple]:
    """Every path into a parsed JSON document (keys and list indices), the root excluded."""
    if isinstance(value, dict):
        children = value.items()
    else:
        children = enumerate(value) if isinstance(value, list) else ()
    paths = []
    for key, child in children:
        paths.append((*prefix, key))
        paths += json_paths(child, (*prefix, key))
    return paths


@pytest.fixture(scope="module")
def pristine(save, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pristine") / "artifact"
    save(folder)
    return folder


@fuzz(300)
@given(data=st.data())
def test_fuzz_mlic_json_damage_is_an_artifact_error_or_harmless(pristine, data, tmp_path_factory):
    """Replace any field of ``mlic.json`` with any JSON value, or cut the file anywhere: the artifact loads
    and builds, or the error is an ``ArtifactError`` that names the file."""
    folder = tmp_path_factory.mktemp("damaged") / "artifact"
    shutil.copytree(pristine, folder)
    config = folder / CONFIG_FILE
    text = config.read_text()
    if data.draw(st.booleans(), label="cut"):
        config.write_text(text[: data.draw(st.integers(0, len(text) - 1), label="at")])
    else:
        document = json.loads(text)
        path = data.draw(st.sampled_from(json_paths(document)), label="path")
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = data.draw(JSON_VALUES, label="value")
        config.write_text(json.dumps(document))
    try:
        artifact = load_artifact(folder)
        model = artifact.build_model()
        assert artifact.decision.policy in POLICIES
    except ArtifactError as e:
        assert str(folder) in str(e)
        return
    assert model(images()).shape == (3, artifact.schema.num_outputs)


def test_loading_and_predicting_never_unpickle(tiny_run, digit_files, monkeypatch):
    """Artifacts are JSON and safetensors: with every unpickler disabled, loading and predicting work."""
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    from mlic.predict import load

    records = load(tiny_run).predict(digit_files["paths"][:2])
    assert len(records) == 2 and all("labels" in r for r in records)


# -- calibration -----------------------------------------------------------------------------------
def calibrated(artifact_dir: Path):
    from mlic.models.calibration import Calibration

    artifact = load_artifact(artifact_dir)
    artifact.calibration = Calibration(
        "platt", np.array([0.5, 1.5, 1.0]), np.array([0.25, -0.5, 0.0]), np.array([2.0]), {"data": "val"}
    )
    artifact.save_config()
    return artifact


def test_a_calibrated_artifact_is_format_2_and_round_trips(artifact_dir):
    saved = calibrated(artifact_dir)
    data = json.loads((artifact_dir / CONFIG_FILE).read_text())
    assert data["format_version"] == CALIBRATED_FORMAT_VERSION == 2
    assert data["calibration"]["labels"]["dog"] == {"scale": 1.5, "bias": -0.5}
    assert data["calibration"]["attributes"] == {"size": {"temperature": 2.0}}
    back = load_artifact(artifact_dir).calibration
    np.testing.assert_array_equal(back.scale, saved.calibration.scale)
    np.testing.assert_array_equal(back.bias, saved.calibration.bias)
    assert back.method == "platt" and back.fitted_on == {"data": "val"}
    back_again = load_artifact(artifact_dir)
    back_again.calibration = None
    back_again.save_config()
    data = json.loads((artifact_dir / CONFIG_FILE).read_text())
    assert data["format_version"] == 1 and "calibration" not in data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(method="isotonic"), "calibration.method"),
        (lambda c: c["labels"].pop("bird"), "calibration.labels.bird"),
        (lambda c: c["labels"]["cat"].update(scale=0), "calibration.labels.cat.scale must be positive"),
        (
            lambda c: c["attributes"]["size"].update(temperature=None),
            "calibration.attributes.size.temperature",
        ),
    ],
)
def test_a_damaged_calibration_is_refused_naming_the_field(artifact_dir, change, message):
    calibrated(artifact_dir)
    path = edit_config(artifact_dir, lambda d: change(d["calibration"]))
    assert_artifact_error(path, message, arg=artifact_dir)


# -- training history ------------------------------------------------------------------------------
def test_history_round_trips_in_epoch_order_with_gaps_as_nan(tmp_path):
    rows = [{"epoch": 1, "train/loss": 0.5, "val/mAP": 0.75}, {"epoch": 0, "train/loss": 0.9}]
    save_history(tmp_path, rows)
    assert (tmp_path / HISTORY_FILE).read_text().splitlines()[0] == "epoch,train/loss,val/mAP"
    history = load_history(tmp_path)
    assert list(history["epoch"]) == [0, 1] and list(history["train/loss"]) == [0.9, 0.5]
    assert np.isnan(history["val/mAP"][0]) and history["val/mAP"][1] == 0.75


@pytest.mark.parametrize("text", [None, "", "epoch,val/mAP\n0,high\n", "val/mAP\n0.5\n"])
def test_a_missing_or_unreadable_history_is_none(tmp_path, text):
    save_history(tmp_path, [])  # nothing to keep: no file
    if text is not None:
        (tmp_path / HISTORY_FILE).write_text(text)
    assert load_history(tmp_path) is None
