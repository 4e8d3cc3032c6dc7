"""Tests of mlic.training.config: one declaration per option, checked values, YAML both ways, resume rules."""

from __future__ import annotations

import dataclasses

import pytest

from mlic.data.formats import DEMO
from mlic.data.images import MAX_IMAGE_PIXELS
from mlic.errors import ConfigError
from mlic.training import parse_devices
from mlic.training.config import (
    GROUPS,
    OPTIONS,
    RESUMABLE,
    TrainConfig,
    check_value,
    read_config_file,
    to_yaml,
)


def test_every_option_is_declared_once_with_help_and_a_group():
    assert list(OPTIONS) == [f.name for f in dataclasses.fields(TrainConfig)]
    for name, f in OPTIONS.items():
        assert f.metadata["help"].strip(), name
        assert f.metadata["group"] in GROUPS, name
    assert {f.metadata["group"] for f in OPTIONS.values()} == set(GROUPS)
    assert set(RESUMABLE) <= set(OPTIONS)


def test_constants_repeated_for_a_light_import_agree_with_their_sources():
    assert OPTIONS["max_image_pixels"].default == MAX_IMAGE_PIXELS
    from mlic.training import config

    assert config.DEMO == DEMO


def test_values_are_checked_against_the_declared_types():
    assert check_value("lr", "3e-3") == 0.003  # YAML 1.1 reads 3e-3 as text
    assert check_value("lr", 1) == 1.0 and isinstance(check_value("lr", 1), float)
    assert check_value("devices", 2) == 2 and check_value("devices", "0,1") == "0,1"
    assert check_value("pos_weight", "auto") == "auto" and check_value("hflip", None) is None
    for name, value, words in [
        ("lr", "fast", "a number"),
        ("max_epochs", 2.5, "an integer"),
        ("pretrained", 1, "true or false"),
        ("head_options", [1], "a mapping"),
        ("backbone", None, "a string"),
    ]:
        with pytest.raises(ConfigError, match=f"option '{name}' must be {words}"):
            check_value(name, value)


def test_unknown_options_suggest_the_closest():
    words = r"unknown training options \['max_epoch'\] \(did you mean 'max_epochs'\?\)"
    with pytest.raises(ConfigError, match=words):
        TrainConfig.from_dict({"max_epoch": 3})


def test_yaml_round_trip_with_group_headings(tmp_path):
    config = TrainConfig(data="train.csv", head_options={"num_groups": 10, "temperatures": [1, 99]},
                         pos_weight="auto", max_image_pixels=None, tag_separator=",")  # fmt: skip
    text = to_yaml(config)
    assert [line for line in text.splitlines() if line.startswith("#")] == [f"# {g}" for g in GROUPS]
    (tmp_path / "run.yaml").write_text(text)
    assert TrainConfig.from_dict(read_config_file(tmp_path / "run.yaml")) == config


@pytest.mark.parametrize(
    ("text", "words"),
    [("lr: [", "not valid YAML"), ("- 1\n", "expected a mapping"), ("lrr: 1\n", "did you mean 'lr'"),
     ("lr: fast\n", "must be a number")],
)  # fmt: skip
def test_config_file_errors_name_the_file(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as info:
        read_config_file(path)
    assert str(path) in str(info.value)


def test_an_empty_config_file_sets_nothing_and_a_missing_one_is_an_error(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "empty.yaml") == {}
    with pytest.raises(ConfigError, match="no such file"):
        read_config_file(tmp_path / "missing.yaml")


def test_resumed_accepts_only_the_resumable_options():
    saved = TrainConfig(max_epochs=3)
    changed = saved.resumed({"max_epochs": 5, "devices": 2, "num_workers": 4, "progress": False})
    assert (changed.max_epochs, changed.devices, changed.num_workers, changed.progress) == (5, 2, 4, False)
    with pytest.raises(ConfigError, match="option 'lr' cannot change when resuming a run"):
        saved.resumed({"lr": 0.1})


def test_unknown_option_and_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({"max_epoch": 3})
    with pytest.raises(ConfigError, match="devices"):
        parse_devices("two")
    assert parse_devices("2") == 2 and parse_devices("0,1") == [0, 1] and parse_devices("auto") == "auto"


def test_a_backbone_rate_share_must_be_positive():
    with pytest.raises(ConfigError, match="backbone_lr_scale"):
        TrainConfig(backbone_lr_scale=0.0)
