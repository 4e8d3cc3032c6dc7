"""Tests of mlic.training.trackers: a run logged to TensorBoard and MLflow, read back through their own APIs,
and resumed into the same trackers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY
from mlic.artifact import load_artifact
from mlic.training import train
from mlic.training.config import TrainConfig
from mlic.training.trackers import (
    MLFLOW_RUN_FILE,
    MLFLOW_STORE,
    TENSORBOARD_DIR,
    asked,
    flat_config,
    make_trackers,
    numbers,
)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """A tiny run (one epoch) logged to TensorBoard and MLflow besides its CSV."""
    run = tmp_path_factory.mktemp("tracked") / "run"
    train(out=str(run), logger=["tensorboard", "mlflow"], **TINY)
    return run


def events(run: Path):
    """The run's TensorBoard events, every one of them (``size_guidance`` 0: keep all)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "logs" / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    return accumulator.Reload()


def mlflow_run(run: Path):
    """The MLflow client of the run's own store, and the run that ``mlflow-run.json`` names."""
    from mlflow.tracking import MlflowClient

    saved = json.loads((run / "logs" / MLFLOW_RUN_FILE).read_text())
    assert saved["tracking_uri"] is None  # the run's own store, found from the run directory
    client = MlflowClient(f"sqlite:///{run / 'logs' / MLFLOW_STORE}")
    return client, client.get_run(saved["run_id"])


def test_tensorboard_events_hold_the_config_the_epochs_and_the_final_figures(tracked_run):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = events(tracked_run)
    validation = load_artifact(tracked_run / "artifact").training["validation"]
    assert {"train/loss", "train/loss_epoch", "val/loss", "val/mAP", "final/validation/mAP",
            "final/thresholds/mean"} <= set(acc.Tags()["scalars"])  # fmt: skip
    assert len(acc.Scalars("val/mAP")) == len(acc.Scalars("train/loss_epoch")) == TINY["max_epochs"]
    assert acc.Scalars("final/validation/mAP")[-1].value == pytest.approx(validation["mAP"])
    assert acc.Scalars("hp_metric")[-1].value == pytest.approx(validation["mAP"])
    start = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(3e-3)
    assert hparams["backbone"].string_value == "mlic_cnn"
    assert hparams["logger"].string_value == "tensorboard,mlflow"


def test_the_mlflow_run_holds_the_config_a_metric_history_and_the_final_figures(tracked_run):
    client, run = mlflow_run(tracked_run)
    artifact = load_artifact(tracked_run / "artifact")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["lr"] == "0.003" and params["demo_train"] == str(TINY["demo_train"])
    assert params["logger"] == "tensorboard,mlflow" and params["max_epochs"] == "1"
    history = client.get_metric_history(run.info.run_id, "val/mAP")
    assert len(history) == TINY["max_epochs"] and 0 <= history[0].value <= 1
    assert run.data.metrics["final/validation/mAP"] == pytest.approx(artifact.training["validation"]["mAP"])
    assert run.data.tags["mlic.decision"] == artifact.decision.policy
    assert run.data.tags["mlic.artifact"] == str(artifact.path.resolve())


def test_a_resumed_run_goes_on_in_the_same_trackers(tracked_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tracked_run, moved)  # the run's own MLflow store moves with it
    before = mlflow_run(moved)[1].info.run_id
    train(resume=moved, max_epochs=2)
    client, run = mlflow_run(moved)
    assert run.info.run_id == before and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(before, "val/mAP")]
    assert len(steps) == 2 and steps[0] < steps[1]
    assert run.data.params["max_epochs"] == "1" and run.data.tags["resumed.max_epochs"] == "2"
    assert [e.step for e in events(moved).Scalars("val/mAP")] == steps  # the second epoch appended


def test_trackers_get_flat_scalars_and_csv_is_no_extra_tracker():
    config = {"head_options": {"num_groups": 10}, "logger": ["csv", "mlflow"], "weights": None, "lr": 0.1}
    assert flat_config(config) == {"head_options.num_groups": 10, "logger": "csv,mlflow", "weights": "None",
                                   "lr": 0.1}  # fmt: skip
    assert numbers({"a": {"b": 1, "c": "text", "d": True, "e": None}, "f": 0.5}, "final") == {
        "final/a/b": 1.0, "final/f": 0.5,
    }  # fmt: skip
    assert asked(["csv", "mlflow", "tensorboard", "mlflow"]) == ["mlflow", "tensorboard"]


def test_only_the_first_process_makes_trackers(tmp_path, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)  # another process of a distributed run
    assert make_trackers(TrainConfig(logger=["tensorboard", "mlflow"]), tmp_path, resumed=False) == []
    assert not (tmp_path / "logs").exists()
