"""Tests of mlic.training.metrics_log: the per-epoch CSV, rewritten whole, no hyperparameter YAML, and the
per-epoch history of a run's logs."""

from __future__ import annotations

import os

import torch

from mlic.training.metrics_log import MetricsLog, epoch_history


def test_metrics_log_rewrites_the_whole_file_with_new_columns(tmp_path):
    log = MetricsLog(tmp_path / "logs")
    log.log_metrics({"train/loss": torch.tensor(1.5), "epoch": 0}, step=9)
    log.save()
    log.log_metrics({"val/mAP": 0.5, "epoch": 0}, step=9)
    log.finalize("success")
    lines = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,step,train/loss,val/mAP", "0,9,1.5,", "0,9,,0.5"]
    assert os.listdir(tmp_path / "logs") == ["metrics.csv"]


def test_training_writes_no_hyperparameter_yaml(tiny_run):
    assert sorted(p.name for p in (tiny_run / "logs").iterdir()) == ["metrics.csv"]


def write_log(directory, rows: list[dict]) -> None:
    log = MetricsLog(directory)
    for row in rows:
        log.log_metrics(dict(row), step=row.pop("step", 0))
    log.finalize("success")


def test_epoch_history_takes_a_resumes_figures_for_the_epochs_it_repeats(tmp_path):
    logs = tmp_path / "logs"
    write_log(logs, [  # an older log without train/loss_epoch, killed within epoch 1
        {"epoch": 0, "train/loss": 2.0}, {"epoch": 0, "train/loss": 4.0}, {"epoch": 0, "val/mAP": 0.5},
        {"epoch": 1, "train/loss": 1.0},
    ])  # fmt: skip
    write_log(logs / "resume-1", [
        {"epoch": 1, "train/loss": 1.5}, {"epoch": 1, "val/mAP": 0.7, "val/loss": 0.9},
        {"epoch": 1, "train/loss_epoch": 1.2},
    ])  # fmt: skip
    assert epoch_history(logs) == [
        {"epoch": 0, "train/loss": 3.0, "val/mAP": 0.5},  # the mean of the logged steps
        {"epoch": 1, "train/loss": 1.2, "val/mAP": 0.7, "val/loss": 0.9},  # the epoch's own mean
    ]
    assert epoch_history(tmp_path / "nothing") == []
