"""Tests of mlic.cli.train: options generated from the declarations, --config, --print-config, --resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import TINY, coco, coco_data, image, invoke
from mlic.cli import app
from mlic.cli.train import flag
from mlic.errors import ConfigError
from mlic.training import train
from mlic.training.config import OPTIONS, RESUMABLE

runner = CliRunner()


def test_every_declared_option_is_a_flag_under_its_group():
    text = invoke("train", "--help")
    for group in ("Data", "Model", "Loss", "Optimisation", "Runtime", "Run"):
        assert group in text
    for name in OPTIONS:
        assert flag(name) in text, name
    assert flag("val_data") == "--val" and flag("num_workers") == "--workers" and "--config" in text


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


def test_logger_is_repeatable_and_read_from_a_config_file(tmp_path):
    assert yaml.safe_load(invoke("train", "--print-config"))["logger"] == ["csv"]
    printed = invoke("train", "--logger", "tensorboard", "--logger", "mlflow", "--print-config")
    assert yaml.safe_load(printed)["logger"] == ["tensorboard", "mlflow"]
    (tmp_path / "run.yaml").write_text("logger: [csv, mlflow]\nmlflow_uri: sqlite:///elsewhere.db\n")
    values = yaml.safe_load(invoke("train", "--config", tmp_path / "run.yaml", "--print-config"))
    assert values["logger"] == ["csv", "mlflow"] and values["mlflow_uri"] == "sqlite:///elsewhere.db"
    output = invoke("train", "--logger", "wandb", "--print-config", code=2)
    assert output == "error: logger must be among ['csv', 'tensorboard', 'mlflow'], got 'wandb'\n"


def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    output = invoke("train", "--logger", "tensorboard", "--out", tmp_path / "run", *TINY_ARGS, code=2)
    extra = "'track' extra (tensorboard not installed): pip install 'mlic[track]'"
    assert output == f"error: --logger tensorboard needs the {extra}\n"
    assert not (tmp_path / "run").exists()  # refused before anything was read or written


TINY_ARGS = [
    "--demo-train", str(TINY["demo_train"]), "--demo-val", str(TINY["demo_val"]),
    "--max-epochs", "1", "--batch-size", "64", "--image-size", "32", "--no-progress",
]  # fmt: skip


def artifact_of(stdout: str) -> Path:
    """The artifact path that ``mlic train`` prints on its last line."""
    return Path(stdout.strip().splitlines()[-1])


def test_loss_flags_train_and_show_in_evaluate(tmp_path):
    args = [*TINY_ARGS, "--demo-train", "128", "--demo-val", "32"]
    artifact = artifact_of(
        invoke("train", "--out", tmp_path / "run", "--loss", "asl", "--loss-option", "gamma_neg=2",
               "--pos-weight", "auto", "--label-smoothing", "0.1", "--hide-positives", "0.3",
               "--hidden-as", "negative", *args)
    )  # fmt: skip
    meta = json.loads((artifact / "mlic.json").read_text())["training"]["loss"]
    assert meta["name"] == "asl" and meta["gamma_neg"] == 2 and meta["pos_weight"] == "auto"
    shown = invoke("evaluate", artifact, "demo")
    assert "loss name=asl" in shown and "trained with 30% of its positives hidden as negative" in shown
    bad = runner.invoke(app, ["train", "--hidden-as", "zero", "--no-progress", "--out", str(tmp_path / "z")])
    assert bad.exit_code == 2 and "'unknown', 'negative'" in bad.stderr
    bad = runner.invoke(
        app, ["train", "--pos-weight", "heavy", "--no-progress", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "--pos-weight takes a number or 'auto'" in bad.stderr
    bad = runner.invoke(
        app, ["train", "--loss-option", "gamma", "--no-progress", "--out", str(tmp_path / "y")]
    )
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.stderr


def test_head_flags_train_a_csra_model_that_predicts(tmp_path, digit_files):
    args = [*TINY_ARGS, "--demo-train", "128", "--demo-val", "32"]
    artifact = artifact_of(
        invoke("train", "--out", tmp_path / "run", "--head", "csra", "--head-option", "temperatures=[1, 4]",
               "--head-option", "lam=0.2", *args)
    )  # fmt: skip
    model = json.loads((artifact / "mlic.json").read_text())["model"]
    assert model["head"] == "csra" and model["head_kwargs"] == {"temperatures": [1, 4], "lam": 0.2}
    records = [
        json.loads(line) for line in invoke("predict", artifact, *digit_files["paths"][:3]).splitlines()
    ]
    assert len(records) == 3 and set(records[0]["attributes"]) == {"count", "largest"}


TRAIN_ARGS = [
    "--max-epochs", "1", "--batch-size", "8", "--image-size", "32", "--workers", "0", "--no-progress",
]  # fmt: skip


# -- COCO -------------------------------------------------------------------------
# -- the command line ---------------------------------------------------------------------
def test_cli_trains_on_folders(tmp_path):
    root = tmp_path / "data"
    for i in range(10):
        image(root / ("cat" if i % 2 else "dog") / f"{i}.png", seed=i)
    image(root / "cat" / "0.png", seed=0)  # 0.png: cat and dog
    out = invoke("train", "--data", root, "--out", tmp_path / "run", *TRAIN_ARGS)
    meta = json.loads((Path(out.strip().splitlines()[-1]) / "mlic.json").read_text())
    assert meta["schema"]["labels"] == ["cat", "dog"]


def test_cli_trains_and_evaluates_on_coco_and_format_forces(tmp_path):
    data = coco_data(12)
    data["annotations"] += [
        {"id": 10 + i, "image_id": 10 + i, "category_id": 1 + 2 * (i % 2)} for i in range(2, 10)
    ]
    f = coco(tmp_path / "annotations" / "instances_train.json", data, images=tmp_path / "train")
    args = ["--drop-unannotated", "--out", tmp_path / "run", *TRAIN_ARGS]
    artifact = Path(invoke("train", "--data", f, *args).strip().splitlines()[-1])
    meta = json.loads((artifact / "mlic.json").read_text())
    assert meta["schema"]["labels"] == ["cat", "dog", "zebra"]
    figures = json.loads(invoke("evaluate", artifact, f, "--drop-unannotated", "--json", "--workers", "0"))
    assert figures["n_samples"] == 10
    assert json.loads(invoke("evaluate", artifact, f, "--json"))["n_samples"] == 12
    bad = runner.invoke(app, ["evaluate", str(artifact), str(tmp_path / "train"), "--format", "voc"])
    assert bad.exit_code == 2 and "not a VOC root" in bad.stderr
