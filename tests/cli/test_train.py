"""Tests of mlic.cli.train: options generated from the declarations, --config, --print-config, --resume."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from mlic.cli import app
from mlic.errors import ConfigError
from mlic.training import train
from mlic.training.config import OPTIONS, RESUMABLE

runner = CliRunner()


def invoke(*args: object, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def test_every_declared_option_is_a_flag_under_its_group():
    text = invoke("train", "--help")
    for group in ("Data", "Model", "Loss", "Optimisation", "Runtime", "Run"):
        assert group in text
    for flag in ("--val", "--workers", "--head-option", "--loss-option", "--max-epochs", "--config"):
        assert flag in text
    assert len(OPTIONS) == 49


def test_print_config_is_resolved_and_read_back_by_config(tmp_path):
    printed = invoke("train", "--print-config", "--max-epochs", "3", "--head-option", "num_groups=10",
                     "--pos-weight", "auto", "--max-image-pixels", "0", "--no-hflip")  # fmt: skip
    values = yaml.safe_load(printed)
    assert values["data"] == "demo" and values["image_size"] == 64 and values["augment"] == "shift"
    assert values["precision"] in ("bf16-mixed", "32-true") and values["num_workers"] == 0
    assert values["max_epochs"] == 3 and values["head_options"] == {"num_groups": 10}
    assert values["pos_weight"] == "auto" and values["max_image_pixels"] is None and values["hflip"] is False
    (tmp_path / "run.yaml").write_text(printed)
    again = yaml.safe_load(
        invoke("train", "--config", tmp_path / "run.yaml", "--batch-size", "7", "--print-config")
    )
    assert again == {**values, "batch_size": 7}  # the command line overrides the file


def test_a_bad_config_file_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("max_epoch: 3\n")
    output = invoke("train", "--config", tmp_path / "bad.yaml", code=2)
    assert output.startswith(f"error: {tmp_path / 'bad.yaml'}: unknown training options ['max_epoch']")


def test_resume_refuses_an_option_that_would_change_the_training(tmp_path):
    output = invoke("train", "--resume", tmp_path, "--lr", "0.1", code=2)
    assert output.count("\n") == 1 and output.startswith("error: --lr cannot change on --resume")
    assert all(f"--{n.replace('_', '-')}" in output for n in ("max_epochs", "devices", "checkpoint_steps"))
    assert "--workers" in output and len(RESUMABLE) == 9


def test_resume_forwards_the_options_it_allows(tiny_run):
    values = yaml.safe_load(invoke("train", "--resume", tiny_run, "--devices", "2", "--max-epochs", "4",
                                   "--workers", "1", "--print-config"))  # fmt: skip
    assert (values["devices"], values["max_epochs"], values["num_workers"]) == ("2", 4, 1)
    assert values["out"] == str(tiny_run)


def test_the_python_api_refuses_the_same_options_on_resume(tiny_run):
    with pytest.raises(ConfigError, match="option 'head' cannot change when resuming a run"):
        train(resume=tiny_run, head="csra")


def test_config_json_holds_resolved_values(tiny_run):
    saved = json.loads((tiny_run / "config.json").read_text())
    assert saved["data"] == "demo" and saved["out"] == str(tiny_run)
    for name in ("image_size", "augment", "hflip", "precision", "num_workers"):
        assert saved[name] is not None, name
    assert list(saved) == list(OPTIONS)
